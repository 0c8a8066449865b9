"""Every error the service reports, each named for its condition and carrying its reason.

The reason is the string clients read from the `google.rpc.ErrorInfo` detail. Only the
entrypoints choose a transport status for a reason; the domain does not know about gRPC or HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid field: its path in the request (e.g. `tiers[2].price_amount`) and why."""

    field: str
    description: str


class TicketingError(Exception):
    """Base of all errors the service reports to its callers."""

    reason: str = ""

    def __init__(self, message: str, **metadata: str) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: Mapping[str, str] = metadata


class InvalidArgument(TicketingError):
    """The request is malformed; `violations` lists every bad field."""

    reason = "INVALID_ARGUMENT"
    # The message names this many fields at most; the rest are counted. A request with hundreds
    # of bad fields still gets a short message (it travels in a header).
    NAMED_IN_MESSAGE = 3

    def __init__(self, violations: Sequence[FieldViolation]) -> None:
        named = ", ".join(v.field for v in violations[: self.NAMED_IN_MESSAGE])
        if (more := len(violations) - self.NAMED_IN_MESSAGE) > 0:
            named += f" and {more} more"
        super().__init__(f"The request has invalid fields ({named}); correct them and retry.")
        self.violations = tuple(violations)


class EventNotFound(TicketingError):
    """The event has no ticketing settings."""

    reason = "EVENT_NOT_FOUND"


class TierNotFound(TicketingError):
    """The event has no such tier."""

    reason = "TIER_NOT_FOUND"


class ReservationNotFound(TicketingError):
    """No reservation has this id."""

    reason = "RESERVATION_NOT_FOUND"


class PaidTicketingNotEnabled(TicketingError):
    """The event does not take payments through this service."""

    reason = "PAID_TICKETING_NOT_ENABLED"


class PaidTicketingCurrencyMissing(TicketingError):
    """The event has paid tiers but no currency to charge in."""

    reason = "PAID_TICKETING_CURRENCY_MISSING"


class TierNotOnSale(TicketingError):
    """The tier is outside its sale window, or was removed and is only retained."""

    reason = "TIER_NOT_ON_SALE"


class SoldOut(TicketingError):
    """Every seat of the tier is taken or held."""

    reason = "SOLD_OUT"


class AlreadyRegistered(TicketingError):
    """The user already has a seat at this event."""

    reason = "ALREADY_REGISTERED"


class ReservationPending(TicketingError):
    """The user holds a seat in another tier of the event."""

    reason = "RESERVATION_PENDING"


class ReservationNotCancellable(TicketingError):
    """Only a reservation pending payment can be cancelled."""

    reason = "RESERVATION_NOT_CANCELLABLE"


class PaymentMismatch(TicketingError):
    """The payment does not match the reservation it claims to pay for."""

    reason = "PAYMENT_MISMATCH"


class CheckoutRejected(TicketingError):
    """The payment service refused the checkout or answered nonsense."""

    reason = "CHECKOUT_REJECTED"


class NotReservationOwner(TicketingError):
    """The reservation belongs to another user."""

    reason = "NOT_RESERVATION_OWNER"


class PaymentServiceUnavailable(TicketingError):
    """The payment service timed out, was unreachable or failed."""

    reason = "PAYMENT_SERVICE_UNAVAILABLE"


class ConcurrentUpdate(TicketingError):
    """A concurrent change held a lock too long or conflicted."""

    reason = "CONCURRENT_UPDATE"


class Unauthenticated(TicketingError):
    """The bearer token is missing or wrong."""

    reason = "UNAUTHENTICATED"


class DatabaseUnavailable(TicketingError):
    """The database cannot be reached."""

    reason = "DATABASE_UNAVAILABLE"


class EventsPruned(TicketingError):
    """Events after the requested sequence were pruned; the consumer must resynchronize."""

    reason = "EVENTS_PRUNED"


class SequenceAheadOfFeed(TicketingError):
    """The requested sequence was never numbered here: the cursor comes from another feed."""

    reason = "SEQUENCE_AHEAD_OF_FEED"


class TooManyWatchers(TicketingError):
    """The process already streams the feed to as many watchers as it takes."""

    reason = "TOO_MANY_WATCHERS"


class ServerStopping(TicketingError):
    """The server process is stopping: a watch ends, to be resumed elsewhere or after it, and a
    call whose request had not arrived is refused, to be sent again."""

    reason = "SERVER_STOPPING"


class ServerBusy(TicketingError):
    """The server process is running as many calls as it takes; nothing of the call ran."""

    reason = "SERVER_BUSY"


class RefundExceedsPaid(TicketingError):
    """The refund asked for is more than is left to refund of the payment."""

    reason = "REFUND_EXCEEDS_PAID"


class EventCancelled(TicketingError):
    """The organizer cancelled the event: nothing more is sold."""

    reason = "EVENT_CANCELLED"


class RegistrationNotCancellable(TicketingError):
    """Only a confirmed registration can be given up, and only a paid reservation refunded."""

    reason = "REGISTRATION_NOT_CANCELLABLE"


class RefundNotFound(TicketingError):
    """No refund has this id."""

    reason = "REFUND_NOT_FOUND"


class EventNotCancelled(TicketingError):
    """The event was not cancelled."""

    reason = "EVENT_NOT_CANCELLED"


def all_error_types() -> list[type[TicketingError]]:
    """Every concrete error, for the entrypoints' status tables and their completeness test."""
    return list(TicketingError.__subclasses__())
