"""Settings gain the event's start time and its refund policy.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "ticketing_settings",
        sa.Column("event_start_time", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "ticketing_settings", sa.Column("refund_policy", postgresql.JSONB(), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("ticketing_settings", "refund_policy")
    op.drop_column("ticketing_settings", "event_start_time")
