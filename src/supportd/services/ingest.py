"""Ingestion: mailbox messages to tickets, one transaction per FETCH batch.

Invariant 1: a batch's raw messages, its ticket changes and the advanced cursor commit
together, before anything is moved on the server. Invariant 3: each message runs in its
own SAVEPOINT; a failure rolls back that message alone and stores it raw in quarantine.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from supportd.domain.mail import Cursor, FetchedMail, ParsedMail, dedup_key
from supportd.domain.robots import automatic_reason
from supportd.domain.threads import decide, new_participants, strip_tag
from supportd.errors import SupportdError
from supportd.services.ports import Clock, MailSource, TicketStore, UnitOfWorkFactory

log = logging.getLogger(__name__)

ParseMany = Callable[[Sequence[bytes]], list["ParsedMail | BaseException"]]


@dataclass
class IngestStats:
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    new_tickets: int = 0
    batches: int = 0
    archived: int = 0
    ticket_numbers: list[int] = field(default_factory=list)

    def add(self, other: IngestStats) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined
        self.new_tickets += other.new_tickets
        self.batches += other.batches
        self.archived += other.archived


@dataclass(frozen=True)
class DeskIdentity:
    """Who the desk is: its product tag, its own address and its agents."""

    product: str
    address: str
    agents: frozenset[str]

    @property
    def own_addresses(self) -> frozenset[str]:
        return self.agents | {self.address}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Ingestor:
    """Drains a MailSource into tickets."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        desk: DeskIdentity,
        parse_many: ParseMany,
        clock: Clock,
    ) -> None:
        self.uow = uow
        self.desk = desk
        self.parse_many = parse_many
        self.clock = clock

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
        for batch in source.fetch(uids):
            stats.add(self.ingest_batch(source.key, uidvalidity, batch))
            last_uid = batch[-1].uid
            if stop is not None and stop.is_set():
                break
        if last_uid:
            stats.archived = source.archive(last_uid)
        return stats

    def ingest_batch(self, mailbox: str, uidvalidity: int, batch: list[FetchedMail]) -> IngestStats:
        """Store one FETCH batch and advance the cursor, all in one transaction."""
        stats = IngestStats(batches=1)
        parsed = self.parse_many([m.raw for m in batch])
        now = self.clock()
        with self.uow() as store:
            for fetched, mail in zip(batch, parsed, strict=True):
                self._one(store, mailbox, uidvalidity, fetched, mail, now, stats)
            store.set_cursor(mailbox, Cursor(uidvalidity, batch[-1].uid), now)
            store.commit()
        return stats

    def _one(
        self,
        store: TicketStore,
        mailbox: str,
        uidvalidity: int,
        fetched: FetchedMail,
        mail: ParsedMail | BaseException,
        now: datetime,
        stats: IngestStats,
    ) -> None:
        if isinstance(mail, BaseException):
            error = f"cannot parse: {_describe(mail)}"
        else:
            try:
                with store.savepoint():
                    self._store(store, mailbox, uidvalidity, fetched, mail, now, stats)
                return
            except Exception as exc:  # one bad message never stops the desk
                log.exception("%s UID %d: processing failed", mailbox, fetched.uid)
                error = f"cannot process: {_describe(exc)}"
        log.warning("%s UID %d quarantined: %s", mailbox, fetched.uid, error)
        store.quarantine(fetched, mailbox=mailbox, uidvalidity=uidvalidity, error=error, now=now)
        stats.quarantined += 1

    def _store(
        self,
        store: TicketStore,
        mailbox: str,
        uidvalidity: int,
        fetched: FetchedMail,
        mail: ParsedMail,
        now: datetime,
        stats: IngestStats,
    ) -> int:
        key = dedup_key(mail, fetched.raw)
        existing = store.find_delivery(mailbox, key)
        if existing is not None:
            store.record_duplicate(existing, mailbox, uidvalidity, fetched.uid, now)
            stats.duplicates += 1
            return existing
        row_id = self.file_message(store, mailbox, uidvalidity, fetched, mail, key, now, stats)
        stats.stored += 1
        return row_id

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
            stats = IngestStats()
            row_id = self._store(
                store, item.mailbox, item.uidvalidity, item.fetched, mail, now, stats
            )
            store.mark_replayed(item_id, row_id, now)
            store.commit()
        return row_id

    def file_message(
        self,
        store: TicketStore,
        mailbox: str,
        uidvalidity: int,
        fetched: FetchedMail,
        mail: ParsedMail,
        key: str,
        now: datetime,
        stats: IngestStats,
    ) -> int:
        """Thread `mail` onto a ticket (or open one) and store it; returns the message row id."""
        refs = mail.thread_references()
        known = store.tickets_for_message_ids(refs) if refs else {}
        related = None
        if not known:  # out of order: a reply to this mail, or a sibling, arrived first
            own = (mail.message_id,) if mail.message_id else ()
            by_parent = store.tickets_by_parent((*own, *refs))
            related = next((by_parent[m] for m in (*own, *refs) if m in by_parent), None)
        decision = decide(mail, self.desk.product, known, store.participants, related)
        sender = mail.sender.email if mail.sender else ""
        if decision.ticket is None:
            ticket = store.create_ticket(
                subject=strip_tag(mail.subject, self.desk.product) or "(no subject)",
                requester=sender,
                requester_name=mail.sender.name if mail.sender else "",
                created_at=fetched.internaldate,
            )
            requester = sender
            stats.new_tickets += 1
            stats.ticket_numbers.append(ticket)
        else:
            ticket = decision.ticket
            requester = store.requester(ticket)
        store.add_participants(
            ticket, new_participants(mail, requester, self.desk.own_addresses), requester
        )
        kind = "agent" if sender in self.desk.agents else "customer"
        row_id = store.add_incoming(
            ticket,
            mail,
            kind=kind,
            automatic=automatic_reason(mail),
            fetched=fetched,
            mailbox=mailbox,
            uidvalidity=uidvalidity,
            dedup_key=key,
            now=now,
        )
        log.debug("%s UID %d -> ticket %d (%s)", mailbox, fetched.uid, ticket, decision.reason)
        return row_id
