"""SQLAlchemy implementation of the TicketStore port; one instance is one transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from supportd.adapters.db.models import (
    DuplicateDelivery,
    MailboxState,
    MessageRow,
    Participant,
    QuarantineItem,
    Ticket,
)
from supportd.domain.mail import Address, Cursor, FetchedMail, ParsedMail, QuarantinedMail


def _addrs(addresses: Sequence[Address]) -> str:
    return ", ".join(str(a) for a in addresses)


class SqlTicketStore:
    """Repository methods over one Session; the service decides when to commit."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get_cursor(self, mailbox: str) -> Cursor | None:
        row = self.session.execute(
            select(MailboxState.uidvalidity, MailboxState.last_uid).where(
                MailboxState.mailbox == mailbox
            )
        ).first()
        return Cursor(row.uidvalidity, row.last_uid) if row else None

    def set_cursor(self, mailbox: str, cursor: Cursor, now: datetime) -> None:
        updated = self.session.execute(
            update(MailboxState)
            .where(MailboxState.mailbox == mailbox)
            .values(uidvalidity=cursor.uidvalidity, last_uid=cursor.last_uid, updated_at=now)
        )
        if updated.rowcount == 0:  # type: ignore[attr-defined]
            self.session.execute(
                insert(MailboxState).values(
                    mailbox=mailbox,
                    uidvalidity=cursor.uidvalidity,
                    last_uid=cursor.last_uid,
                    updated_at=now,
                )
            )

    def find_delivery(self, mailbox: str, dedup_key: str) -> int | None:
        return self.session.execute(
            select(MessageRow.id)
            .where(MessageRow.mailbox == mailbox, MessageRow.dedup_key == dedup_key)
            .limit(1)
        ).scalar()

    def record_duplicate(
        self, row_id: int, mailbox: str, uidvalidity: int, uid: int, now: datetime
    ) -> None:
        self.session.execute(
            insert(DuplicateDelivery).values(
                message_row_id=row_id,
                mailbox=mailbox,
                uidvalidity=uidvalidity,
                uid=uid,
                created_at=now,
            )
        )

    def tickets_for_message_ids(self, message_ids: Sequence[str]) -> dict[str, int]:
        if not message_ids:
            return {}
        rows = self.session.execute(
            select(MessageRow.message_id, MessageRow.ticket_number).where(
                MessageRow.message_id.in_(list(message_ids))
            )
        )
        return {mid: number for mid, number in rows if mid is not None}

    def tickets_by_parent(self, message_ids: Sequence[str]) -> dict[str, int]:
        if not message_ids:
            return {}
        rows = self.session.execute(
            select(MessageRow.parent_message_id, MessageRow.ticket_number)
            .where(MessageRow.parent_message_id.in_(list(message_ids)))
            .order_by(MessageRow.id.desc())
        )
        return {parent: number for parent, number in rows if parent is not None}

    def participants(self, ticket: int) -> frozenset[str]:
        rows = self.session.execute(
            select(Participant.address).where(Participant.ticket_number == ticket)
        ).scalars()
        return frozenset(rows)

    def requester(self, ticket: int) -> str:
        return self.session.execute(
            select(Ticket.requester).where(Ticket.number == ticket)
        ).scalar_one()

    def create_ticket(
        self, *, subject: str, requester: str, requester_name: str, created_at: datetime
    ) -> int:
        result = self.session.execute(
            insert(Ticket)
            .values(
                subject=subject,
                requester=requester,
                requester_name=requester_name,
                status="open",
                category="other",
                created_at=created_at,
                updated_at=created_at,
                escalation_level=0,
                message_count=0,
            )
            .returning(Ticket.number)
        )
        return int(result.scalar_one())

    def add_participants(self, ticket: int, addresses: frozenset[str], requester: str) -> None:
        if not addresses:
            return
        known = self.participants(ticket)
        rows = [
            {"ticket_number": ticket, "address": a, "role": "requester" if a == requester else "cc"}
            for a in sorted(addresses - known)
        ]
        if rows:
            self.session.execute(insert(Participant), rows)

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
        result = self.session.execute(
            insert(MessageRow)
            .values(
                ticket_number=ticket,
                direction="in",
                kind=kind,
                from_addr=mail.sender.email if mail.sender else "",
                from_name=mail.sender.name if mail.sender else "",
                to_addrs=_addrs(mail.to),
                cc_addrs=_addrs(mail.cc),
                subject=mail.subject,
                message_id=mail.message_id,
                in_reply_to=" ".join(mail.in_reply_to),
                parent_message_id=next(iter(mail.thread_references()), None),
                references=" ".join(mail.references),
                date=fetched.internaldate,
                header_date=mail.date_header,
                text=mail.text,
                mailbox=mailbox,
                uidvalidity=uidvalidity,
                uid=fetched.uid,
                dedup_key=dedup_key,
                automatic=automatic[:200],
                defects=" ".join(mail.defects)[:2000],
                size=len(fetched.raw),
                raw=fetched.raw,
                created_at=now,
            )
            .returning(MessageRow.id)
        )
        values: dict[str, object] = {
            "updated_at": max(fetched.internaldate, now) if kind == "customer" else now,
            "message_count": Ticket.message_count + 1,
        }
        if kind == "customer" and not automatic:
            # A customer writing again puts the ticket back in the queue.
            values["status"] = "open"
        self.session.execute(update(Ticket).where(Ticket.number == ticket).values(**values))
        return int(result.scalar_one())

    def quarantine(
        self, fetched: FetchedMail, *, mailbox: str, uidvalidity: int, error: str, now: datetime
    ) -> int:
        result = self.session.execute(
            insert(QuarantineItem)
            .values(
                mailbox=mailbox,
                uidvalidity=uidvalidity,
                uid=fetched.uid,
                internaldate=fetched.internaldate,
                error=error[:4000],
                raw=fetched.raw,
                created_at=now,
            )
            .returning(QuarantineItem.id)
        )
        return int(result.scalar_one())

    def quarantined(self, item_id: int) -> QuarantinedMail | None:
        item = self.session.get(QuarantineItem, item_id)
        if item is None:
            return None
        return QuarantinedMail(
            id=item.id,
            fetched=FetchedMail(item.uid, item.internaldate, item.raw),
            mailbox=item.mailbox,
            uidvalidity=item.uidvalidity,
            replayed_at=item.replayed_at,
        )

    def mark_replayed(self, item_id: int, row_id: int | None, now: datetime) -> None:
        self.session.execute(
            update(QuarantineItem)
            .where(QuarantineItem.id == item_id)
            .values(replayed_at=now, message_row_id=row_id)
        )

    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        with self.session.begin_nested():
            yield

    def savepoint(self) -> AbstractContextManager[None]:
        return self._savepoint()

    def commit(self) -> None:
        self.session.commit()


def unit_of_work(engine: Engine) -> Callable[[], AbstractContextManager[SqlTicketStore]]:
    """A factory of transactions: `with uow() as store: ...; store.commit()`; rollback otherwise."""
    factory = sessionmaker(
        engine.execution_options(writer=True), expire_on_commit=False, autoflush=False
    )

    @contextmanager
    def _uow() -> Iterator[SqlTicketStore]:
        session = factory()
        try:
            yield SqlTicketStore(session)
        finally:
            session.rollback()
            session.close()

    return _uow
