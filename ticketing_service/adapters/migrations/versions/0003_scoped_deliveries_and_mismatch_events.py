"""Scope webhook delivery ids by scheme and bind them to their payment; feed payment mismatches.

- `webhook_deliveries` is keyed on (scheme, delivery_id) and remembers the checkout and payment
  the first delivery was about, so an id reused for another payment is never taken as a repeat.
  Rows from before this migration get scheme 'unscoped' (it was not recorded) and their binding
  from the reservation's paid payment.
- `reservations.payment_id`: the provider's id of the payment that settled a reservation.
- `payment_mismatches` are recorded once per (reservation, checkout, payment), with the fields
  that differed, and the feed gains `payment_mismatch` events that carry them (`details`).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OLD_EVENT_TYPES = (
    "'reservation_created', 'reservation_confirmed', 'reservation_expired', "
    "'reservation_cancelled', 'reservation_paid_unfulfilled'"
)
EVENT_TYPES = OLD_EVENT_TYPES + ", 'payment_mismatch'"


def upgrade() -> None:
    op.add_column("reservations", sa.Column("payment_id", sa.Text(), nullable=True))
    op.execute(
        "UPDATE reservations r SET payment_id = p.provider_payment_id FROM payments p"
        " WHERE p.reservation_id = r.reservation_id AND p.status = 'paid'"
    )
    _scope_deliveries()
    _deduplicate_mismatches()
    op.add_column("registration_events", sa.Column("details", postgresql.JSONB(), nullable=True))
    op.drop_constraint(op.f("ck_registration_events_type"), "registration_events", type_="check")
    op.create_check_constraint(
        op.f("ck_registration_events_type"), "registration_events", f"type IN ({EVENT_TYPES})"
    )


def _scope_deliveries() -> None:
    op.add_column(
        "webhook_deliveries",
        sa.Column("scheme", sa.Text(), server_default="unscoped", nullable=False),
    )
    op.alter_column("webhook_deliveries", "scheme", server_default=None)
    op.add_column("webhook_deliveries", sa.Column("checkout_id", sa.Text(), nullable=True))
    op.add_column("webhook_deliveries", sa.Column("payment_id", sa.Text(), nullable=True))
    op.execute(
        "UPDATE webhook_deliveries d SET checkout_id = r.checkout_id, payment_id = r.payment_id"
        " FROM reservations r WHERE r.reservation_id = d.reservation_id"
    )
    op.drop_constraint(op.f("pk_webhook_deliveries"), "webhook_deliveries", type_="primary")
    op.create_primary_key(
        op.f("pk_webhook_deliveries"), "webhook_deliveries", ["scheme", "delivery_id"]
    )


def _deduplicate_mismatches() -> None:
    # Before this, a retried mismatched delivery was recorded once per attempt.
    op.execute(
        "DELETE FROM payment_mismatches m USING payment_mismatches k"
        " WHERE m.reservation_id = k.reservation_id AND m.checkout_id = k.checkout_id"
        " AND m.provider_payment_id = k.provider_payment_id"
        " AND (m.create_time, m.mismatch_id) > (k.create_time, k.mismatch_id)"
    )
    op.add_column(
        "payment_mismatches",
        sa.Column("fields", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
    )
    op.alter_column("payment_mismatches", "fields", server_default=None)
    op.create_unique_constraint(
        op.f("uq_payment_mismatches_reservation_id_checkout_id_provider_payment_id"),
        "payment_mismatches",
        ["reservation_id", "checkout_id", "provider_payment_id"],
    )


def downgrade() -> None:
    op.execute("DELETE FROM registration_events WHERE type = 'payment_mismatch'")
    op.drop_constraint(op.f("ck_registration_events_type"), "registration_events", type_="check")
    op.create_check_constraint(
        op.f("ck_registration_events_type"), "registration_events", f"type IN ({OLD_EVENT_TYPES})"
    )
    op.drop_column("registration_events", "details")
    op.drop_constraint(
        op.f("uq_payment_mismatches_reservation_id_checkout_id_provider_payment_id"),
        "payment_mismatches",
        type_="unique",
    )
    op.drop_column("payment_mismatches", "fields")
    op.drop_constraint(op.f("pk_webhook_deliveries"), "webhook_deliveries", type_="primary")
    # Ids were unique per scheme only: keep the first of each.
    op.execute(
        "DELETE FROM webhook_deliveries d USING webhook_deliveries k"
        " WHERE d.delivery_id = k.delivery_id"
        " AND (d.create_time, d.scheme) > (k.create_time, k.scheme)"
    )
    op.create_primary_key(op.f("pk_webhook_deliveries"), "webhook_deliveries", ["delivery_id"])
    op.drop_column("webhook_deliveries", "payment_id")
    op.drop_column("webhook_deliveries", "checkout_id")
    op.drop_column("webhook_deliveries", "scheme")
    op.drop_column("reservations", "payment_id")
