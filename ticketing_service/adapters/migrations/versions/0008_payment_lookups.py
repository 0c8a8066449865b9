"""Payments and refunds gain an index on the provider's payment id.

A mismatched payment is refunded only if it settled no reservation and is not owed back
already (one payment, one fate); both are looked up by the payment id.

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


def downgrade() -> None:
    op.drop_index("ix_refunds_payment_id", table_name="refunds")
    op.drop_index("ix_payments_provider_payment_id", table_name="payments")
