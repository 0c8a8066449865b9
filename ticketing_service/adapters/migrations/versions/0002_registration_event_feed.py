"""Add the registration event feed (a transactional outbox).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

EVENT_TYPES = (
    "'reservation_created', 'reservation_confirmed', 'reservation_expired', "
    "'reservation_cancelled', 'reservation_paid_unfulfilled'"
)


def upgrade() -> None:
    op.create_table(
        "registration_events",
        sa.Column("event_row_id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=True),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("reservation_id", sa.UUID(), nullable=False),
        sa.Column("reservation", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(f"type IN ({EVENT_TYPES})", name=op.f("ck_registration_events_type")),
        sa.PrimaryKeyConstraint("event_row_id", name=op.f("pk_registration_events")),
        sa.UniqueConstraint("sequence", name=op.f("uq_registration_events_sequence")),
    )
    op.create_index(
        "ix_registration_events_unsequenced",
        "registration_events",
        ["event_row_id"],
        unique=False,
        postgresql_where=sa.text("sequence IS NULL"),
    )
    # The last number the sequencer gave: kept apart from the events so pruning every event
    # can never make a number be given twice.
    op.create_table(
        "registration_event_sequencer",
        sa.Column("singleton", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("singleton", name=op.f("ck_registration_event_sequencer_singleton")),
        sa.PrimaryKeyConstraint("singleton", name=op.f("pk_registration_event_sequencer")),
    )
    op.execute("INSERT INTO registration_event_sequencer (last_sequence) VALUES (0)")
    op.create_index(
        "ix_registration_events_create_time",
        "registration_events",
        ["create_time"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_registration_events_create_time", table_name="registration_events")
    op.drop_index("ix_registration_events_unsequenced", table_name="registration_events")
    op.drop_table("registration_event_sequencer")
    op.drop_table("registration_events")
