"""The outbox table for the sender: due rows, and marking each one's fate."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, bindparam, select, update

from supportd.adapters.db.models import OutboxItem
from supportd.adapters.db.store import transactions
from supportd.services.outbox import DueMail

_outbox = cast(Table, OutboxItem.__table__)


_DUE = (
    select(
        _outbox.c.id,
        _outbox.c.sender,
        _outbox.c.recipients,
        _outbox.c.raw,
        _outbox.c.attempts,
        _outbox.c.created_at,
    )
    .where(_outbox.c.status == "pending", _outbox.c.next_attempt_at <= bindparam("now"))
    .order_by(_outbox.c.next_attempt_at, _outbox.c.id)
)


# Built once: every sent row runs it (the lanes' hot path).
_MARK_SENT = (
    update(_outbox)
    .where(_outbox.c.id == bindparam("row_id"))
    .values(status="sent", sent_at=bindparam("now"), last_error="")
)


class SqlOutboxStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    @property
    def row_locks(self) -> bool:
        """Whether claim() locks the row until commit (PostgreSQL), so senders can share."""
        return self.conn.dialect.name == "postgresql"

    def claim(self, now: datetime) -> DueMail | None:
        """The next due row, locked until this transaction ends; rows another sender holds
        are skipped (FOR UPDATE SKIP LOCKED), so no row goes out twice while its sender lives.
        """
        query = _DUE.limit(1).with_for_update(skip_locked=True)
        found = self._mails(self.conn.execute(query, {"now": now}))
        return found[0] if found else None

    def due(self, now: datetime, limit: int, after: int = 0) -> list[DueMail]:
        """Due rows with id > `after`, in id order (the SQLite feed reads on from there)."""
        query = (
            _DUE.where(_outbox.c.id > bindparam("after"))
            .order_by(None)
            .order_by(_outbox.c.id)
            .limit(limit)
        )
        return self._mails(self.conn.execute(query, {"now": now, "after": after}))

    @staticmethod
    def _mails(rows: Any) -> list[DueMail]:
        return [
            DueMail(
                r.id,
                r.sender,
                tuple(a.strip() for a in r.recipients.split(",") if a.strip()),
                r.raw,
                r.attempts,
                r.created_at,
            )
            for r in rows
        ]

    def _set(self, row_id: int, **values: object) -> None:
        self.conn.execute(update(_outbox).where(_outbox.c.id == row_id).values(**values))

    def mark_sent(self, row_id: int, now: datetime) -> None:
        self.conn.execute(_MARK_SENT, {"row_id": row_id, "now": now})

    def mark_retry(self, row_id: int, attempts: int, at: datetime, error: str) -> None:
        self._set(row_id, attempts=attempts, next_attempt_at=at, last_error=error[:2000])

    def mark_failed(self, row_id: int, attempts: int, error: str, now: datetime) -> None:
        self._set(row_id, status="failed", attempts=attempts, last_error=error[:2000])

    def retry(self, row_id: int, now: datetime) -> bool:
        """Put a failed or pending row back in the queue now; False if unknown or sent."""
        result = self.conn.execute(
            update(_outbox)
            .where(_outbox.c.id == row_id, _outbox.c.status != "sent")
            .values(status="pending", next_attempt_at=now, created_at=now)
        )
        return bool(result.rowcount)

    def commit(self) -> None:
        self.conn.commit()


def outbox_unit_of_work(engine: Engine) -> Callable[[], AbstractContextManager[SqlOutboxStore]]:
    """Transactions for the outbox sender (one per row it marks)."""
    return transactions(engine, SqlOutboxStore)
