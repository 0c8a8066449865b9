"""The metering wrapper of the shim's verifier: it counts refused signatures and changes nothing.

The server's own work reaches the metrics through the service layer's Observer port
(`TicketingMetrics` implements it): what was committed, calls to the payment service, what
reconciliation found.
"""

from __future__ import annotations

from collections.abc import Mapping

from ticketing_service.entrypoints.observability.metrics import TicketingMetrics
from ticketing_service.entrypoints.webhook.signatures import (
    CallbackVerifier,
    SignatureRejected,
    Verified,
)


class MeteredVerifier:
    """A CallbackVerifier that counts each refused signature by its reason."""

    def __init__(self, inner: CallbackVerifier, metrics: TicketingMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def verify(self, body: bytes, headers: Mapping[str, str]) -> Verified:
        """Delegated; a SignatureRejected is counted, then raised on."""
        try:
            return self._inner.verify(body, headers)
        except SignatureRejected as rejected:
            self._metrics.webhook_verification_failures.labels(rejected.reason).inc()
            raise
