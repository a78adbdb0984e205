"""refunds by order: an index on (shop_id, order_id), which an order's refunded sum and a batch's reads use

Without it both walked every refund of the shop (the unique index on (shop_id, refund_id) only narrows by
shop), once per order.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 04:00:00
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_refunds_shop_order", "refunds", ["shop_id", "order_id"])


def downgrade() -> None:
    op.drop_index("ix_refunds_shop_order", table_name="refunds")
