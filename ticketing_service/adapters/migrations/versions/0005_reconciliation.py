"""Reconciliation: when a reservation's checkout was asked about, and when to ask again.

- `asked_time`: the last time it was asked (a live hold is asked once early on);
- `hold_extended`: a hold kept one grace longer because its payment was under way;
- `next_reconcile_time` / `reconcile_attempts`: a follow-up is due (NULL: none), and how many
  were made (the back-off grows with them);
- `reconcile_lease_until`: a replica asking about it now; the others leave it until then.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tstz = sa.DateTime(timezone=True)
    op.add_column("reservations", sa.Column("asked_time", tstz, nullable=True))
    op.add_column(
        "reservations",
        sa.Column("hold_extended", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column("reservations", sa.Column("next_reconcile_time", tstz, nullable=True))
    op.add_column(
        "reservations",
        sa.Column("reconcile_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("reservations", sa.Column("reconcile_lease_until", tstz, nullable=True))
    op.create_index(
        "ix_reservations_reconcile_due",
        "reservations",
        ["next_reconcile_time"],
        postgresql_where=sa.text("next_reconcile_time IS NOT NULL"),
    )
    op.create_index(
        "ix_reservations_unasked_holds",
        "reservations",
        ["create_time"],
        postgresql_where=sa.text(
            "status = 'pending_payment' AND checkout_id IS NOT NULL AND asked_time IS NULL"
        ),
    )


def downgrade() -> None:
    op.drop_index("ix_reservations_unasked_holds", table_name="reservations")
    op.drop_index("ix_reservations_reconcile_due", table_name="reservations")
    for column in (
        "reconcile_lease_until",
        "reconcile_attempts",
        "next_reconcile_time",
        "hold_extended",
        "asked_time",
    ):
        op.drop_column("reservations", column)
