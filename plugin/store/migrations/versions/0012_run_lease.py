"""run lease: while a run is `running`, the end of its attempt's lease; the tick takes it back after

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 12:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("action_runs") as batch:
        batch.add_column(sa.Column("lease_until", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("action_runs") as batch:
        batch.drop_column("lease_until")
