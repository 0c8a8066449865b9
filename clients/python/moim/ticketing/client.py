"""A small typed asyncio client of moim.ticketing.v1.TicketingService (hand-written, not generated).

Every call carries the bearer token (when one is given) and a deadline, a unary call is retried
as `RetryPolicy` says, and every failure is a `TicketingError` holding the canonical code and the
rich error details the service sends.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

__all__ = [
    "NO_RETRY",
    "FieldViolation",
    "RetryPolicy",
    "TicketingClient",
    "TicketingError",
    "keepalive_options",
    "reconnect_options",
]

DEFAULT_TIMEOUT_SECONDS = 10.0
# While calls are open a channel pings the server this often, and ends the connection (its
# calls UNAVAILABLE) when a ping goes as long unanswered. The server takes one per 10 s at most.
DEFAULT_KEEPALIVE_SECONDS = 15.0
# The longest a channel waits between attempts to reconnect to a server that is away. gRPC's own
# ceiling, 120 s, kept a client failing at once for a minute after its server came back; one
# refused connection attempt per client every few seconds costs a server that is down nothing.
DEFAULT_MAX_RECONNECT_BACKOFF_SECONDS = 2.0
# The least time a retry must have left after its back-off: one started in the deadline's last
# moments could only end in DEADLINE_EXCEEDED, which would hide the error worth reporting.
_LAST_ATTEMPT_ROOM_SECONDS = 0.02
# The codes a retry may fix whatever their reason (see _retryable).
_RETRIED_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED}
)

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid request field (`google.rpc.BadRequest.FieldViolation`)."""

    field: str
    description: str


@dataclass(frozen=True, slots=True)
class _RichDetails:
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: tuple[FieldViolation, ...] = ()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a unary call is retried when a retry may fix it, all inside the call's one deadline.

    Retried: UNAVAILABLE (the server or the path to it was briefly away, or it refused the
    call's stream), ABORTED (a lock conflicted), CANCELLED by the server (flooded, or stopping)
    and RESOURCE_EXHAUSTED with reason SERVER_BUSY (the server ran as many calls as it takes;
    nothing of the call ran). Every unary RPC of the
    service is safe to retry; the feed stream never is (resume after the last sequence applied).
    The wait before retry n is random up to `initial_backoff_seconds` * 2**(n-1), capped at
    `max_backoff_seconds` ("full jitter", as the TypeScript client and gRPC's own retries do).
    """

    max_attempts: int = 4
    """Attempts in all, the first included; 1 means no retry."""
    initial_backoff_seconds: float = 0.1
    max_backoff_seconds: float = 2.0

    def __post_init__(self) -> None:
        attempts = self.max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(
                f"A retry policy's max_attempts must be a whole number at least 1 "
                f"(1: no retry), not {attempts!r}."
            )
        initial, ceiling = self.initial_backoff_seconds, self.max_backoff_seconds
        if not (math.isfinite(initial) and math.isfinite(ceiling) and 0 <= initial <= ceiling):
            raise ValueError(
                "A retry policy's initial_backoff_seconds and max_backoff_seconds must be finite, "
                f"with 0 <= initial <= max; got {initial!r} and {ceiling!r}."
            )

    def backoff_seconds(self, retry: int) -> float:
        """A random wait before retry number `retry` (1 for the first), so that clients that
        failed together do not come back together."""
        ceiling = min(self.max_backoff_seconds, self.initial_backoff_seconds * 2 ** (retry - 1))
        return random.uniform(0, ceiling)  # noqa: S311 - a jitter, not a secret


NO_RETRY = RetryPolicy(max_attempts=1)


class TicketingError(Exception):
    """A failed call: its gRPC `code`, the ErrorInfo `reason` and `metadata`, and bad fields.

    `reason` is empty when the failure never reached the service (connection refused, deadline
    exceeded in transit): act on `code` then. A unary call has already been retried as the
    client's `RetryPolicy` allows when this is raised; DEADLINE_EXCEEDED is not retried (the
    call's one deadline is spent).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: dict[str, str] | None = None,
        field_violations: tuple[FieldViolation, ...] = (),
    ) -> None:
        label = f"{code.name} {reason}" if reason else code.name
        super().__init__(f"The ticketing call failed with {label}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations = field_violations

    @classmethod
    def from_rpc_error(cls, error: grpc.aio.AioRpcError) -> TicketingError:
        """Read the code, message and rich details (ErrorInfo, BadRequest) of a failed call."""
        details = _rich_details(error)
        return cls(
            error.code(),
            error.details() or "",
            reason=details.reason,
            domain=details.domain,
            metadata=details.metadata,
            field_violations=details.field_violations,
        )


def _rich_details(error: grpc.aio.AioRpcError) -> _RichDetails:
    """The ErrorInfo and BadRequest the service attached; empty when there are none."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # a status detail that contradicts the call's code: trust the code
        return _RichDetails()
    if status is None:
        return _RichDetails()
    info = error_details_pb2.ErrorInfo()
    bad_request = error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(bad_request.DESCRIPTOR):
            detail.Unpack(bad_request)
    violations = tuple(
        FieldViolation(str(v.field), str(v.description)) for v in bad_request.field_violations
    )
    metadata = {str(key): str(value) for key, value in info.metadata.items()}
    return _RichDetails(str(info.reason), str(info.domain), metadata, violations)


def keepalive_options(seconds: float = DEFAULT_KEEPALIVE_SECONDS) -> list[tuple[str, int]]:
    """Channel options: while calls are open, ping the server every `seconds`, and end the
    connection (its calls UNAVAILABLE) when a ping goes as long unanswered."""
    ms = round(seconds * 1000)
    return [
        ("grpc.keepalive_time_ms", ms),
        ("grpc.keepalive_timeout_ms", ms),
        # What gRPC's transport enforces in place of the keepalive timeout (60 s by default).
        ("grpc.http2.ping_timeout_ms", ms),
    ]


def reconnect_options(
    max_seconds: float = DEFAULT_MAX_RECONNECT_BACKOFF_SECONDS,
) -> list[tuple[str, int]]:
    """Channel options: after a failed connection attempt wait at most `max_seconds` before
    the next (gRPC's back-off starts at 1 s and grows 1.6 times per attempt, with 20% jitter),
    so that the channel reconnects within about that long of its server's return."""
    if not (math.isfinite(max_seconds) and max_seconds > 0):
        raise ValueError(f"max_seconds must be a positive number of seconds, not {max_seconds!r}.")
    ms = round(max_seconds * 1000)
    return [
        ("grpc.initial_reconnect_backoff_ms", min(1000, ms)),
        ("grpc.max_reconnect_backoff_ms", ms),
    ]


def _retryable(error: TicketingError) -> bool:
    """Whether a retry may fix `error`. Other RESOURCE_EXHAUSTED answers, such as a message over
    the size limit, would only fail again. CANCELLED here is the server's or its transport's
    (this client's own cancellation raises asyncio.CancelledError): a server flooded with
    streams cancelled calls it had not run, and a stopping one those still running."""
    if error.code in _RETRIED_CODES:
        return True
    return error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.reason == "SERVER_BUSY"


def _sent_token(token: str | None) -> str:
    """The token a call sends: of a comma-separated list (the server's TICKETING_GRPC_TOKEN during
    a rotation, newest first) the first that is not blank, stripped; "" sends none.

    Anything but visible ASCII is refused, as the server refuses it at start: gRPC would fail
    every call that sent it ("Invalid metadata"). The message shows none of the token.
    """
    sent = next((t.strip() for t in (token or "").split(",") if t.strip()), "")
    bad = next((i for i, c in enumerate(sent, start=1) if not "!" <= c <= "~"), None)
    if bad is not None:
        raise ValueError(
            "The ticketing client token may hold only visible ASCII characters, no spaces (it is "
            f"sent in a request header); the token has another at position {bad}."
        )
    return sent


class TicketingClient:
    """TicketingService over one grpc.aio channel; use `async with` or call `aclose()`.

    Every unary call gets the client's `timeout` as one deadline over all its attempts (each
    attempt's gRPC deadline, which the server sees too, is the time left), and is retried as
    `retry` says (`NO_RETRY`: never). For another deadline or policy, wrap the same channel:
    `TicketingClient(client.channel, ...)`.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        if not timeout > 0:
            raise ValueError("The ticketing client timeout must be a positive number of seconds.")
        self._channel = channel
        self._stub = pb_grpc.TicketingServiceStub(channel)
        sent = _sent_token(token)
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {sent}"),) if sent else ()
        )
        self._timeout = timeout
        self._retry = retry

    @classmethod
    def connect(
        cls,
        target: str,
        *,
        token: str | None = None,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS,
        retry: RetryPolicy = RetryPolicy(),
    ) -> TicketingClient:
        """Open a channel to `target`: TLS trusting `root_certificates` (PEM; the system's roots
        when only a client certificate is given), presenting the client certificate
        `certificate_chain` with its `private_key` (PEM, both or neither) for mutual TLS, as the
        deployed server asks; plaintext when none of them is given.

        The channel connects lazily, so this never blocks; call it inside the event loop that
        will use the client. Without TLS the token crosses the network in clear: loopback only.
        It pings as `keepalive_options` says, so that a quiet feed stream to a server whose
        machine is gone ends instead of waiting forever, and reconnects as `reconnect_options`
        says, within about 2 s of its server's return.
        """
        _sent_token(token)  # a token it refuses, refused before a channel is opened
        if (certificate_chain is None) != (private_key is None):
            raise ValueError(
                "Give both certificate_chain and private_key for mutual TLS, or neither."
            )
        options = keepalive_options(keepalive_seconds) + reconnect_options()
        if root_certificates is None and certificate_chain is None:
            channel = grpc.aio.insecure_channel(target, options=options)
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=root_certificates,
                private_key=private_key,
                certificate_chain=certificate_chain,
            )
            channel = grpc.aio.secure_channel(target, credentials, options=options)
        return cls(channel, token=token, timeout=timeout, retry=retry)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The underlying channel, e.g. for the standard health service."""
        return self._channel

    async def aclose(self) -> None:
        """Close the channel; calls still in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> TicketingClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def update_ticketing_settings(
        self, request: pb.UpdateTicketingSettingsRequest
    ) -> pb.UpdateTicketingSettingsResponse:
        """UpdateTicketingSettings: store an event's tiers and derive its mode."""
        return await self._unary(self._stub.UpdateTicketingSettings, request)

    async def get_ticketing_settings(
        self, request: pb.GetTicketingSettingsRequest
    ) -> pb.GetTicketingSettingsResponse:
        """GetTicketingSettings: read an event's settings."""
        return await self._unary(self._stub.GetTicketingSettings, request)

    async def start_paid_registration(
        self, request: pb.StartPaidRegistrationRequest
    ) -> pb.StartPaidRegistrationResponse:
        """StartPaidRegistration: hold a seat and open its checkout (safe to retry)."""
        return await self._unary(self._stub.StartPaidRegistration, request)

    async def get_reservation(self, request: pb.GetReservationRequest) -> pb.GetReservationResponse:
        """GetReservation: read a reservation."""
        return await self._unary(self._stub.GetReservation, request)

    async def find_reservation(
        self, request: pb.FindReservationRequest
    ) -> pb.FindReservationResponse:
        """FindReservation: a user's latest reservation for an event."""
        return await self._unary(self._stub.FindReservation, request)

    async def cancel_reservation(
        self, request: pb.CancelReservationRequest
    ) -> pb.CancelReservationResponse:
        """CancelReservation: release a hold that is pending payment."""
        return await self._unary(self._stub.CancelReservation, request)

    async def confirm_payment(self, request: pb.ConfirmPaymentRequest) -> pb.ConfirmPaymentResponse:
        """ConfirmPayment: record a payment and give its user a seat (safe to retry)."""
        return await self._unary(self._stub.ConfirmPayment, request)

    async def reconcile_reservation(
        self, request: pb.ReconcileReservationRequest
    ) -> pb.ReconcileReservationResponse:
        """ReconcileReservation: ask the payment service about a reservation's checkout now."""
        return await self._unary(self._stub.ReconcileReservation, request)

    async def cancel_registration(
        self, request: pb.CancelRegistrationRequest
    ) -> pb.CancelRegistrationResponse:
        """CancelRegistration: the owner gives up a confirmed seat, refunded by the policy."""
        return await self._unary(self._stub.CancelRegistration, request)

    async def refund_reservation(
        self, request: pb.RefundReservationRequest
    ) -> pb.RefundReservationResponse:
        """RefundReservation: refund all or part of a payment (safe to retry by request id)."""
        return await self._unary(self._stub.RefundReservation, request)

    async def refresh_refund(self, request: pb.RefreshRefundRequest) -> pb.RefreshRefundResponse:
        """RefreshRefund: ask the payment service where a refund stands now."""
        return await self._unary(self._stub.RefreshRefund, request)

    async def cancel_event(self, request: pb.CancelEventRequest) -> pb.CancelEventResponse:
        """CancelEvent: stop sales now; holds and registrations are cancelled and refunded."""
        return await self._unary(self._stub.CancelEvent, request)

    async def get_event_cancellation(
        self, request: pb.GetEventCancellationRequest
    ) -> pb.GetEventCancellationResponse:
        """GetEventCancellation: how far an event's cancellation is."""
        return await self._unary(self._stub.GetEventCancellation, request)

    async def list_registration_events(
        self, request: pb.ListRegistrationEventsRequest
    ) -> pb.ListRegistrationEventsResponse:
        """ListRegistrationEvents: read a page of the event feed."""
        return await self._unary(self._stub.ListRegistrationEvents, request)

    async def watch_registration_events(
        self, request: pb.WatchRegistrationEventsRequest
    ) -> AsyncIterator[pb.WatchRegistrationEventsResponse]:
        """WatchRegistrationEvents: the feed as a stream, with no deadline (it is long-lived)."""
        call = self._stub.WatchRegistrationEvents(request, metadata=self._metadata)
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as error:
            raise TicketingError.from_rpc_error(error) from error
        finally:
            call.cancel()

    async def _unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Request, _Response],
        request: _Request,
    ) -> _Response:
        """Call `method`, retried while the policy allows and a retry's back-off still ends well
        before the call's deadline; otherwise the last failure is raised."""
        deadline = time.monotonic() + self._timeout
        attempt = 1
        failure: TicketingError | None = None
        while True:
            left = deadline - time.monotonic()
            try:
                return await method(request, timeout=left, metadata=self._metadata)
            except grpc.aio.UsageError:
                if failure is None:
                    raise
                raise failure from None  # the client was closed during the back-off
            except grpc.aio.AioRpcError as error:
                failure = TicketingError.from_rpc_error(error)
                wait = self._retry.backoff_seconds(attempt)
                if not (
                    attempt < self._retry.max_attempts
                    and _retryable(failure)
                    and time.monotonic() + wait + _LAST_ATTEMPT_ROOM_SECONDS < deadline
                ):
                    raise failure from error
            await asyncio.sleep(wait)
            attempt += 1
