"""SQLAlchemy implementation of the TicketStore port; one instance is one transaction.

The ingest path runs thousands of statements a second, so it uses SQLAlchemy Core with
statements built once and bound parameters (the ORM's per-call statement building and
cache-key work cost more than SQLite itself).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from email.utils import getaddresses
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError

from supportd.adapters.db import tables
from supportd.adapters.db.engine import DURABLE
from supportd.domain.mail import Address, Cursor, FetchedMail, QuarantinedMail
from supportd.domain.team import TicketState
from supportd.domain.threads import Seen
from supportd.errors import FencedError
from supportd.services.records import (
    Deferred,
    IncomingMessage,
    NewTicket,
    OutgoingCopy,
    Payload,
    QueuedMail,
)

_tickets = tables.tickets
_messages = tables.messages
_participants = tables.participants
_mailboxes = tables.mailbox_state
_quarantine = tables.quarantine
_duplicates = tables.duplicate_deliveries
_outbox = tables.outbox
_suppressions = tables.suppressions

_GET_CURSOR = select(_mailboxes.c.uidvalidity, _mailboxes.c.last_uid).where(
    _mailboxes.c.mailbox == bindparam("mb")
)
# Fenced: only under the owner's epoch, and never backwards within one UIDVALIDITY.
_FENCED_CURSOR = (
    update(_mailboxes)
    .where(
        _mailboxes.c.mailbox == bindparam("mb"),
        _mailboxes.c.owner_epoch == bindparam("epoch"),
        (_mailboxes.c.uidvalidity != bindparam("uidvalidity"))
        | (_mailboxes.c.last_uid <= bindparam("last_uid")),
    )
    .values(
        uidvalidity=bindparam("uidvalidity"),
        last_uid=bindparam("last_uid"),
        updated_at=bindparam("updated_at"),
    )
)
_UPDATE_CURSOR = (
    update(_mailboxes)
    .where(_mailboxes.c.mailbox == bindparam("mb"))
    .values(
        uidvalidity=bindparam("uidvalidity"),
        last_uid=bindparam("last_uid"),
        updated_at=bindparam("updated_at"),
    )
)
_FIND_DELIVERIES = select(_messages.c.dedup_key, _messages.c.id).where(
    _messages.c.mailbox == bindparam("mb"),
    _messages.c.dedup_key.in_(bindparam("keys", expanding=True)),
)
_SEEN = (
    _messages.c.ticket_number,
    _messages.c.direction,
    _messages.c.from_addr,
    _messages.c.to_addrs,
    _messages.c.cc_addrs,
)
_SEEN_BY_IDS = (
    select(_messages.c.message_id, *_SEEN)
    .where(_messages.c.message_id.in_(bindparam("ids", expanding=True)))
    .order_by(_messages.c.id)
)
_SEEN_BY_PARENT = (
    select(_messages.c.parent_message_id, *_SEEN)
    .where(_messages.c.parent_message_id.in_(bindparam("ids", expanding=True)))
    .order_by(_messages.c.id.desc())
)
_REQUESTER = select(_tickets.c.requester).where(_tickets.c.number == bindparam("ticket"))
_STATE = select(
    _tickets.c.number,
    _tickets.c.subject,
    _tickets.c.requester,
    _tickets.c.requester_name,
    _tickets.c.status,
    _tickets.c.category,
    _tickets.c.first_response_due,
    _tickets.c.assignee,
    _tickets.c.closed_at,
    _tickets.c.continues,
    _tickets.c.first_responded_at,
    _tickets.c.clock_started_at,
    _tickets.c.clock_first,
    _tickets.c.clock_paused,
    _tickets.c.clock_paused_since,
    _tickets.c.escalation_level,
)
_TICKET_STATES = _STATE.where(_tickets.c.number.in_(bindparam("tickets", expanding=True)))
_PARTICIPANTS_MANY = select(_participants.c.ticket_number, _participants.c.address).where(
    _participants.c.ticket_number.in_(bindparam("tickets", expanding=True))
)
_LATEST_CUSTOMER = (
    select(_messages.c.message_id, _messages.c.references)
    .where(
        _messages.c.ticket_number == bindparam("ticket"),
        _messages.c.direction == "in",
        _messages.c.kind == "customer",
        _messages.c.untrusted == "",
        # The requester's or a participant's: answers are never threaded to a stranger.
        _messages.c.from_addr.in_(
            select(_participants.c.address).where(
                _participants.c.ticket_number == bindparam("ticket")
            )
        ),
    )
    .order_by(_messages.c.id.desc())
    .limit(1)
)
# RETURNING in parameter order: one statement for a whole batch (insertmanyvalues).
_INSERT_TICKETS = insert(_tickets).returning(_tickets.c.number, sort_by_parameter_order=True)
_INSERT_MESSAGES = insert(_messages)
_TOUCH_TICKET = (
    update(_tickets)
    .where(_tickets.c.number == bindparam("ticket"))
    .values(
        updated_at=bindparam("updated_at"),
        message_count=_tickets.c.message_count + bindparam("n"),
    )
)
_REOPEN_TICKET = _TOUCH_TICKET.values(status="open")
_INSERT_QUARANTINE = insert(_quarantine).returning(_quarantine.c.id)
_INSERT_OUTBOX = insert(_outbox)
_MAX_ID = {table: select(func.coalesce(func.max(table.c.id), 0)) for table in (_outbox, _messages)}
_NEXT_IDS = {
    table: text(
        f"SELECT nextval(pg_get_serial_sequence('{table.name}', 'id')) FROM generate_series(1, :n)"
    )
    for table in (_outbox, _messages)
}
_ACKS_SINCE = select(func.count()).where(
    _outbox.c.recipients == bindparam("address"),
    _outbox.c.kind == "auto_reply",
    _outbox.c.created_at >= bindparam("since"),
)
_SUPPRESSED_UNTIL = select(_suppressions.c.until).where(
    _suppressions.c.address == bindparam("address")
)
_ACKS_SINCE_MANY = (
    select(_outbox.c.recipients, func.count())
    .where(
        _outbox.c.recipients.in_(bindparam("addresses", expanding=True)),
        _outbox.c.kind == "auto_reply",
        _outbox.c.created_at >= bindparam("since"),
    )
    .group_by(_outbox.c.recipients)
)
_SUPPRESSED_MANY = select(_suppressions.c.address, _suppressions.c.until).where(
    _suppressions.c.address.in_(bindparam("addresses", expanding=True))
)


def state_from(row: Any) -> TicketState:
    """A ticket's state from anything with the tickets columns as attributes (a result row,
    or the ORM object the read side holds)."""
    return TicketState(
        number=row.number,
        subject=row.subject,
        requester=row.requester,
        requester_name=row.requester_name,
        status=row.status,
        category=row.category,
        due=row.first_response_due,
        assignee=row.assignee,
        closed_at=row.closed_at,
        continues=row.continues,
        first_responded_at=row.first_responded_at,
        clock_started_at=row.clock_started_at,
        clock_first=bool(row.clock_first),
        clock_paused=float(row.clock_paused or 0.0),
        clock_paused_since=row.clock_paused_since,
        escalation_level=int(row.escalation_level or 0),
    )


T = TypeVar("T")


def _chunks(values: list[T], size: int = 500) -> Iterator[list[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


log = logging.getLogger(__name__)


class Statistics:
    """Keeps PostgreSQL's planner statistics up with a backlog.

    The ingest's lookups (deliveries by key, tickets by Message-ID) are planned from the
    tables' statistics. Tables that grow from empty during one backlog keep the statistics
    of empty tables until autovacuum comes round (a minute at the soonest), and the planner
    then reads every row of the mailbox for each batch: 6 ms per lookup at 20,000 rows
    instead of 0.4 ms, growing with the table (issue 9's PostgreSQL profile). So the ingest
    runs ANALYZE itself after a commit whenever its tables may have doubled since it last
    did: a few times in a backlog (each ~0.1 s), never on a desk that is merely busy.
    """

    # The columns the ingest and the senders look rows up by: ANALYZE of whole rows read
    # the mail itself (raw, text) and cost 6 % of PostgreSQL's active time in a backlog.
    TABLES = (
        "messages (mailbox, dedup_key, message_id, parent_message_id, ticket_number)",
        "tickets (number, next_event_at, next_response_due)",
        "participants (ticket_number, address)",
        "outbox (status, next_attempt_at, id, recipients, kind, created_at)",
    )
    FLOOR = 1000  # rows inserted before the first ANALYZE of a small database

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.inserted = 0
        self.known: float | None = None  # rows the last statistics knew of (None: unread)

    def added(self, rows: int) -> None:
        with self._lock:
            self.inserted += rows

    def after_commit(self, conn: Connection) -> None:
        # SQLite plans from its indexes without statistics.
        if self.inserted < self.FLOOR or conn.dialect.name != "postgresql":
            return
        try:
            if self.known is None:
                reltuples = conn.execute(
                    text("SELECT reltuples FROM pg_class WHERE oid = 'messages'::regclass")
                ).scalar_one()
                self.known = max(0.0, float(reltuples))
                conn.commit()
            if self.inserted < max(self.FLOOR, self.known):
                return
            # Never held up behind a long lock (an autovacuum, a migration): next time.
            conn.execute(text("SET LOCAL lock_timeout = '2s'"))
            conn.execute(text("ANALYZE " + ", ".join(self.TABLES)))
            conn.commit()
        except DBAPIError as exc:
            conn.rollback()
            with self._lock:  # tried again once as many rows more have come
                self.known = (self.known or 0.0) + self.inserted
                self.inserted = 0
            log.warning("cannot ANALYZE the desk's tables now (%s); trying later", exc.orig)
            return
        with self._lock:
            self.known += self.inserted
            self.inserted = 0


class SqlTicketStore:
    """Repository methods over one Connection in a transaction; the service commits."""

    def __init__(self, conn: Connection, statistics: Statistics | None = None) -> None:
        self.conn = conn
        self.statistics = statistics

    def get_cursor(self, mailbox: str) -> Cursor | None:
        row = self.conn.execute(_GET_CURSOR, {"mb": mailbox}).first()
        if row is None or not row.uidvalidity:  # 0: claimed by an owner, never read
            return None
        return Cursor(row.uidvalidity, row.last_uid)

    def set_cursor(
        self, mailbox: str, cursor: Cursor, now: datetime, epoch: int | None = None
    ) -> None:
        """Advance the cursor; with `epoch`, only while that owner still owns the mailbox."""
        values = {"uidvalidity": cursor.uidvalidity, "last_uid": cursor.last_uid, "updated_at": now}
        if epoch is not None:
            if self.conn.execute(
                _FENCED_CURSOR, {"mb": mailbox, "epoch": epoch, **values}
            ).rowcount:
                return
            raise FencedError(
                f"{mailbox}: another process took the mailbox over (this one's epoch {epoch} "
                "is stale); the batch is rolled back"
            )
        if self.conn.execute(_UPDATE_CURSOR, {"mb": mailbox, **values}).rowcount == 0:
            self.conn.execute(insert(_mailboxes), {"mailbox": mailbox, **values})

    def claim_mailbox(self, mailbox: str, owner: str, now: datetime) -> int:
        """Start a new ownership epoch (the caller holds the mailbox lock); returns it."""
        bumped = self.conn.execute(
            update(_mailboxes)
            .where(_mailboxes.c.mailbox == mailbox)
            .values(owner_epoch=_mailboxes.c.owner_epoch + 1, owner=owner[:300])
            .returning(_mailboxes.c.owner_epoch)
        ).scalar()
        if bumped is not None:
            return int(bumped)
        self.conn.execute(
            insert(_mailboxes),
            {
                "mailbox": mailbox,
                "uidvalidity": 0,
                "last_uid": 0,
                "updated_at": now,
                "owner_epoch": 1,
                "owner": owner[:300],
            },
        )
        return 1

    def archive_pending(self, mailbox: str) -> tuple[int, int]:
        row = self.conn.execute(
            select(_mailboxes.c.archive_pending_uid, _mailboxes.c.archive_dest_uidnext).where(
                _mailboxes.c.mailbox == mailbox
            )
        ).first()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def set_archive_pending(
        self, mailbox: str, uid: int, dest_uidnext: int, epoch: int | None
    ) -> None:
        condition = _mailboxes.c.mailbox == mailbox
        if epoch is not None:
            condition = condition & (_mailboxes.c.owner_epoch == epoch)
        done = self.conn.execute(
            update(_mailboxes)
            .where(condition)
            .values(archive_pending_uid=uid, archive_dest_uidnext=dest_uidnext)
        ).rowcount
        if not done and epoch is not None:
            raise FencedError(f"{mailbox}: another process took the mailbox over")

    def find_deliveries(self, mailbox: str, dedup_keys: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk in _chunks(sorted(set(dedup_keys))):
            rows = self.conn.execute(_FIND_DELIVERIES, {"mb": mailbox, "keys": chunk})
            found.update({key: row_id for key, row_id in rows})
        return found

    def seen_by_message_ids(self, message_ids: Sequence[str]) -> dict[str, Seen]:
        found: dict[str, Seen] = {}
        for chunk in _chunks(list(message_ids)):
            for mid, *seen in self.conn.execute(_SEEN_BY_IDS, {"ids": chunk}):
                if mid not in found:
                    found[mid] = _seen(*seen)
        return found

    def seen_by_parent(self, message_ids: Sequence[str]) -> dict[str, list[Seen]]:
        found: dict[str, list[Seen]] = {}
        for chunk in _chunks(list(message_ids)):
            for parent, *seen in self.conn.execute(_SEEN_BY_PARENT, {"ids": chunk}):
                found.setdefault(parent, []).append(_seen(*seen))
        return found

    def participants(self, ticket: int) -> frozenset[str]:
        return self.participants_many([ticket]).get(ticket, frozenset())

    def requester(self, ticket: int) -> str:
        return str(self.conn.execute(_REQUESTER, {"ticket": ticket}).scalar_one())

    def ticket_state(self, ticket: int) -> TicketState | None:
        return self.ticket_states([ticket]).get(ticket)

    def ticket_states(self, tickets: Sequence[int]) -> dict[int, TicketState]:
        found: dict[int, TicketState] = {}
        for chunk in _chunks(sorted(set(tickets))):
            for row in self.conn.execute(_TICKET_STATES, {"tickets": chunk}):
                found[row.number] = state_from(row)
        return found

    def participants_many(self, tickets: Sequence[int]) -> dict[int, frozenset[str]]:
        found: dict[int, set[str]] = {}
        for chunk in _chunks(sorted(set(tickets))):
            for number, address in self.conn.execute(_PARTICIPANTS_MANY, {"tickets": chunk}):
                found.setdefault(number, set()).add(address)
        return {number: frozenset(addresses) for number, addresses in found.items()}

    def due_clocks(self, now: datetime, limit: int) -> list[TicketState]:
        """Tickets whose next escalation event is due (one indexed range scan); on
        PostgreSQL the rows stay locked until commit, and other scanners skip them."""
        query = (
            _STATE.where(_tickets.c.next_event_at <= now)
            .order_by(_tickets.c.next_event_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [state_from(row) for row in self.conn.execute(query)]

    def latest_customer_message(self, ticket: int) -> tuple[str | None, tuple[str, ...]] | None:
        row = self.conn.execute(_LATEST_CUSTOMER, {"ticket": ticket}).first()
        if row is None:
            return None
        return row.message_id, tuple(row.references.split())

    def update_tickets(self, changes: Sequence[tuple[int, Mapping[str, object]]]) -> None:
        for number, values in changes:
            values = dict(values)
            responded = values.pop("first_responded_at", None)
            statement = update(_tickets).where(_tickets.c.number == number)
            if responded is not None:  # the first answer only
                statement = statement.values(
                    first_responded_at=func.coalesce(_tickets.c.first_responded_at, responded)
                )
            if values:
                statement = statement.values(**values)
            if values or responded is not None:
                self.conn.execute(statement)

    @property
    def new_ticket_columns(self) -> frozenset[str]:
        return NEW_TICKET_COLUMNS

    def insert_tickets(
        self, tickets: Sequence[tuple[NewTicket, Mapping[str, object]]], now: datetime
    ) -> list[int]:
        """New tickets, each with the column values its chunk set (the clock's, say), in
        one statement; returns their numbers in order."""
        if not tickets:
            return []
        rows = [{**_ticket_row(t, now), **dict(extra)} for t, extra in tickets]
        result = self.conn.execute(_INSERT_TICKETS, rows)
        return [int(n) for n in result.scalars()]

    def insert_messages(self, messages: Sequence[IncomingMessage]) -> list[int]:
        """Each message's row id is taken first (a plain executemany is much cheaper than
        RETURNING in bulk) and set on it, so rows written with it can refer to it."""
        if not messages:
            return []
        ids = self._new_ids(_messages, len(messages))
        for message, row_id in zip(messages, ids, strict=True):
            message.row_id = row_id
        self.conn.execute(_INSERT_MESSAGES, [_incoming_row(m) for m in messages])
        if self.statistics is not None:
            self.statistics.added(len(messages))
        return ids

    def insert_copies(self, copies: Sequence[OutgoingCopy]) -> None:
        if copies:
            self.conn.execute(insert(_messages), [_copy_row(c) for c in copies])

    def insert_participants(self, rows: Sequence[tuple[int, str, str]]) -> None:
        """(ticket, address, role) rows."""
        if rows:
            self.conn.execute(
                insert(_participants),
                [{"ticket_number": t, "address": a, "role": r} for t, a, r in rows],
            )

    def insert_duplicates(
        self, rows: Sequence[tuple[int, int]], mailbox: str, uidvalidity: int, now: datetime
    ) -> None:
        """(stored message row, UID of the repeated delivery) rows."""
        if rows:
            self.conn.execute(
                insert(_duplicates),
                [
                    {
                        "message_row_id": row_id,
                        "mailbox": mailbox,
                        "uidvalidity": uidvalidity,
                        "uid": uid,
                        "created_at": now,
                    }
                    for row_id, uid in rows
                ],
            )

    def touch_tickets(self, changes: Sequence[tuple[int, int, bool]], now: datetime) -> None:
        for reopen, statement in ((True, _REOPEN_TICKET), (False, _TOUCH_TICKET)):
            params = [
                {"ticket": ticket, "n": count, "updated_at": now}
                for ticket, count, flag in changes
                if flag is reopen
            ]
            if params:
                self.conn.execute(statement, params)

    def acknowledgements_since(self, address: str, since: datetime) -> int:
        return int(
            self.conn.execute(_ACKS_SINCE, {"address": address, "since": since}).scalar_one()
        )

    def suppressed_until(self, address: str) -> datetime | None:
        return self.conn.execute(_SUPPRESSED_UNTIL, {"address": address}).scalar()

    def acknowledgements_since_many(
        self, addresses: Sequence[str], since: datetime
    ) -> dict[str, int]:
        rows = self.conn.execute(_ACKS_SINCE_MANY, {"addresses": list(addresses), "since": since})
        return {address: int(n) for address, n in rows}

    def suppressed_until_many(self, addresses: Sequence[str]) -> dict[str, datetime]:
        rows = self.conn.execute(_SUPPRESSED_MANY, {"addresses": list(addresses)})
        return {address: until for address, until in rows}

    def add_suppressions(self, rows: Sequence[tuple[str, datetime, str]], now: datetime) -> None:
        if not rows:
            return
        addresses = [address for address, _, _ in rows]
        self.conn.execute(delete(_suppressions).where(_suppressions.c.address.in_(addresses)))
        self.conn.execute(
            insert(_suppressions),
            [
                {"address": a, "until": until, "reason": reason[:2000], "created_at": now}
                for a, until, reason in rows
            ],
        )

    def outbox_ids(self, count: int) -> list[int]:
        return self._new_ids(_outbox, count)

    def _new_ids(self, table: Any, count: int) -> list[int]:
        """`count` new row ids of `table`, increasing, never handed out before."""
        if count <= 0:
            return []
        if self.conn.dialect.name == "postgresql":  # the sequence: safe beside other writers
            return sorted(
                int(n) for n in self.conn.execute(_NEXT_IDS[table], {"n": count}).scalars()
            )
        # SQLite gives a new row max(id) + 1; the ingest transaction took the database's one
        # write lock when it began (BEGIN IMMEDIATE), so nobody else can meanwhile.
        top = int(self.conn.execute(_MAX_ID[table]).scalar_one())
        return list(range(top + 1, top + 1 + count))

    def insert_outbox(self, rows: Sequence[tuple[int, QueuedMail, str, Payload]]) -> None:
        if not rows:
            return
        self.conn.execute(
            _INSERT_OUTBOX,
            [
                {
                    "id": row_id,
                    "ticket_number": m.ticket,
                    "kind": m.kind,
                    "message_id": message_id,
                    "sender": m.sender,
                    "recipients": m.recipient,
                    "raw": b"" if isinstance(payload, Deferred) else payload,
                    # With text_of, the text follows from that row (adapters/db/outbox).
                    "intent": _intent(payload, m.text_of),
                    "text_of": m.text_of,
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": m.queued_at,
                    "last_error": "",
                    "created_at": m.queued_at,
                }
                for row_id, m, message_id, payload in rows
            ],
        )

    def quarantine(
        self, fetched: FetchedMail, *, mailbox: str, uidvalidity: int, error: str, now: datetime
    ) -> int:
        result = self.conn.execute(
            _INSERT_QUARANTINE,
            {
                "mailbox": mailbox,
                "uidvalidity": uidvalidity,
                "uid": fetched.uid,
                "internaldate": fetched.internaldate,
                "error": error[:4000],
                "raw": fetched.raw,
                "created_at": now,
                "replayed_at": None,
                "message_row_id": None,
            },
        )
        return int(result.scalar_one())

    def quarantined(self, item_id: int) -> QuarantinedMail | None:
        row = self.conn.execute(select(_quarantine).where(_quarantine.c.id == item_id)).first()
        if row is None:
            return None
        return QuarantinedMail(
            id=row.id,
            fetched=FetchedMail(row.uid, row.internaldate, row.raw),
            mailbox=row.mailbox,
            uidvalidity=row.uidvalidity,
            replayed_at=row.replayed_at,
        )

    def mark_replayed(self, item_id: int, row_id: int | None, now: datetime) -> None:
        self.conn.execute(
            update(_quarantine)
            .where(_quarantine.c.id == item_id)
            .values(replayed_at=now, message_row_id=row_id)
        )

    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        with self.conn.begin_nested():
            yield

    def savepoint(self) -> AbstractContextManager[None]:
        return self._savepoint()

    def commit(self) -> None:
        self.conn.commit()
        if self.statistics is not None:
            self.statistics.after_commit(self.conn)


def _intent(payload: Payload, text_of: int | None) -> str | None:
    if not isinstance(payload, Deferred):
        return None
    return payload.intent if text_of is not None else payload.whole


def _addresses(addresses: tuple[Address, ...]) -> str:
    return ", ".join(str(a) for a in addresses)


def _seen(ticket: int, direction: str, author: str, to: str, cc: str) -> Seen:
    addressed = frozenset(a.lower() for _, a in getaddresses([to, cc]) if "@" in a)
    return Seen(ticket, direction == "out", author, addressed)


# Every new ticket's row has these columns, so the tickets go in one executemany.
_NEW_TICKET_CLOCK: dict[str, object] = {
    "clock_started_at": None,
    "clock_first": True,
    "clock_paused": 0.0,
    "clock_paused_since": None,
    "next_response_due": None,
    "next_event_at": None,
}


def _ticket_row(t: NewTicket, now: datetime) -> dict[str, object]:
    return {
        "subject": t.subject,
        "requester": t.requester,
        "requester_name": t.requester_name,
        "status": "open",
        "category": t.category,
        "category_predicted": t.category,
        "first_response_due": t.due,
        "created_at": t.created_at,
        "updated_at": max(t.created_at, now),
        "escalation_level": 0,
        "message_count": t.message_count,
        "continues": t.continues,
        **_NEW_TICKET_CLOCK,
    }


# What a new ticket's INSERT carries: a chunk's changes to only these fit in it.
NEW_TICKET_COLUMNS = frozenset(_NEW_TICKET_CLOCK) | {
    "subject",
    "requester",
    "requester_name",
    "status",
    "category",
    "category_predicted",
    "first_response_due",
    "created_at",
    "updated_at",
    "escalation_level",
    "message_count",
    "continues",
}


def _incoming_row(m: IncomingMessage) -> dict[str, object]:
    mail, fetched = m.mail, m.fetched
    return {
        "id": m.row_id,
        "ticket_number": m.ticket,
        "direction": m.direction,
        "kind": m.kind,
        "from_addr": mail.sender.email if mail.sender else "",
        "from_name": mail.sender.name if mail.sender else "",
        "to_addrs": _addresses(mail.to),
        "cc_addrs": _addresses(mail.cc),
        "subject": mail.subject,
        "message_id": mail.message_id,
        "in_reply_to": " ".join(mail.in_reply_to),
        "parent_message_id": next(iter(mail.thread_references()), None),
        "references": " ".join(mail.references),
        "date": fetched.internaldate,
        "header_date": mail.date_header,
        "text": m.stored_text,
        "text_of": None,
        "mailbox": m.mailbox,
        "uidvalidity": m.uidvalidity,
        "uid": fetched.uid,
        "dedup_key": m.dedup_key,
        "automatic": m.automatic[:200],
        "reply_decision": m.reply_decision,
        "defects": " ".join(mail.defects)[:2000],
        "size": len(fetched.raw),
        "raw": fetched.raw,
        "created_at": m.stored_at,
        "untrusted": m.untrusted,
    }


def _copy_row(c: OutgoingCopy) -> dict[str, object]:
    return {
        "ticket_number": c.ticket,
        "direction": "out",
        "kind": c.kind,
        "from_addr": c.sender,
        "from_name": "",
        "to_addrs": c.to or c.recipient,
        "cc_addrs": c.cc,
        "subject": c.subject,
        "message_id": c.message_id,
        "in_reply_to": c.in_reply_to,
        "parent_message_id": None,
        "references": "",
        "date": c.created_at,
        "header_date": "",
        "text": c.text,
        "text_of": c.text_of,
        "mailbox": None,
        "uidvalidity": None,
        "uid": None,
        "dedup_key": None,
        "automatic": "",
        "reply_decision": "",
        "defects": "",
        "size": c.size,
        "raw": b"",  # the bytes sent are the outbox row's; one copy is enough
        "created_at": c.created_at,
        "untrusted": "",
    }


def transactions(
    engine: Engine, wrap: Callable[[Connection], T]
) -> Callable[..., AbstractContextManager[T]]:
    """A factory of writer transactions: `with uow() as x: ...; x.commit()`; else rollback.
    `uow(durable=False)`: its commit may return before the disk has it (engine.DURABLE)."""
    writer = engine.execution_options(writer=True)
    relaxed = engine.execution_options(writer=True, **{DURABLE: False})

    @contextmanager
    def _uow(durable: bool = True) -> Iterator[T]:
        with (writer if durable else relaxed).connect() as conn:
            try:
                yield wrap(conn)
            finally:
                if conn.in_transaction():
                    conn.rollback()

    return _uow


def unit_of_work(engine: Engine) -> Callable[..., AbstractContextManager[SqlTicketStore]]:
    """Transactions for ingestion (which keeps PostgreSQL's statistics up, see Statistics)."""
    statistics = Statistics()
    return transactions(engine, lambda conn: SqlTicketStore(conn, statistics))
