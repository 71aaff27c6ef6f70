"""response clocks: the clock now running per ticket, and its next event (indexed)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("clock_started_at", sa.DateTime(), nullable=True))
        batch_op.add_column(
            sa.Column("clock_first", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(
            sa.Column("clock_paused", sa.Float(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("clock_paused_since", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("next_response_due", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("next_event_at", sa.DateTime(), nullable=True))
        batch_op.create_index("ix_tickets_next_event", ["next_event_at"], unique=False)
        batch_op.create_index("ix_tickets_response_due", ["next_response_due"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_index("ix_tickets_response_due")
        batch_op.drop_index("ix_tickets_next_event")
        batch_op.drop_column("next_event_at")
        batch_op.drop_column("next_response_due")
        batch_op.drop_column("clock_paused_since")
        batch_op.drop_column("clock_paused")
        batch_op.drop_column("clock_first")
        batch_op.drop_column("clock_started_at")
