"""consent wait: marketing runs wait for consent until the event's time + LIFECYCLE_CONSENT_WAIT_HOURS

Revision ID: 0006_consent_wait
Revises: 0006_shop_address
Create Date: 2026-11-25 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_consent_wait"
down_revision = "0006_shop_address"  # main already holds 0006_shop_address on 0005: one head
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
