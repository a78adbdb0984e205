"""run lease: while a run is `running`, the end of its attempt's lease; the tick takes it back after

Runs already running (a worker killed before this version, or one still at work during the upgrade) get a
lease of 15 minutes from the upgrade, so the tick takes them back then instead of never.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 12:30:00
"""

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("action_runs") as batch:
        batch.add_column(sa.Column("lease_until", sa.DateTime(), nullable=True))
    runs = sa.table("action_runs", sa.column("status"), sa.column("play"), sa.column("lease_until"))
    op.execute(
        runs.update()
        .where(runs.c.status == "running", runs.c.play != "stage_sync")
        .values(lease_until=datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=15))
    )


def downgrade() -> None:
    with op.batch_alter_table("action_runs") as batch:
        batch.drop_column("lease_until")
