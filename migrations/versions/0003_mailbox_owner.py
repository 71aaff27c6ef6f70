"""one owner per mailbox: fencing epoch, archive journal, unique delivery identity

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mailbox_state", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("owner_epoch", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("owner", sa.String(length=300), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("archive_pending_uid", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("archive_dest_uidnext", sa.BigInteger(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_dedup")
        batch_op.create_index("uq_messages_delivery", ["mailbox", "dedup_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("uq_messages_delivery")
        batch_op.create_index("ix_messages_dedup", ["mailbox", "dedup_key"], unique=False)
    with op.batch_alter_table("mailbox_state", schema=None) as batch_op:
        batch_op.drop_column("archive_dest_uidnext")
        batch_op.drop_column("archive_pending_uid")
        batch_op.drop_column("owner")
        batch_op.drop_column("owner_epoch")
