"""Outbox rows for tests that send without ingesting."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, insert

from supportd.adapters.db.models import OutboxItem


def queue_rows(engine: Engine, n: int, at: datetime) -> list[int]:
    """Queue `n` outbox rows due at `at`, as the ingest side writes them (SQLAlchemy)."""
    with engine.begin() as conn:
        return [
            conn.execute(
                insert(OutboxItem).values(
                    kind="auto_reply",
                    sender="desk@example.com",
                    recipients="a@example.com, b@example.com",
                    raw=b"Subject: x\r\n\r\nbody %d\r\n" % i,
                    status="pending",
                    attempts=0,
                    next_attempt_at=at,
                    last_error="",
                    created_at=at,
                )
            ).inserted_primary_key[0]
            for i in range(n)
        ]
