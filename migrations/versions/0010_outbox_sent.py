"""throughput: PostgreSQL's journal of sent outbox rows

A PostgreSQL lane claimed, marked and committed one row at a time: four statements per
sent mail (BEGIN, the claim, the UPDATE, COMMIT), 445 us of the client's CPU each time, and
the lanes ended 6 s behind a 10,000-mail drain (issue 9). A lane now claims a few rows at
once and records each one here right after the server's 250 (one statement, its own
commit), and the rows' UPDATE follows once per group. Created on SQLite too, where it stays
empty: one schema for both.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox_sent",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_sent")),
    )


def downgrade() -> None:
    # What a crash left in the journal was sent: the table hears of it before it goes.
    op.execute(
        "UPDATE outbox SET status = 'sent', sent_at = "
        "(SELECT at FROM outbox_sent WHERE outbox_sent.id = outbox.id), last_error = '' "
        "WHERE id IN (SELECT id FROM outbox_sent)"
    )
    op.drop_table("outbox_sent")
