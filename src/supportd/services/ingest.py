"""Ingestion: mailbox messages to tickets, one transaction per FETCH batch.

Invariant 1: a batch's raw messages, its ticket changes and the advanced cursor commit
together, before anything is moved on the server. Invariant 3: each message runs in its
own SAVEPOINT; a failure rolls back that message alone and stores it raw in quarantine.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from supportd.domain.autoreply import outgoing_message_id
from supportd.domain.mail import Cursor, FetchedMail, ParsedMail, dedup_key
from supportd.errors import SupportdError
from supportd.services.answers import DeskIdentity, ReplyPolicy
from supportd.services.archive import ArchiveLog
from supportd.services.clocks import ClockKeeper
from supportd.services.filing import Filer
from supportd.services.plan import ChunkPlan
from supportd.services.ports import Clock, MailSource, TicketStore, UnitOfWorkFactory
from supportd.services.team import Team

__all__ = ["DeskIdentity", "IngestStats", "Ingestor", "ReplyPolicy"]

log = logging.getLogger(__name__)

Parsed = list["ParsedMail | BaseException"]
ParseMany = Callable[[Sequence[bytes]], Parsed]
T = TypeVar("T")


class ParseJob(Protocol):
    """A batch being parsed elsewhere: call it to wait for the result."""

    def __call__(self) -> Parsed: ...

    def done(self) -> bool:
        """True when calling it would not wait."""
        ...

    def behind(self) -> bool:
        """After the call: True when whoever parsed it is behind with its other work (the
        outbox's lanes), so this process should take more of the parsing."""
        ...


# Starts parsing a batch on the second core.
ParseAsync = Callable[[Sequence[bytes]], ParseJob]


class ParseShare:
    """Which batches the daemon parses itself while a worker parses the rest.

    The worker also runs the outbox's lanes, so how much of the parsing it keeps up with
    depends on the mail. The share parsed here rises by a step each time the worker's
    batch kept the daemon waiting, or came back with its lanes more than
    parsepool.SENDER_BEHIND seconds behind the queue, and falls by one otherwise; batches
    are parsed here at that rate, spread evenly (an accumulator), never all of them.
    """

    STEP = 0.125
    MOST = 0.75

    def __init__(self) -> None:
        self.share = 0.0
        self._credit = 0.0

    def observed(self, waited: bool) -> None:
        step = self.STEP if waited else -self.STEP
        self.share = min(self.MOST, max(0.0, self.share + step))

    def here(self) -> bool:
        self._credit += self.share
        if self._credit >= 1.0:
            self._credit -= 1.0
            return True
        return False


def prefetched(batches: Iterator[T]) -> Generator[T, None, None]:
    """`batches`, read one ahead on a thread of their own: the next FETCH (its round trip
    and imapclient's parsing) happens while the daemon stores and commits the batch before
    (issue 9: 8 % of the main thread's wall time waited for the IMAP server). In order;
    an error of the fetch is raised here, where the batch would have been."""
    ahead: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
    halt = threading.Event()

    def fetch() -> None:
        try:
            for batch in batches:
                ahead.put(("batch", batch))
                ahead.join()  # the next FETCH only once the reader has this one: one ahead
                if halt.is_set():
                    return
            ahead.put(("end", None))
        except BaseException as exc:  # handed to the reader, which raises it
            ahead.put(("error", exc))

    thread = threading.Thread(target=fetch, name="imap-fetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = ahead.get()
            ahead.task_done()
            if kind == "error":
                raise value
            if kind == "end":
                return
            yield value
    finally:  # the reader stopped early: let the fetch thread finish its batch and end
        halt.set()
        while thread.is_alive():
            with contextlib.suppress(queue.Empty):
                ahead.get(timeout=0.1)
                ahead.task_done()
        thread.join()


class _Here:
    """A batch parsed in this process, when it is asked for."""

    def __init__(self, parse: ParseMany, raws: list[bytes]) -> None:
        self._parse = parse
        self._raws = raws

    def __call__(self) -> Parsed:
        return self._parse(self._raws)

    def done(self) -> bool:
        return True

    def behind(self) -> bool:
        return False


@dataclass
class IngestStats:
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    new_tickets: int = 0
    batches: int = 0
    archived: int = 0

    def add(self, other: IngestStats) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined
        self.new_tickets += other.new_tickets
        self.batches += other.batches
        self.archived += other.archived


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Ingestor:
    """Drains a MailSource into tickets."""

    # Batches being parsed ahead of the one being stored (issue 9, SQLite: with one, the
    # worker kept the daemon waiting for 1 batch in 5 while its lanes had time to spare).
    PARSE_AHEAD = 2

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        desk: DeskIdentity,
        parse_many: ParseMany,
        clock: Clock,
        parse_async: ParseAsync | None = None,
        replies: ReplyPolicy | None = None,
        team: Team | None = None,
        clocks: ClockKeeper | None = None,
        parse_ahead: int = PARSE_AHEAD,
    ) -> None:
        self.uow = uow
        self.parse_ahead = max(1, parse_ahead)
        self.desk = desk
        self.parse_many = parse_many
        self.clock = clock
        self.parse_async = parse_async
        self.replies = replies
        self.team = team
        self.clocks = clocks
        self.filer = Filer(desk, replies, team, clocks)
        # The ownership epoch this process claimed (None: unfenced, single-process use).
        self.epoch: int | None = None
        # A batch was committed without waiting for the disk, and no durable commit since:
        # kept across drains, so that one that failed midway is made durable by the next.
        self._unsynced = False
        # Called after each batch commits (the runner wakes the outbox with it).
        self.on_commit: Callable[[], None] = lambda: None

    def claim(self, mailbox: str, owner: str) -> int:
        """Start a new ownership epoch for `mailbox` (the caller holds its lock)."""
        with self.uow() as store:
            epoch = store.claim_mailbox(mailbox, owner, self.clock())
            store.commit()
        self.epoch = epoch
        return epoch

    def drain(self, source: MailSource, stop: threading.Event | None = None) -> IngestStats:
        """Read every message after the cursor; commit batch by batch; archive if configured."""
        stats = IngestStats()
        uidvalidity = source.open()
        with self.uow() as store:
            cursor = store.get_cursor(source.key)
        last_uid = 0
        if cursor is not None and cursor.uidvalidity == uidvalidity:
            last_uid = cursor.last_uid
        elif cursor is not None:
            log.warning(
                "%s: UIDVALIDITY changed from %d to %d; rescanning, duplicates are recognised",
                source.key,
                cursor.uidvalidity,
                uidvalidity,
            )
        uids = source.uids_after(last_uid)
        if uids:
            log.info("%s: %d new message(s) after UID %d", source.key, len(uids), last_uid)
        # A pipeline: batch k is parsed (on the second core, with parse_async) while the
        # batches before it are stored and batch k+1 fetched. Batches still commit one by
        # one, in order. The two processes share the parsing (ParseShare): a batch parsed
        # here is parsed after the batch before it is stored, so the faster side takes
        # more. parse_ahead batches are handed out before the first is needed: the worker
        # parses between its lanes' sends, so one store's time was too short for it.
        share = ParseShare()
        pending: collections.deque[tuple[list[FetchedMail], ParseJob]] = collections.deque()
        batches = prefetched(source.fetch(uids))
        try:
            for batch in batches:
                pending.append((batch, self._start_parse(batch, here=share.here())))
                if len(pending) <= self.parse_ahead:
                    continue
                previous, job = pending.popleft()
                waited = not job.done()
                parsed = job()
                if not isinstance(job, _Here):
                    # A worker whose lanes fall behind the queue gets fewer batches too.
                    share.observed(waited=waited or job.behind())
                # Not durable yet (an fsync per batch cost a tenth of a backlog's time):
                # the drain ends with a durable commit before anything leaves the server.
                stats.add(
                    self.ingest_batch(source.key, uidvalidity, previous, parsed, durable=False)
                )
                last_uid = previous[-1].uid
                self._unsynced = True
                if stop is not None and stop.is_set():
                    pending.clear()
                    break
        finally:  # the fetch thread is done with the mailbox before anyone else uses it
            batches.close()
        while pending:
            previous, job = pending.popleft()
            stats.add(
                self.ingest_batch(source.key, uidvalidity, previous, job(), durable=not pending)
            )
            last_uid = previous[-1].uid
            self._unsynced = bool(pending)
        if self._unsynced and last_uid:
            # Stopped early, or an earlier drain failed after relaxed commits: what was
            # stored is made durable (the cursor again) before anything leaves the server.
            with self.uow() as store:
                cursor = Cursor(uidvalidity, last_uid)
                store.set_cursor(source.key, cursor, self.clock(), self.epoch)
                store.commit()
            self._unsynced = False
        if last_uid:
            stats.archived = source.archive(last_uid, ArchiveLog(self.uow, source.key, self.epoch))
        return stats

    def _start_parse(self, batch: list[FetchedMail], here: bool) -> ParseJob:
        raws = [m.raw for m in batch]
        if self.parse_async is not None and not here:
            return self.parse_async(raws)
        return _Here(self.parse_many, raws)

    def ingest_batch(
        self,
        mailbox: str,
        uidvalidity: int,
        batch: list[FetchedMail],
        parsed: list[ParsedMail | BaseException] | None = None,
        durable: bool = True,
    ) -> IngestStats:
        """Store one FETCH batch and advance the cursor, all in one transaction
        (durable=False: see UnitOfWorkFactory).

        The batch is planned and written in bulk inside a SAVEPOINT; if that fails, each
        message is retried alone in its own SAVEPOINT, and one that still fails goes to
        quarantine with its error.
        """
        stats = IngestStats(batches=1)
        if parsed is None:
            parsed = self.parse_many([m.raw for m in batch])
        now = self.clock()
        with self.uow(durable=durable) as store:
            good: list[tuple[FetchedMail, ParsedMail]] = []
            for fetched, mail in zip(batch, parsed, strict=True):
                if isinstance(mail, BaseException):
                    self._quarantine(
                        store,
                        mailbox,
                        uidvalidity,
                        fetched,
                        f"cannot parse: {_describe(mail)}",
                        now,
                        stats,
                    )
                else:
                    good.append((fetched, mail))
            try:
                with store.savepoint():
                    stats.add(self._apply(store, mailbox, uidvalidity, good, now)[0])
            except Exception as exc:
                log.warning(
                    "%s: batch failed (%s); retrying its messages one by one",
                    mailbox,
                    _describe(exc),
                )
                for fetched, mail in good:
                    try:
                        stats.add(
                            self._apply_alone(store, mailbox, uidvalidity, fetched, mail, now)
                        )
                    except Exception as one_exc:  # one bad message never stops the desk
                        log.exception("%s UID %d: processing failed", mailbox, fetched.uid)
                        self._quarantine(
                            store,
                            mailbox,
                            uidvalidity,
                            fetched,
                            f"cannot process: {_describe(one_exc)}",
                            now,
                            stats,
                        )
            # Fenced: raises (and rolls the batch back) if another process took over.
            store.set_cursor(mailbox, Cursor(uidvalidity, batch[-1].uid), now, self.epoch)
            store.commit()
        self.on_commit()
        return stats

    def _apply_alone(
        self,
        store: TicketStore,
        mailbox: str,
        uidvalidity: int,
        fetched: FetchedMail,
        mail: ParsedMail,
        now: datetime,
    ) -> IngestStats:
        """One message in its own SAVEPOINT, tried twice: the first failure may be the
        unique delivery key refusing a copy another writer stored meanwhile, and the second
        try then sees that copy and records a duplicate delivery."""
        try:
            with store.savepoint():
                return self._apply(store, mailbox, uidvalidity, [(fetched, mail)], now)[0]
        except Exception:
            with store.savepoint():
                return self._apply(store, mailbox, uidvalidity, [(fetched, mail)], now)[0]

    def _quarantine(
        self,
        store: TicketStore,
        mailbox: str,
        uidvalidity: int,
        fetched: FetchedMail,
        error: str,
        now: datetime,
        stats: IngestStats,
    ) -> None:
        log.warning("%s UID %d quarantined: %s", mailbox, fetched.uid, error)
        store.quarantine(fetched, mailbox=mailbox, uidvalidity=uidvalidity, error=error, now=now)
        stats.quarantined += 1

    def _apply(
        self,
        store: TicketStore,
        mailbox: str,
        uidvalidity: int,
        items: list[tuple[FetchedMail, ParsedMail]],
        now: datetime,
    ) -> tuple[IngestStats, list[int]]:
        """Thread and store a chunk of parsed messages; raises if any of it fails.

        Returns the statistics and the row ids of the messages stored.
        """
        stats = IngestStats()
        if not items:
            return stats, []
        keys = [dedup_key(mail, fetched.raw) for fetched, mail in items]
        plan = ChunkPlan.prepare(
            store, mailbox, uidvalidity, now, [m for _, m in items], keys, self.message_id
        )
        for (fetched, mail), key in zip(items, keys, strict=True):
            original = plan.duplicate_of(key)
            if original is not None:
                plan.duplicates.append((original, fetched))
                stats.duplicates += 1
            else:
                self.filer.file(plan, fetched, mail, key)
                stats.stored += 1
        numbers, row_ids = plan.flush()
        stats.new_tickets = len(numbers)  # only counted: a drain's stats stay one size
        return stats, row_ids

    def message_id(self, row_id: int) -> str:
        """The signed Message-ID of the outgoing mail in outbox row `row_id`."""
        domain = self.desk.address.rsplit("@", 1)[-1]
        return outgoing_message_id(row_id, domain, self.replies.secret if self.replies else "")

    def replay(self, item_id: int) -> int:
        """Process a quarantined message again; returns the message row it became."""
        with self.uow() as store:
            item = store.quarantined(item_id)
            if item is None:
                raise SupportdError(f"quarantine item {item_id} does not exist")
            if item.replayed_at is not None:
                when = f"{item.replayed_at:%Y-%m-%d %H:%M}"
                raise SupportdError(f"quarantine item {item_id} was already replayed at {when}")
            mail = self.parse_many([item.fetched.raw])[0]
            if isinstance(mail, BaseException):
                raise SupportdError(
                    f"quarantine item {item_id} still cannot be parsed: {_describe(mail)}"
                )
            now = self.clock()
            stats, row_ids = self._apply(
                store, item.mailbox, item.uidvalidity, [(item.fetched, mail)], now
            )
            if not stats.stored:
                raise SupportdError(
                    f"quarantine item {item_id} is a duplicate of a stored message; "
                    "nothing to replay"
                )
            store.mark_replayed(item_id, row_ids[0], now)
            store.commit()
        return row_ids[0]
