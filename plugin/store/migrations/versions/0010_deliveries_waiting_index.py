"""deliveries waiting: a partial index on id of the `received` deliveries, which a drain's claim walks

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25 15:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

WAITING = sa.text("status = 'received'")


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_waiting", "deliveries", ["id"], postgresql_where=WAITING, sqlite_where=WAITING
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_waiting", table_name="deliveries")
