"""The outbox sender: due rows out over one SMTP connection per batch, each marked at once.

Invariant 2: a row is marked sent in its own commit right after the server's 250, so a
crash repeats at most the one message in flight. Temporary failures (4xx, connection
errors) retry with growing delay until smtp.give_up_after; 5xx is permanent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from supportd.errors import SendError
from supportd.services.ports import Clock

log = logging.getLogger(__name__)

FIRST_RETRY = timedelta(minutes=1)
MAX_RETRY = timedelta(hours=1)


@dataclass(frozen=True)
class DueMail:
    id: int
    sender: str
    recipients: tuple[str, ...]
    raw: bytes
    attempts: int
    created_at: datetime


class OutboxStore(Protocol):
    @property
    def row_locks(self) -> bool:
        """True when claim() holds the row locked until commit (several senders may share)."""

    def claim(self, now: datetime) -> DueMail | None: ...

    def due(self, now: datetime, limit: int) -> list[DueMail]: ...

    def mark_sent(self, row_id: int, now: datetime) -> None: ...

    def mark_retry(self, row_id: int, attempts: int, at: datetime, error: str) -> None: ...

    def mark_failed(self, row_id: int, attempts: int, error: str, now: datetime) -> None: ...

    def commit(self) -> None: ...


class SmtpSession(Protocol):
    def send(self, sender: str, recipients: tuple[str, ...], raw: bytes) -> None:
        """Deliver one message; raise SendError (permanent or not)."""


class MailTransport(Protocol):
    def session(self) -> AbstractContextManager[SmtpSession]:
        """One SMTP connection (raises SendError when it cannot be opened)."""


@dataclass
class SendStats:
    sent: int = 0
    retried: int = 0
    failed: int = 0


def retry_delay(attempts: int) -> timedelta:
    """1, 2, 4 ... minutes, at most an hour."""
    delay: timedelta = FIRST_RETRY * (2 ** max(attempts - 1, 0))
    return min(delay, MAX_RETRY)


class OutboxSender:
    def __init__(
        self,
        uow: Callable[[], AbstractContextManager[OutboxStore]],
        transport: MailTransport,
        clock: Clock,
        give_up_after: timedelta,
        batch_size: int = 100,
    ) -> None:
        self.uow = uow
        self.transport = transport
        self.clock = clock
        self.give_up_after = give_up_after
        self.batch_size = batch_size
        self._lock = threading.Lock()  # the daemon loop and the scheduler both call in
        self._again = False
        # Whether this process may send now (it owns the mailbox); checked before each row.
        self.allowed: Callable[[], bool] = lambda: True
        self._row_locks: bool | None = None

    def _uses_row_locks(self) -> bool:
        if self._row_locks is None:
            with self.uow() as store:
                self._row_locks = bool(store.row_locks)
        return self._row_locks

    def send_due(self) -> SendStats:
        """Send every row that is due now; returns what happened.

        The daemon loop and the scheduler both call this; one sends while the other only
        raises `_again`, which makes the sender look once more before it stops.
        """
        stats = SendStats()
        self._again = True
        while self._again and self._lock.acquire(blocking=False):
            try:
                self._again = False
                if self._uses_row_locks():
                    while self.allowed() and self._send_claimed(stats):
                        pass
                    continue
                while self.allowed():
                    with self.uow() as store:
                        batch = store.due(self.clock(), self.batch_size)
                    if not batch or not self._send_batch(batch, stats):
                        break
            finally:
                self._lock.release()
        return stats

    def _send_claimed(self, stats: SendStats) -> bool:
        """Up to batch_size rows over one connection, each locked from pick to marked sent.

        Each row is claimed (FOR UPDATE SKIP LOCKED), sent and marked in one transaction:
        another instance skips it meanwhile, and a crash repeats at most this one row.
        False when nothing was due or the server could not be reached.
        """
        with self.uow() as store:  # nothing due: no SMTP connection at all
            if not store.due(self.clock(), 1):
                return False
        sent = 0
        try:
            with self.transport.session() as session:
                while sent < self.batch_size and self.allowed():
                    with self.uow() as store:
                        item = store.claim(self.clock())
                        if item is None:
                            return False
                        try:
                            session.send(item.sender, item.recipients, item.raw)
                        except SendError as exc:
                            self._record_failure(store, item, exc, stats)
                        else:
                            store.mark_sent(item.id, self.clock())
                            stats.sent += 1
                        store.commit()
                        sent += 1
        except SendError as exc:  # no connection: every due row waits for its retry
            log.warning("outbox: %s; due messages wait for their retry", exc)
            self._postpone_all(exc, stats)
            return False
        return sent >= self.batch_size

    def _postpone_all(self, exc: SendError, stats: SendStats) -> None:
        while True:
            with self.uow() as store:
                item = store.claim(self.clock())
                if item is None:
                    return
                self._record_failure(store, item, exc, stats, quiet=True)
                store.commit()

    def _send_batch(self, batch: list[DueMail], stats: SendStats) -> bool:
        """False when the server could not be reached (the rest waits for the retry)."""
        pending = list(batch)
        try:
            with self.transport.session() as session:
                while pending:
                    item = pending.pop(0)
                    try:
                        session.send(item.sender, item.recipients, item.raw)
                    except SendError as exc:  # this message only; go on with the next
                        self._failed(item, exc, stats)
                        continue
                    with self.uow() as store:
                        store.mark_sent(item.id, self.clock())
                        store.commit()
                    stats.sent += 1
        except SendError as exc:  # no connection: every unsent row waits for its retry
            log.warning("outbox: %s; %d message(s) wait for their retry", exc, len(pending))
            for item in pending:
                self._failed(item, exc, stats, quiet=True)
            return False
        return len(batch) == self.batch_size

    def _failed(self, item: DueMail, exc: SendError, stats: SendStats, quiet: bool = False) -> None:
        with self.uow() as store:
            self._record_failure(store, item, exc, stats, quiet)
            store.commit()

    def _record_failure(
        self,
        store: OutboxStore,
        item: DueMail,
        exc: SendError,
        stats: SendStats,
        quiet: bool = False,
    ) -> None:
        now = self.clock()
        attempts = item.attempts + 1
        if exc.permanent or now - item.created_at >= self.give_up_after:
            why = "permanent" if exc.permanent else "gave up after retries"
            log.error("outbox %d to %s failed (%s): %s", item.id, item.recipients, why, exc)
            store.mark_failed(item.id, attempts, f"{why}: {exc}", now)
            stats.failed += 1
        else:
            at = now + retry_delay(attempts)
            log.log(
                logging.DEBUG if quiet else logging.WARNING,
                "outbox %d to %s: %s (retry at %s)",
                item.id,
                item.recipients,
                exc,
                at.isoformat(timespec="seconds"),
            )
            store.mark_retry(item.id, attempts, at, str(exc))
            stats.retried += 1
