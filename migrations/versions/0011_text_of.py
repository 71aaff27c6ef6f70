"""throughput and size: a notification refers to the customer's text instead of copying it

A notification held the customer's text twice more: in its copy on the ticket (messages)
and in its outbox intent, once per agent. Both rows now name the customer's message row
(text_of) and hold no text of their own: 16 KiB less per customer message and agent in a
backlog of 8 KiB mails (issue 9). `tickets show` and the outbox sender read the text
through the reference. Rows written before keep their own text (text_of NULL).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("text_of", sa.Integer(), nullable=True))
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("text_of", sa.Integer(), nullable=True))


def downgrade() -> None:
    # Each row gets its own copy of the text back before the reference goes.
    op.execute(
        "UPDATE messages SET text = (SELECT m.text FROM messages m "
        "WHERE m.id = messages.text_of) WHERE text_of IS NOT NULL"
    )
    op.execute(
        "UPDATE outbox SET intent = intent || '\n' || (SELECT m.text FROM messages m "
        "WHERE m.id = outbox.text_of) WHERE text_of IS NOT NULL AND intent IS NOT NULL"
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("text_of")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("text_of")
