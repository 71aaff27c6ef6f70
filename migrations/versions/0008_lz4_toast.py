"""throughput: PostgreSQL compresses the large columns with lz4 instead of pglz

Issue 9's PostgreSQL profile: the server spent about as much CPU as supportd itself, most
of it compressing each stored mail (raw, text, the outbox's bytes and intents) with pglz.
lz4 does the same work in a fifth of the time (measured here: 0.75 -> 0.15 CPU-s for
5,000 values of 8 KiB) for somewhat larger rows. Only new values are written with it;
nothing is rewritten. PostgreSQL before 14, or a server built without lz4, keeps pglz.
SQLite has no TOAST: nothing to do there.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

COLUMNS = (
    ("messages", "raw"),
    ("messages", "text"),
    ("quarantine", "raw"),
    ("outbox", "raw"),
    ("outbox", "intent"),
)
log = logging.getLogger("alembic.runtime.migration")


def _compress_with(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or bind.dialect.server_version_info < (14,):
        return
    try:
        with bind.begin_nested():  # a server built without lz4 refuses: keep pglz then
            for table, column in COLUMNS:
                op.execute(f'ALTER TABLE {table} ALTER COLUMN "{column}" SET COMPRESSION {method}')
    except sa.exc.DBAPIError as exc:
        log.warning("PostgreSQL keeps its default compression (%s): %s", method, exc.orig)


def upgrade() -> None:
    _compress_with("lz4")


def downgrade() -> None:
    _compress_with("pglz")
