"""The Postgres tables, as SQLAlchemy Core metadata.

The migrations in `adapters/migrations` build the real schema; this metadata mirrors it for
queries, and a test compares the two so they cannot drift. Constraint names are deterministic
(naming convention) so migrations can refer to them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

NOW = text("now()")


def _tstz(name: str, *, nullable: bool = True) -> Column[object]:
    return Column(name, DateTime(timezone=True), nullable=nullable)


ticketing_settings = Table(
    "ticketing_settings",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("event_title", Text, nullable=False, server_default=""),
    Column("mode", Text, nullable=False),
    Column("provider", Text),
    Column("provider_account_id", Text),
    Column("currency_code", Text),
    Column("enabled", Boolean, nullable=False),
    Column("legacy", Boolean, nullable=False, server_default=text("false")),
    Column("external_url", Text),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=NOW),
    _tstz("event_start_time"),
    # [[min_hours_before_start, percent], ...]; NULL: Moim's published policy.
    Column("refund_policy", JSONB),
    # The organizer cancelled the event (CancelEvent): nothing is sold from `cancel_time` on, and
    # the cancellation worker cancels its holds and registrations until `cancel_done_time`.
    _tstz("cancel_time"),
    Column("cancel_request_id", Text),
    Column("cancel_done_count", Integer, nullable=False, server_default=text("0")),
    _tstz("cancel_done_time"),
    CheckConstraint("mode IN ('free', 'paid', 'external')", name="mode"),
    CheckConstraint("currency_code ~ '^[A-Z]{3}$'", name="currency_code"),
)

tiers = Table(
    "tiers",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("tier_id", Text, primary_key=True),
    Column("position", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("price_amount", BigInteger, nullable=False),
    Column("capacity", Integer),
    _tstz("sale_start_time"),
    _tstz("sale_end_time"),
    Column("retained", Boolean, nullable=False, server_default=text("false")),
    # Seats given to accepted registrations, changed in the same transaction as they are:
    # counting seats never scans the registrations of a tier.
    Column("accepted_count", Integer, nullable=False, server_default=text("0")),
    # Seats taken by attendees Moim accepted itself (free RSVPs, RSVPs from before paid
    # ticketing), as `import-moim` last counted them: set on each import, never added to.
    Column("external_seats", Integer, nullable=False, server_default=text("0")),
    # A tier the organizer removed is kept as a tombstone: reservations and registrations
    # still refer to it, so deleting the row could never be allowed to fail an edit.
    _tstz("delete_time"),
    ForeignKeyConstraint(["event_id"], ["ticketing_settings.event_id"], ondelete="CASCADE"),
    CheckConstraint("price_amount >= 0", name="price_amount_non_negative"),
    CheckConstraint("capacity IS NULL OR capacity > 0", name="capacity_positive"),
    CheckConstraint("accepted_count >= 0", name="accepted_count_non_negative"),
    CheckConstraint("external_seats >= 0", name="external_seats_non_negative"),
)

reservations = Table(
    "reservations",
    metadata,
    Column("reservation_id", UUID(as_uuid=True), primary_key=True),
    Column("event_id", Text, nullable=False),
    Column("tier_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("provider_account_id", Text),
    Column("answers", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("customer_name", Text),
    Column("customer_email", Text),
    Column("success_url", Text, nullable=False),
    Column("cancel_url", Text, nullable=False),
    Column("checkout_id", Text),
    Column("checkout_url", Text),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("expire_time", DateTime(timezone=True), nullable=False),
    _tstz("paid_time"),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=NOW),
    # The provider's id of the payment that settled it (confirmed or paid_unfulfilled).
    Column("payment_id", Text),
    # Reconciliation (see reconciliation_repository): when the payment service was last asked
    # about the checkout, whether the hold was kept a grace longer, when to ask again (NULL:
    # never), how often it was asked again, and until when a replica is asking now.
    _tstz("asked_time"),
    Column("hold_extended", Boolean, nullable=False, server_default=text("false")),
    _tstz("next_reconcile_time"),
    Column("reconcile_attempts", Integer, nullable=False, server_default=text("0")),
    _tstz("reconcile_lease_until"),
    # False until the expiry sweeper adds a confirmed reservation to its tier's accepted_count:
    # confirmations never write the tier row, and seat counts add the few not yet folded.
    Column("seat_folded", Boolean, nullable=False, server_default=text("false")),
    # What was refunded of its payments: the refunds that succeeded, in minor units.
    Column("refunded_amount", BigInteger, nullable=False, server_default=text("0")),
    ForeignKeyConstraint(["event_id", "tier_id"], ["tiers.event_id", "tiers.tier_id"]),
    CheckConstraint(
        "status IN ('pending_payment', 'confirmed', 'expired', 'cancelled', 'paid_unfulfilled',"
        " 'registration_cancelled')",
        name="status",
    ),
    CheckConstraint("amount >= 0", name="amount_non_negative"),
    CheckConstraint("currency_code ~ '^[A-Z]{3}$'", name="currency_code"),
    # One live reservation per user and event, whatever the race.
    Index(
        "uq_reservations_live_per_user_event",
        "event_id",
        "user_id",
        unique=True,
        postgresql_where=text("status = 'pending_payment'"),
    ),
    # Live holds of a tier, counted on every StartPaidRegistration; never more rows than seats.
    Index(
        "ix_reservations_live_holds",
        "event_id",
        "tier_id",
        "expire_time",
        postgresql_where=text("status = 'pending_payment'"),
    ),
    # Confirmed seats not yet folded into the tier's accepted_count (a sweep's worth at most).
    Index(
        "ix_reservations_unfolded_seats",
        "event_id",
        "tier_id",
        postgresql_where=text("status = 'confirmed' AND NOT seat_folded"),
    ),
    # An event's reservations by status: its cancellation's batches and progress.
    Index("ix_reservations_event_id_status", "event_id", "status"),
    # The expiry sweeper's scan.
    Index(
        "ix_reservations_pending_expiry",
        "expire_time",
        postgresql_where=text("status = 'pending_payment'"),
    ),
    # Reconciliation's scans: follow-ups due, and live holds not yet asked about.
    Index(
        "ix_reservations_reconcile_due",
        "next_reconcile_time",
        postgresql_where=text("next_reconcile_time IS NOT NULL"),
    ),
    Index(
        "ix_reservations_unasked_holds",
        "create_time",
        postgresql_where=text(
            "status = 'pending_payment' AND checkout_id IS NOT NULL AND asked_time IS NULL"
        ),
    ),
)

registrations = Table(
    "registrations",
    metadata,
    Column("registration_id", UUID(as_uuid=True), primary_key=True),
    Column("reservation_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("event_id", Text, nullable=False),
    Column("tier_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("answers", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=NOW),
    _tstz("cancel_time"),
    ForeignKeyConstraint(["reservation_id"], ["reservations.reservation_id"]),
    ForeignKeyConstraint(["event_id", "tier_id"], ["tiers.event_id", "tiers.tier_id"]),
    CheckConstraint("status IN ('accepted', 'cancelled')", name="status"),
    # One seat per user and event; a user who gave theirs up may register again.
    Index(
        "uq_registrations_accepted_per_user_event",
        "event_id",
        "user_id",
        unique=True,
        postgresql_where=text("status = 'accepted'"),
    ),
)
# The refund ledger: money owed back, written in the same transaction as the change that owes
# it; the refund worker sends it (`next_attempt_time`, `attempts`, a replica's `lease_until`).
refunds = Table(
    "refunds",
    metadata,
    Column("refund_id", UUID(as_uuid=True), primary_key=True),
    Column("reservation_id", UUID(as_uuid=True), nullable=False),
    # The provider's payment refunded, and its checkout.
    Column("payment_id", Text, nullable=False),
    Column("checkout_id", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    _tstz("next_attempt_time"),
    _tstz("lease_until"),
    Column("provider_refund_id", Text),
    Column("failure_code", Text),
    # RefundReservation's request id (and what it asked to release), so a repeat finds it.
    Column("request_id", Text),
    Column("release_seat", Boolean, nullable=False, server_default=text("false")),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=NOW),
    ForeignKeyConstraint(["reservation_id"], ["reservations.reservation_id"]),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("currency_code ~ '^[A-Z]{3}$'", name="currency_code"),
    CheckConstraint(
        "reason IN ('cancellation', 'organizer', 'goodwill', 'paid_unfulfilled', 'duplicate',"
        " 'mismatch', 'event_cancelled')",
        name="reason",
    ),
    CheckConstraint("status IN ('requested', 'pending', 'succeeded', 'failed')", name="status"),
    Index("ix_refunds_reservation_id", "reservation_id"),
    # Whether a payment is owed back already, before it is refunded as mismatched.
    Index("ix_refunds_payment_id", "payment_id"),
    # The refund worker's scan: refunds still to send or to follow.
    Index(
        "ix_refunds_due",
        "next_attempt_time",
        postgresql_where=text("status IN ('requested', 'pending')"),
    ),
    Index(
        "uq_refunds_request_per_reservation",
        "reservation_id",
        "request_id",
        unique=True,
        postgresql_where=text("request_id IS NOT NULL"),
    ),
)

payments = Table(
    "payments",
    metadata,
    Column("payment_row_id", UUID(as_uuid=True), primary_key=True),
    Column("reservation_id", UUID(as_uuid=True), nullable=False),
    Column("checkout_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("provider_payment_id", Text),
    Column("tx_id", Text),
    _tstz("paid_time"),
    Column("raw_event", LargeBinary),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=NOW),
    ForeignKeyConstraint(["reservation_id"], ["reservations.reservation_id"]),
    UniqueConstraint("reservation_id", "checkout_id"),
    CheckConstraint("status IN ('requires_payment', 'paid')", name="status"),
    # Whether a payment settled a reservation, before it is refunded as mismatched.
    Index("ix_payments_provider_payment_id", "provider_payment_id"),
    CheckConstraint("amount >= 0", name="amount_non_negative"),
)

# Payments that did not match their reservation: nothing was confirmed, kept for audit (once
# per payment, however often its callback is retried) with the fields that differed.
payment_mismatches = Table(
    "payment_mismatches",
    metadata,
    Column("mismatch_id", UUID(as_uuid=True), primary_key=True),
    Column("reservation_id", UUID(as_uuid=True), nullable=False),
    Column("checkout_id", Text, nullable=False),
    Column("provider_payment_id", Text, nullable=False),
    Column("provider", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency_code", Text, nullable=False),
    Column("raw_event", LargeBinary),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=NOW),
    Column("fields", ARRAY(Text), nullable=False),
    ForeignKeyConstraint(["reservation_id"], ["reservations.reservation_id"]),
    UniqueConstraint("reservation_id", "checkout_id", "provider_payment_id"),
)

# The webhook inbox: a delivery id is acted on once; repeats are answered from `outcome`. Ids
# are unique only within their scheme, and a repeat must be about the same payment: a sender that
# reuses an id for another payment gets that payment handled, never the first one's answer.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("scheme", Text, primary_key=True),
    Column("delivery_id", Text, primary_key=True),
    Column("reservation_id", UUID(as_uuid=True), nullable=False),
    Column("checkout_id", Text),
    Column("payment_id", Text),
    Column("outcome", Text, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=NOW),
    ForeignKeyConstraint(["reservation_id"], ["reservations.reservation_id"]),
    CheckConstraint(
        "outcome IN ('CONFIRMED', 'ALREADY_CONFIRMED', 'PAID_UNFULFILLED')", name="outcome"
    ),
)

# The transactional outbox behind ListRegistrationEvents / WatchRegistrationEvents. Writers
# insert rows without a sequence; the sequencer numbers committed rows (see events_repository).
registration_events = Table(
    "registration_events",
    metadata,
    Column("event_row_id", BigInteger, Identity(always=True), primary_key=True),
    Column("sequence", BigInteger, unique=True),
    Column("type", Text, nullable=False),
    Column("reservation_id", UUID(as_uuid=True), nullable=False),
    Column("reservation", JSONB, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=NOW),
    # What a payment_mismatch event adds to the reservation: the payment and what differed.
    Column("details", JSONB),
    CheckConstraint(
        "type IN ('reservation_created', 'reservation_confirmed', 'reservation_expired', "
        "'reservation_cancelled', 'reservation_paid_unfulfilled', 'payment_mismatch', "
        "'registration_cancelled', 'refund_succeeded', 'refund_failed')",
        name="type",
    ),
    Index(
        "ix_registration_events_unsequenced",
        "event_row_id",
        postgresql_where=text("sequence IS NULL"),
    ),
    Index("ix_registration_events_create_time", "create_time"),
)

registration_event_sequencer = Table(
    "registration_event_sequencer",
    metadata,
    Column("singleton", Boolean, primary_key=True, server_default=text("true")),
    Column("last_sequence", BigInteger, nullable=False),
    CheckConstraint("singleton", name="singleton"),
)
