"""Payment id indexes; `refunded_amount` counts only the settling payment's refunds.

A mismatched payment is refunded only if it settled no reservation and is not owed back
already (one payment, one fate); both are looked up by the payment id. `refunded_amount` had
added refunds of other payments (a duplicate, a mismatch, in any currency) to the settling
payment's: it is counted again from the refunds that succeeded.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_payments_provider_payment_id", "payments", ["provider_payment_id"])
    op.create_index("ix_refunds_payment_id", "refunds", ["payment_id"])
    op.execute(
        "UPDATE reservations r SET refunded_amount = coalesce((SELECT sum(x.amount)"
        " FROM refunds x WHERE x.reservation_id = r.reservation_id"
        " AND x.payment_id = r.payment_id AND x.status = 'succeeded'), 0)"
        " WHERE r.refunded_amount > 0"
    )


def downgrade() -> None:
    op.drop_index("ix_refunds_payment_id", table_name="refunds")
    op.drop_index("ix_payments_provider_payment_id", table_name="payments")
