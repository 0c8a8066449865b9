"""Refunds, cancelled registrations and cancelled events.

- `refunds`: the ledger of money owed back, written in the same transaction as the change that
  owes it, and sent by the refund worker (`next_attempt_time`, `attempts`, `lease_until`).
- `registrations.status` gains 'cancelled' (with `cancel_time`); a user may register again after
  giving up a seat, so one *accepted* registration per user and event is unique, not one row.
- `reservations.status` gains 'registration_cancelled', and `refunded_amount` (refunds that
  succeeded).
- `ticketing_settings.cancel_time` / `cancel_request_id` / `cancel_done_count` /
  `cancel_done_time`: the event's cancellation, which the cancellation worker carries out in
  batches (counting the holds and registrations it cancelled).
- The feed gains `registration_cancelled`, `refund_succeeded` and `refund_failed` events.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OLD_EVENT_TYPES = (
    "'reservation_created', 'reservation_confirmed', 'reservation_expired', "
    "'reservation_cancelled', 'reservation_paid_unfulfilled', 'payment_mismatch'"
)
EVENT_TYPES = OLD_EVENT_TYPES + ", 'registration_cancelled', 'refund_succeeded', 'refund_failed'"
OLD_RESERVATION_STATUSES = (
    "'pending_payment', 'confirmed', 'expired', 'cancelled', 'paid_unfulfilled'"
)
RESERVATION_STATUSES = OLD_RESERVATION_STATUSES + ", 'registration_cancelled'"
REFUND_REASONS = (
    "'cancellation', 'organizer', 'goodwill', 'paid_unfulfilled', 'duplicate', 'mismatch',"
    " 'event_cancelled'"
)


def upgrade() -> None:
    _replace_check("registration_events", "type", f"type IN ({EVENT_TYPES})")
    _replace_check("reservations", "status", f"status IN ({RESERVATION_STATUSES})")
    op.add_column(
        "reservations",
        sa.Column("refunded_amount", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    # An event's reservations by status: its cancellation's batches and progress.
    op.create_index("ix_reservations_event_id_status", "reservations", ["event_id", "status"])
    _replace_check("registrations", "status", "status IN ('accepted', 'cancelled')")
    op.add_column(
        "registrations", sa.Column("cancel_time", sa.DateTime(timezone=True), nullable=True)
    )
    op.drop_constraint(op.f("uq_registrations_event_id_user_id"), "registrations", type_="unique")
    op.create_index(
        "uq_registrations_accepted_per_user_event",
        "registrations",
        ["event_id", "user_id"],
        unique=True,
        postgresql_where=sa.text("status = 'accepted'"),
    )
    tstz = sa.DateTime(timezone=True)
    op.add_column("ticketing_settings", sa.Column("cancel_time", tstz, nullable=True))
    op.add_column("ticketing_settings", sa.Column("cancel_request_id", sa.Text(), nullable=True))
    op.add_column(
        "ticketing_settings",
        sa.Column("cancel_done_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("ticketing_settings", sa.Column("cancel_done_time", tstz, nullable=True))
    _create_refunds()


def _create_refunds() -> None:
    tstz = sa.DateTime(timezone=True)
    op.create_table(
        "refunds",
        sa.Column("refund_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("reservation_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("payment_id", sa.Text(), nullable=False),
        sa.Column("checkout_id", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency_code", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_time", tstz, nullable=True),
        sa.Column("lease_until", tstz, nullable=True),
        sa.Column("provider_refund_id", sa.Text(), nullable=True),
        sa.Column("failure_code", sa.Text(), nullable=True),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("release_seat", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("create_time", tstz, server_default=sa.text("now()"), nullable=False),
        sa.Column("update_time", tstz, server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_refunds_amount_positive")),
        sa.CheckConstraint("currency_code ~ '^[A-Z]{3}$'", name=op.f("ck_refunds_currency_code")),
        sa.CheckConstraint(f"reason IN ({REFUND_REASONS})", name=op.f("ck_refunds_reason")),
        sa.CheckConstraint(
            "status IN ('requested', 'pending', 'succeeded', 'failed')",
            name=op.f("ck_refunds_status"),
        ),
        sa.ForeignKeyConstraint(
            ["reservation_id"],
            ["reservations.reservation_id"],
            name=op.f("fk_refunds_reservation_id_reservations"),
        ),
        sa.PrimaryKeyConstraint("refund_id", name=op.f("pk_refunds")),
    )
    op.create_index("ix_refunds_reservation_id", "refunds", ["reservation_id"])
    op.create_index(
        "ix_refunds_due",
        "refunds",
        ["next_attempt_time"],
        postgresql_where=sa.text("status IN ('requested', 'pending')"),
    )
    op.create_index(
        "uq_refunds_request_per_reservation",
        "refunds",
        ["reservation_id", "request_id"],
        unique=True,
        postgresql_where=sa.text("request_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_table("refunds")
    for column in ("cancel_done_time", "cancel_done_count", "cancel_request_id", "cancel_time"):
        op.drop_column("ticketing_settings", column)
    op.drop_index("uq_registrations_accepted_per_user_event", table_name="registrations")
    op.execute("DELETE FROM registrations WHERE status = 'cancelled'")
    op.create_unique_constraint(
        op.f("uq_registrations_event_id_user_id"), "registrations", ["event_id", "user_id"]
    )
    op.drop_column("registrations", "cancel_time")
    _replace_check("registrations", "status", "status IN ('accepted')")
    op.drop_index("ix_reservations_event_id_status", table_name="reservations")
    op.drop_column("reservations", "refunded_amount")
    op.execute(
        "UPDATE reservations SET status = 'cancelled' WHERE status = 'registration_cancelled'"
    )
    _replace_check("reservations", "status", f"status IN ({OLD_RESERVATION_STATUSES})")
    op.execute(
        "DELETE FROM registration_events WHERE type IN"
        " ('registration_cancelled', 'refund_succeeded', 'refund_failed')"
    )
    _replace_check("registration_events", "type", f"type IN ({OLD_EVENT_TYPES})")


def _replace_check(table: str, name: str, condition: str) -> None:
    op.drop_constraint(op.f(f"ck_{table}_{name}"), table, type_="check")
    op.create_check_constraint(op.f(f"ck_{table}_{name}"), table, condition)
