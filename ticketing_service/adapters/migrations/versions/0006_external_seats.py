"""Tiers gain `external_seats`: seats Moim gave itself, counted as taken.

`import-moim` sets it on each run to the accepted RSVPs of the original implementation that
have no registration here (free tiers, attendees from before paid ticketing, paid RSVPs whose
payment row is missing, anonymous RSVPs). It is a count, set rather than added to, so a second
import changes nothing and a later one follows what Moim accepted meanwhile.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "tiers",
        sa.Column("external_seats", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_tiers_external_seats_non_negative"), "tiers", "external_seats >= 0"
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_tiers_external_seats_non_negative"), "tiers", type_="check")
    op.drop_column("tiers", "external_seats")
