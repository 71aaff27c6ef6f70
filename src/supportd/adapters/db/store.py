"""SQLAlchemy implementation of the TicketStore port; one instance is one transaction.

The ingest path runs thousands of statements a second, so it uses SQLAlchemy Core with
statements built once and bound parameters (the ORM's per-call statement building and
cache-key work cost more than SQLite itself).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime

from sqlalchemy import Connection, Engine, bindparam, insert, select, update

from supportd.adapters.db.models import (
    DuplicateDelivery,
    MailboxState,
    MessageRow,
    Participant,
    QuarantineItem,
    Ticket,
)
from supportd.domain.mail import Address, Cursor, FetchedMail, ParsedMail, QuarantinedMail

_tickets = Ticket.__table__
_messages = MessageRow.__table__
_participants = Participant.__table__
_mailboxes = MailboxState.__table__
_quarantine = QuarantineItem.__table__
_duplicates = DuplicateDelivery.__table__

_GET_CURSOR = select(_mailboxes.c.uidvalidity, _mailboxes.c.last_uid).where(
    _mailboxes.c.mailbox == bindparam("mb")
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
_FIND_DELIVERY = (
    select(_messages.c.id)
    .where(_messages.c.mailbox == bindparam("mb"), _messages.c.dedup_key == bindparam("key"))
    .limit(1)
)
_TICKETS_FOR_IDS = select(_messages.c.message_id, _messages.c.ticket_number).where(
    _messages.c.message_id.in_(bindparam("ids", expanding=True))
)
_TICKETS_BY_PARENT = (
    select(_messages.c.parent_message_id, _messages.c.ticket_number)
    .where(_messages.c.parent_message_id.in_(bindparam("ids", expanding=True)))
    .order_by(_messages.c.id.desc())
)
_PARTICIPANTS = select(_participants.c.address).where(
    _participants.c.ticket_number == bindparam("ticket")
)
_REQUESTER = select(_tickets.c.requester).where(_tickets.c.number == bindparam("ticket"))
_CREATE_TICKET = insert(_tickets).returning(_tickets.c.number)
_INSERT_MESSAGE = insert(_messages).returning(_messages.c.id)
_TOUCH_TICKET = (
    update(_tickets)
    .where(_tickets.c.number == bindparam("ticket"))
    .values(updated_at=bindparam("updated_at"), message_count=_tickets.c.message_count + 1)
)
_REOPEN_TICKET = (
    update(_tickets)
    .where(_tickets.c.number == bindparam("ticket"))
    .values(
        updated_at=bindparam("updated_at"),
        message_count=_tickets.c.message_count + 1,
        status="open",
    )
)
_INSERT_QUARANTINE = insert(_quarantine).returning(_quarantine.c.id)


def _addrs(addresses: Sequence[Address]) -> str:
    return ", ".join(str(a) for a in addresses)


class SqlTicketStore:
    """Repository methods over one Connection in a transaction; the service commits."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def get_cursor(self, mailbox: str) -> Cursor | None:
        row = self.conn.execute(_GET_CURSOR, {"mb": mailbox}).first()
        return Cursor(row.uidvalidity, row.last_uid) if row else None

    def set_cursor(self, mailbox: str, cursor: Cursor, now: datetime) -> None:
        values = {"uidvalidity": cursor.uidvalidity, "last_uid": cursor.last_uid, "updated_at": now}
        if self.conn.execute(_UPDATE_CURSOR, {"mb": mailbox, **values}).rowcount == 0:
            self.conn.execute(insert(_mailboxes), {"mailbox": mailbox, **values})

    def find_delivery(self, mailbox: str, dedup_key: str) -> int | None:
        return self.conn.execute(_FIND_DELIVERY, {"mb": mailbox, "key": dedup_key}).scalar()

    def record_duplicate(
        self, row_id: int, mailbox: str, uidvalidity: int, uid: int, now: datetime
    ) -> None:
        self.conn.execute(
            insert(_duplicates),
            {
                "message_row_id": row_id,
                "mailbox": mailbox,
                "uidvalidity": uidvalidity,
                "uid": uid,
                "created_at": now,
            },
        )

    def tickets_for_message_ids(self, message_ids: Sequence[str]) -> dict[str, int]:
        if not message_ids:
            return {}
        rows = self.conn.execute(_TICKETS_FOR_IDS, {"ids": list(message_ids)})
        return {mid: number for mid, number in rows if mid is not None}

    def tickets_by_parent(self, message_ids: Sequence[str]) -> dict[str, int]:
        if not message_ids:
            return {}
        rows = self.conn.execute(_TICKETS_BY_PARENT, {"ids": list(message_ids)})
        return {parent: number for parent, number in rows if parent is not None}

    def participants(self, ticket: int) -> frozenset[str]:
        return frozenset(self.conn.execute(_PARTICIPANTS, {"ticket": ticket}).scalars())

    def requester(self, ticket: int) -> str:
        return str(self.conn.execute(_REQUESTER, {"ticket": ticket}).scalar_one())

    def create_ticket(
        self, *, subject: str, requester: str, requester_name: str, created_at: datetime
    ) -> int:
        result = self.conn.execute(
            _CREATE_TICKET,
            {
                "subject": subject,
                "requester": requester,
                "requester_name": requester_name,
                "status": "open",
                "category": "other",
                "created_at": created_at,
                "updated_at": created_at,
                "escalation_level": 0,
                "message_count": 0,
            },
        )
        return int(result.scalar_one())

    def add_participants(self, ticket: int, addresses: frozenset[str], requester: str) -> None:
        if not addresses:
            return
        new = addresses - self.participants(ticket)
        if new:
            self.conn.execute(
                insert(_participants),
                [
                    {
                        "ticket_number": ticket,
                        "address": a,
                        "role": "requester" if a == requester else "cc",
                    }
                    for a in sorted(new)
                ],
            )

    def add_incoming(
        self,
        ticket: int,
        mail: ParsedMail,
        *,
        kind: str,
        automatic: str,
        fetched: FetchedMail,
        mailbox: str,
        uidvalidity: int,
        dedup_key: str,
        now: datetime,
    ) -> int:
        result = self.conn.execute(
            _INSERT_MESSAGE,
            {
                "ticket_number": ticket,
                "direction": "in",
                "kind": kind,
                "from_addr": mail.sender.email if mail.sender else "",
                "from_name": mail.sender.name if mail.sender else "",
                "to_addrs": _addrs(mail.to),
                "cc_addrs": _addrs(mail.cc),
                "subject": mail.subject,
                "message_id": mail.message_id,
                "in_reply_to": " ".join(mail.in_reply_to),
                "parent_message_id": next(iter(mail.thread_references()), None),
                "references": " ".join(mail.references),
                "date": fetched.internaldate,
                "header_date": mail.date_header,
                "text": mail.text,
                "mailbox": mailbox,
                "uidvalidity": uidvalidity,
                "uid": fetched.uid,
                "dedup_key": dedup_key,
                "automatic": automatic[:200],
                "defects": " ".join(mail.defects)[:2000],
                "size": len(fetched.raw),
                "raw": fetched.raw,
                "created_at": now,
            },
        )
        # A customer writing again puts the ticket back in the queue.
        reopen = kind == "customer" and not automatic
        self.conn.execute(
            _REOPEN_TICKET if reopen else _TOUCH_TICKET,
            {"ticket": ticket, "updated_at": max(fetched.internaldate, now)},
        )
        return int(result.scalar_one())

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


def unit_of_work(engine: Engine) -> Callable[[], AbstractContextManager[SqlTicketStore]]:
    """A factory of transactions: `with uow() as store: ...; store.commit()`; rollback otherwise."""
    writer = engine.execution_options(writer=True)

    @contextmanager
    def _uow() -> Iterator[SqlTicketStore]:
        with writer.connect() as conn:
            try:
                yield SqlTicketStore(conn)
            finally:
                if conn.in_transaction():
                    conn.rollback()

    return _uow
