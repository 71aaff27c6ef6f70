"""The outbox sender: due rows out over a few SMTP connections at once, each row marked
sent in its own commit right after the server's 250.

Invariant 2, with `connections` lanes: a crash repeats at most the rows in flight, one per
lane (smtp.connections, 4 by default). Temporary failures (4xx, connection errors) retry
with growing delay until smtp.give_up_after; 5xx is permanent.

Each lane is a thread with its own connection, so the lanes overlap their SMTP round trips
(and with `background()`, ingestion). Rows reach the lanes in one of two ways:
- PostgreSQL (row locks): each lane claims its next few rows (CLAIM_GROUP) FOR UPDATE SKIP
  LOCKED and holds them from pick to marked sent, so any number of instances and lanes
  share the outbox. Each row is journaled as sent right after its 250 (mark_sent), and the
  group's rows are marked in the table at its commit: a crash still repeats only the row in
  flight.
- SQLite (one owning process per database): one feed hands due rows out in id order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from supportd.errors import SendError
from supportd.services.ports import Clock

log = logging.getLogger(__name__)

FIRST_RETRY = timedelta(minutes=1)
# Rows a PostgreSQL lane claims at once: per sent mail about 1.5 statements instead of 4
# (bench/RESULTS.md, issue 9). A queue of up to this many goes out over one connection.
CLAIM_GROUP = 8
# A group stops taking its next row after this long (the rest are released at commit and
# claimed again): should the server drop the lane's connection, and with it the group's
# locks, while it sends, another sender could take the rest; a slow SMTP server thus keeps
# the group to about one row, as before groups.
GROUP_SECONDS = 2.0
MAX_RETRY = timedelta(hours=1)


@dataclass(frozen=True)
class DueMail:
    id: int
    sender: str
    recipients: tuple[str, ...]
    raw: bytes
    attempts: int
    created_at: datetime
    message_id: str = ""
    intent: str | None = None  # set: written now, by the sender's renderer (raw is empty)


# (intent, Message-ID) -> the mail's bytes (adapters/teammail.TeamComposer.render).
Renderer = Callable[[str, str], bytes]


class OutboxStore(Protocol):
    @property
    def row_locks(self) -> bool:
        """True when claim() holds the row locked until commit (several senders may share)."""

    def claim(self, now: datetime, limit: int = 1) -> list[DueMail]:
        """Up to `limit` due rows, locked until commit (only where row_locks)."""

    def due(self, now: datetime, limit: int, after: int = 0) -> list[DueMail]:
        """Due rows with id > `after`, in id order."""

    def mark_sent(self, row_id: int, now: datetime) -> None:
        """Record the row as sent; durable once commit() returns (or sooner)."""

    def settle(self, wait: bool) -> None:
        """Bring marks recorded outside the table into it (SQLite's journal of sent rows);
        wait=False: only if that needs no waiting for the database's write lock."""

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

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # lanes count into one SendStats

    def count(self, what: str) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)


def retry_delay(attempts: int) -> timedelta:
    """1, 2, 4 ... minutes, at most an hour."""
    delay: timedelta = FIRST_RETRY * (2 ** max(attempts - 1, 0))
    return min(delay, MAX_RETRY)


class _Feed:
    """Due rows for the lanes, in id order, read a batch at a time (SQLite: one sender)."""

    def __init__(self, sender: OutboxSender) -> None:
        self.sender = sender
        self.lock = threading.Lock()
        self.rows: deque[DueMail] = deque()
        self.after = 0
        self.done = False

    def take(self, _store: object = None) -> list[DueMail]:
        """The next row (one at a time: a row's failure mark holds SQLite's write lock)."""
        with self.lock:
            if not self.rows and not self.done:
                with self.sender.uow() as store:
                    batch = store.due(self.sender.clock(), self.sender.batch_size, self.after)
                if not batch:
                    self.done = True
                else:
                    self.after = batch[-1].id
                    self.rows.extend(batch)
            return [self.rows.popleft()] if self.rows else []


class OutboxSender:
    def __init__(
        self,
        uow: Callable[[], AbstractContextManager[OutboxStore]],
        transport: MailTransport,
        clock: Clock,
        give_up_after: timedelta,
        batch_size: int = 100,
        connections: int = 4,
        render: Renderer | None = None,
    ) -> None:
        self.uow = uow
        self.render = render
        self.transport = transport
        self.clock = clock
        self.give_up_after = give_up_after
        self.batch_size = batch_size
        self.connections = connections
        self._lock = threading.Lock()  # one send_due at a time; the others only raise _again
        self._again = False
        # Whether this process may send now (it owns the mailbox); checked before each row.
        self.allowed: Callable[[], bool] = lambda: True
        self._row_locks: bool | None = None
        # Per lane of the running round: the age of the first-attempt row it took last, 0
        # once it found nothing (a lane's rows may all be in another lane's group).
        self._lags: list[float] = []

    @property
    def lag(self) -> float:
        """How far behind the queue the lanes are, in seconds: the oldest of the rows the
        lanes took last. Read by the worker's host (adapters/sendhost) for ParseShare."""
        return max(self._lags, default=0.0)

    def _uses_row_locks(self) -> bool:
        if self._row_locks is None:
            with self.uow() as store:
                self._row_locks = bool(store.row_locks)
        return self._row_locks

    def send_due(self) -> SendStats:
        """Send every row that is due now, over up to `connections` connections at once.

        Whoever calls while a send is running only raises `_again`, which makes the running
        sender look once more before it stops; nothing due is left behind.
        """
        stats = SendStats()
        self._again = True
        while self._again and self._lock.acquire(blocking=False):
            try:
                self._again = False
                while self.allowed() and self._round(stats):
                    pass
            finally:
                self._lock.release()
        return stats

    @contextmanager
    def background(self) -> Iterator[Callable[[], None]]:
        """Send while the caller works: yields a wake() to call when rows were committed.

        On exit the background sender finishes what it started (rows in flight are marked)
        and stops; the caller's own send_due() then finds whatever is left.
        """
        wake = threading.Event()
        stop = threading.Event()

        def pump() -> None:
            while not stop.is_set():
                wake.wait(1.0)
                wake.clear()
                if stop.is_set():
                    return
                try:
                    self.send_due()
                except Exception:  # one bad round never stops the desk; the next retries
                    log.exception("outbox (background) failed")

        thread = threading.Thread(target=pump, name="outbox", daemon=True)
        thread.start()
        try:
            yield wake.set
        finally:
            stop.set()
            wake.set()
            thread.join()

    def _round(self, stats: SendStats) -> bool:
        """One round of lanes over what is due; True when another round may find more."""
        with self.uow() as store:  # nothing due: no SMTP connection at all
            store.settle(wait=True)  # marks a crash left outside the table come first
            if not store.due(self.clock(), 1):
                return False
        take: Callable[[OutboxStore], list[DueMail]] = self._claim
        if not self._uses_row_locks():
            feed = _Feed(self)
            take = feed.take

        failures: list[SendError] = []
        progress = [0]
        count = max(1, self.connections)
        self._lags = [0.0] * count
        lanes = [
            threading.Thread(
                target=self._lane, args=(n, take, stats, failures, progress), name=f"smtp-{n}"
            )
            for n in range(count)
        ]
        for lane in lanes:
            lane.start()
        for lane in lanes:
            lane.join()
        self._lags = []
        with self.uow() as store:  # the table shows every mark of this round
            store.settle(wait=True)
        if len(failures) == len(lanes):  # no connection at all: every due row waits
            log.warning("outbox: %s; due messages wait for their retry", failures[0])
            self._postpone_all(failures[0], stats)
            return False
        return progress[0] > 0 and self.allowed()

    def _claim(self, store: OutboxStore) -> list[DueMail]:
        return store.claim(self.clock(), CLAIM_GROUP)

    def _lane(
        self,
        number: int,
        take: Callable[[OutboxStore], list[DueMail]],
        stats: SendStats,
        failures: list[SendError],
        progress: list[int],
    ) -> None:
        """One connection: take rows, send each and mark it, until nothing is left."""
        try:
            with self.transport.session() as session:
                while self.allowed():
                    with self.uow() as store:
                        items = take(store)
                        self._note_lag(number, items)
                        if not items:
                            return
                        started = time.monotonic()
                        for item in items:
                            if item is not items[0] and (
                                not self.allowed() or time.monotonic() - started > GROUP_SECONDS
                            ):
                                break  # the rest stay queued (released at commit)
                            try:
                                session.send(item.sender, item.recipients, self._bytes(item))
                            except SendError as exc:
                                self._record_failure(store, item, exc, stats)
                            else:
                                store.mark_sent(item.id, self.clock())
                                stats.count("sent")
                            progress[0] += 1
                        store.commit()
                        store.settle(wait=False)
        except SendError as exc:  # could not connect
            failures.append(exc)

    def _note_lag(self, lane: int, items: list[DueMail]) -> None:
        lags = self._lags
        if not items:
            lags[lane] = 0.0
        elif items[0].attempts == 0:  # a retry's age says nothing about the queue
            lags[lane] = (self.clock() - items[0].created_at).total_seconds()

    def _bytes(self, item: DueMail) -> bytes:
        """The row's mail: its bytes, or written now from its intent."""
        if item.intent is None:
            return item.raw
        if self.render is None:  # a sender built without the renderer: another one sends it
            raise SendError("this sender cannot write deferred mail", permanent=False)
        try:
            return self.render(item.intent, item.message_id)
        except Exception as exc:  # a broken intent never becomes sendable
            raise SendError(f"cannot write the mail: {exc}", permanent=True) from exc

    def _postpone_all(self, exc: SendError, stats: SendStats) -> None:
        if self._uses_row_locks():
            while True:
                with self.uow() as store:
                    items = store.claim(self.clock(), self.batch_size)
                    if not items:
                        return
                    for item in items:
                        self._record_failure(store, item, exc, stats, quiet=True)
                    store.commit()
        feed = _Feed(self)
        while items := feed.take():
            with self.uow() as store:
                for item in items:
                    self._record_failure(store, item, exc, stats, quiet=True)
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
            stats.count("failed")
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
            stats.count("retried")
