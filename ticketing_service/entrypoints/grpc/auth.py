"""The optional bearer token on every TicketingService call (health and reflection stay open).

It is checked from the call's metadata, which comes with its headers, before its request is
waited for (arrival.py): a call without the token is refused at once, holding nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence

import grpc

from ticketing_service.domain.errors import Unauthenticated
from ticketing_service.entrypoints.grpc.decoding import Unread

PROTECTED_SERVICE_PREFIX = "/moim.ticketing.v1.TicketingService/"

_NEEDED = "The call needs `authorization: Bearer <token>` metadata with the service's token."
# In place of the request of a call refused for its token: never read, refused UNAUTHENTICATED.
UNAUTHENTICATED = Unread(
    grpc.StatusCode.UNAUTHENTICATED, _NEEDED, Unauthenticated(_NEEDED), caller_noise=True
)


class BearerToken:
    """Which calls need `authorization: Bearer <token>` of a known token, and who carries one.

    Several tokens are accepted while one is being rotated (TICKETING_GRPC_TOKEN=new,old).
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        if not tokens or not all(tokens):
            raise ValueError("BearerToken needs at least one non-empty token.")
        self._tokens = tuple(token.encode() for token in tokens)

    @staticmethod
    def guards(method: str) -> bool:
        """Whether `method`'s calls need the token (TicketingService's, not health's nor
        reflection's)."""
        return method.startswith(PROTECTED_SERVICE_PREFIX)

    def carried_by(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
        """Whether a call's first `authorization` metadata is `Bearer` (in any case, as RFC 7235
        has schemes), one space and a known token."""
        for key, value in metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
                scheme, _, token = given.partition(b" ")
                return scheme.lower() == b"bearer" and _matches_any(token, self._tokens)
        return False


def _matches_any(given: bytes, expected: Sequence[bytes]) -> bool:
    # Every token is compared, each in constant time, with no early exit: how long a refusal
    # takes tells nothing about which token, or which prefix of one, came close.
    matched = False
    for token in expected:
        matched |= hmac.compare_digest(given, token)
    return matched
