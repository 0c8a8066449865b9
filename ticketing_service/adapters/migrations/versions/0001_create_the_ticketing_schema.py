"""Create the ticketing schema

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ticketing_settings",
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("event_title", sa.Text(), server_default="", nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=True),
        sa.Column("provider_account_id", sa.Text(), nullable=True),
        sa.Column("currency_code", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("legacy", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("external_url", sa.Text(), nullable=True),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "update_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "currency_code ~ '^[A-Z]{3}$'", name=op.f("ck_ticketing_settings_currency_code")
        ),
        sa.CheckConstraint(
            "mode IN ('free', 'paid', 'external')", name=op.f("ck_ticketing_settings_mode")
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_ticketing_settings")),
    )
    op.create_table(
        "tiers",
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("tier_id", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("price_amount", sa.BigInteger(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=True),
        sa.Column("sale_start_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sale_end_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retained", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("accepted_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("delete_time", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "accepted_count >= 0", name=op.f("ck_tiers_accepted_count_non_negative")
        ),
        sa.CheckConstraint(
            "capacity IS NULL OR capacity > 0", name=op.f("ck_tiers_capacity_positive")
        ),
        sa.CheckConstraint("price_amount >= 0", name=op.f("ck_tiers_price_amount_non_negative")),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["ticketing_settings.event_id"],
            name=op.f("fk_tiers_event_id_ticketing_settings"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("event_id", "tier_id", name=op.f("pk_tiers")),
    )
    op.create_table(
        "reservations",
        sa.Column("reservation_id", sa.UUID(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("tier_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency_code", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("provider_account_id", sa.Text(), nullable=True),
        sa.Column(
            "answers",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("customer_name", sa.Text(), nullable=True),
        sa.Column("customer_email", sa.Text(), nullable=True),
        sa.Column("success_url", sa.Text(), nullable=False),
        sa.Column("cancel_url", sa.Text(), nullable=False),
        sa.Column("checkout_id", sa.Text(), nullable=True),
        sa.Column("checkout_url", sa.Text(), nullable=True),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "update_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("seat_folded", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.CheckConstraint(
            "currency_code ~ '^[A-Z]{3}$'", name=op.f("ck_reservations_currency_code")
        ),
        sa.CheckConstraint(
            "status IN ('pending_payment', 'confirmed', 'expired', 'cancelled', "
            "'paid_unfulfilled')",
            name=op.f("ck_reservations_status"),
        ),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_reservations_amount_non_negative")),
        sa.ForeignKeyConstraint(
            ["event_id", "tier_id"],
            ["tiers.event_id", "tiers.tier_id"],
            name=op.f("fk_reservations_event_id_tier_id_tiers"),
        ),
        sa.PrimaryKeyConstraint("reservation_id", name=op.f("pk_reservations")),
    )
    op.create_index(
        "ix_reservations_live_holds",
        "reservations",
        ["event_id", "tier_id", "expire_time"],
        unique=False,
        postgresql_where=sa.text("status = 'pending_payment'"),
    )
    op.create_index(
        "ix_reservations_pending_expiry",
        "reservations",
        ["expire_time"],
        unique=False,
        postgresql_where=sa.text("status = 'pending_payment'"),
    )
    op.create_index(
        "ix_reservations_unfolded_seats",
        "reservations",
        ["event_id", "tier_id"],
        unique=False,
        postgresql_where=sa.text("status = 'confirmed' AND NOT seat_folded"),
    )
    op.create_index(
        "uq_reservations_live_per_user_event",
        "reservations",
        ["event_id", "user_id"],
        unique=True,
        postgresql_where=sa.text("status = 'pending_payment'"),
    )
    op.create_table(
        "payment_mismatches",
        sa.Column("mismatch_id", sa.UUID(), nullable=False),
        sa.Column("reservation_id", sa.UUID(), nullable=False),
        sa.Column("checkout_id", sa.Text(), nullable=False),
        sa.Column("provider_payment_id", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency_code", sa.Text(), nullable=False),
        sa.Column("raw_event", sa.LargeBinary(), nullable=True),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["reservation_id"],
            ["reservations.reservation_id"],
            name=op.f("fk_payment_mismatches_reservation_id_reservations"),
        ),
        sa.PrimaryKeyConstraint("mismatch_id", name=op.f("pk_payment_mismatches")),
    )
    op.create_table(
        "payments",
        sa.Column("payment_row_id", sa.UUID(), nullable=False),
        sa.Column("reservation_id", sa.UUID(), nullable=False),
        sa.Column("checkout_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency_code", sa.Text(), nullable=False),
        sa.Column("provider_payment_id", sa.Text(), nullable=True),
        sa.Column("tx_id", sa.Text(), nullable=True),
        sa.Column("paid_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("raw_event", sa.LargeBinary(), nullable=True),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "update_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('requires_payment', 'paid')", name=op.f("ck_payments_status")
        ),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_payments_amount_non_negative")),
        sa.ForeignKeyConstraint(
            ["reservation_id"],
            ["reservations.reservation_id"],
            name=op.f("fk_payments_reservation_id_reservations"),
        ),
        sa.PrimaryKeyConstraint("payment_row_id", name=op.f("pk_payments")),
        sa.UniqueConstraint(
            "reservation_id", "checkout_id", name=op.f("uq_payments_reservation_id_checkout_id")
        ),
    )
    op.create_table(
        "registrations",
        sa.Column("registration_id", sa.UUID(), nullable=False),
        sa.Column("reservation_id", sa.UUID(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("tier_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column(
            "answers",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("status IN ('accepted')", name=op.f("ck_registrations_status")),
        sa.ForeignKeyConstraint(
            ["event_id", "tier_id"],
            ["tiers.event_id", "tiers.tier_id"],
            name=op.f("fk_registrations_event_id_tier_id_tiers"),
        ),
        sa.ForeignKeyConstraint(
            ["reservation_id"],
            ["reservations.reservation_id"],
            name=op.f("fk_registrations_reservation_id_reservations"),
        ),
        sa.PrimaryKeyConstraint("registration_id", name=op.f("pk_registrations")),
        sa.UniqueConstraint("event_id", "user_id", name=op.f("uq_registrations_event_id_user_id")),
        sa.UniqueConstraint("reservation_id", name=op.f("uq_registrations_reservation_id")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("delivery_id", sa.Text(), nullable=False),
        sa.Column("reservation_id", sa.UUID(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column(
            "create_time",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "outcome IN ('CONFIRMED', 'ALREADY_CONFIRMED', 'PAID_UNFULFILLED')",
            name=op.f("ck_webhook_deliveries_outcome"),
        ),
        sa.ForeignKeyConstraint(
            ["reservation_id"],
            ["reservations.reservation_id"],
            name=op.f("fk_webhook_deliveries_reservation_id_reservations"),
        ),
        sa.PrimaryKeyConstraint("delivery_id", name=op.f("pk_webhook_deliveries")),
    )


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("registrations")
    op.drop_table("payments")
    op.drop_table("payment_mismatches")
    op.drop_index(
        "uq_reservations_live_per_user_event",
        table_name="reservations",
        postgresql_where=sa.text("status = 'pending_payment'"),
    )
    op.drop_index(
        "ix_reservations_unfolded_seats",
        table_name="reservations",
        postgresql_where=sa.text("status = 'confirmed' AND NOT seat_folded"),
    )
    op.drop_index(
        "ix_reservations_pending_expiry",
        table_name="reservations",
        postgresql_where=sa.text("status = 'pending_payment'"),
    )
    op.drop_index(
        "ix_reservations_live_holds",
        table_name="reservations",
        postgresql_where=sa.text("status = 'pending_payment'"),
    )
    op.drop_table("reservations")
    op.drop_table("tiers")
    op.drop_table("ticketing_settings")
