"""consent wait: marketing runs wait for consent until the event's time + LIFECYCLE_CONSENT_WAIT_HOURS

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("action_runs") as batch:
        batch.add_column(sa.Column("event_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("wait_until", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("action_runs") as batch:
        batch.drop_column("wait_until")
        batch.drop_column("event_at")
