"""install and compliance: expiring offline tokens, backfill progress, reconciliation time, data exports

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 20:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shops") as batch:
        batch.add_column(sa.Column("access_token_expires_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("refresh_token_encrypted", sa.Text(), nullable=True))
        batch.add_column(sa.Column("refresh_token_expires_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("scopes", sa.Text(), nullable=True))
        batch.add_column(sa.Column("backfill", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("last_reconciled_at", sa.DateTime(), nullable=True))
    op.create_table(
        "data_exports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shop_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.BigInteger(), nullable=False),
        sa.Column("data_request_id", sa.BigInteger(), nullable=True),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["shop_id"], ["shops.id"], name=op.f("fk_data_exports_shop_id_shops"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_exports")),
    )
    op.create_index("ix_data_exports_shop", "data_exports", ["shop_id", "requested_at"])


def downgrade() -> None:
    op.drop_index("ix_data_exports_shop", table_name="data_exports")
    op.drop_table("data_exports")
    with op.batch_alter_table("shops") as batch:
        for column in (
            "last_reconciled_at",
            "backfill",
            "scopes",
            "refresh_token_expires_at",
            "refresh_token_encrypted",
            "access_token_expires_at",
        ):
            batch.drop_column(column)
