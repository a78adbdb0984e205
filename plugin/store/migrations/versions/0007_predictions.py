"""predictions: a shop's purchase-model fits, each shopper's forecast, the personal-stages setting

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shops") as batch:
        batch.add_column(
            sa.Column("personal_stages", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "purchase_fits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shop_id", sa.Integer(), nullable=False),
        sa.Column("cutoff_day", sa.Date(), nullable=False),
        sa.Column("cutoff_at", sa.DateTime(), nullable=False),
        sa.Column("fitted_at", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("unit", sa.String(length=8), nullable=False),
        *(
            sa.Column(name, sa.Float(), nullable=True)
            for name in ("r", "alpha", "a", "b", "p", "q", "gamma", "log_likelihood", "spend_log_likelihood")
        ),
        sa.Column("shoppers", sa.Integer(), nullable=False),
        sa.Column("repeat_buyers", sa.Integer(), nullable=False),
        sa.Column("second_order_p80_days", sa.Float(), nullable=True),
        sa.Column("second_order_p95_days", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["shop_id"], ["shops.id"], name=op.f("fk_purchase_fits_shop_id_shops"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchase_fits")),
    )
    op.create_index("ix_purchase_fits_shop_cutoff", "purchase_fits", ["shop_id", "cutoff_day"])
    op.create_table(
        "shopper_predictions",
        sa.Column("shopper_id", sa.Integer(), nullable=False),
        sa.Column("shop_id", sa.Integer(), nullable=False),
        sa.Column("fit_id", sa.Integer(), nullable=False),
        sa.Column("repeat_occasions", sa.Integer(), nullable=False),
        sa.Column("p_alive", sa.Float(), nullable=False),
        sa.Column("expected_orders_90d", sa.Float(), nullable=False),
        sa.Column("predicted_clv_365d", sa.Float(), nullable=True),
        sa.Column("expected_gap_days", sa.Float(), nullable=True),
        sa.Column("predicted_next_order_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["shopper_id"],
            ["shoppers.id"],
            name=op.f("fk_shopper_predictions_shopper_id_shoppers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["shop_id"], ["shops.id"], name=op.f("fk_shopper_predictions_shop_id_shops"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["fit_id"],
            ["purchase_fits.id"],
            name=op.f("fk_shopper_predictions_fit_id_purchase_fits"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("shopper_id", name=op.f("pk_shopper_predictions")),
    )
    op.create_index("ix_shopper_predictions_shop_id", "shopper_predictions", ["shop_id"])
    op.create_index("ix_shopper_predictions_fit_id", "shopper_predictions", ["fit_id"])


def downgrade() -> None:
    op.drop_index("ix_shopper_predictions_fit_id", table_name="shopper_predictions")
    op.drop_index("ix_shopper_predictions_shop_id", table_name="shopper_predictions")
    op.drop_table("shopper_predictions")
    op.drop_index("ix_purchase_fits_shop_cutoff", table_name="purchase_fits")
    op.drop_table("purchase_fits")
    with op.batch_alter_table("shops") as batch:
        batch.drop_column("personal_stages")
