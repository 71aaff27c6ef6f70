"""Read side: tickets and messages as the JSON contract of DESIGN.md describes them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from supportd.adapters.db.models import (
    MessageRow,
    OutboxItem,
    Participant,
    QuarantineItem,
    Ticket,
)
from supportd.adapters.db.store import state_from
from supportd.domain.sla import NEVER, SlaPolicy, clock_of, evaluate


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def ticket_summary(ticket: Ticket) -> dict[str, Any]:
    return {
        "number": ticket.number,
        "subject": ticket.subject,
        "requester": ticket.requester,
        "requester_name": ticket.requester_name,
        "status": ticket.status,
        "category": ticket.category,
        "category_predicted": ticket.category_predicted,
        "created_at": iso(ticket.created_at),
        "updated_at": iso(ticket.updated_at),
        "first_response_due": iso(ticket.first_response_due),
        "first_responded_at": iso(ticket.first_responded_at),
        "escalation_level": ticket.escalation_level,
        "message_count": ticket.message_count,
        "next_response_due": iso(ticket.next_response_due)
        if ticket.status == "open" and ticket.clock_started_at is not None
        else None,
        "assignee": ticket.assignee,
        "closed_at": iso(ticket.closed_at),
        "continues": ticket.continues,
    }


def message_view(row: MessageRow, delivery: dict[str, Any] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "direction": row.direction,
        "kind": row.kind,
        "from": f"{row.from_name} <{row.from_addr}>" if row.from_name else row.from_addr,
        "to": row.to_addrs,
        "cc": row.cc_addrs,
        "subject": row.subject,
        "message_id": row.message_id,
        "in_reply_to": row.in_reply_to,
        "date": iso(row.date),
        "automatic": row.automatic or None,
        "auto_reply": row.reply_decision or None,
        # Mail from an agent's address that was not trusted, and why (relayed to nobody).
        "untrusted": row.untrusted or None,
        "text": row.text,
    }
    if delivery is not None:
        view["delivery"] = delivery
    return view


_SOURCE = MessageRow.__table__.alias("source")
# A notification's copy names the message holding its text (text_of) instead of a copy.
_TEXT = func.coalesce(
    select(_SOURCE.c.text).where(_SOURCE.c.id == MessageRow.text_of).scalar_subquery(),
    MessageRow.text,
).label("text")
_MESSAGE_COLUMNS = [
    *(c for c in MessageRow.__table__.columns if c.key not in ("raw", "text")),
    _TEXT,
]


def _messages(session: Session, number: int) -> list[dict[str, Any]]:
    rows = session.execute(
        select(*_MESSAGE_COLUMNS)
        .where(MessageRow.ticket_number == number)
        .order_by(MessageRow.date, MessageRow.id)
    ).all()
    deliveries = {
        o.message_id: {
            "outbox_id": o.id,
            "status": o.status,
            "attempts": o.attempts,
            "sent_at": iso(o.sent_at),
            "last_error": o.last_error or None,
        }
        for o in session.execute(
            select(
                OutboxItem.id,
                OutboxItem.message_id,
                OutboxItem.status,
                OutboxItem.attempts,
                OutboxItem.sent_at,
                OutboxItem.last_error,
            ).where(OutboxItem.ticket_number == number)
        )
    }
    return [
        message_view(row, deliveries.get(row.message_id) if row.direction == "out" else None)  # type: ignore[arg-type]
        for row in rows
    ]


def ticket_detail(session: Session, ticket: Ticket) -> dict[str, Any]:
    detail = ticket_summary(ticket)
    detail["participants"] = list(
        session.execute(
            select(Participant.address)
            .where(Participant.ticket_number == ticket.number)
            .order_by(Participant.id)
        ).scalars()
    )
    detail["messages"] = _messages(session, ticket.number)
    return detail


def list_tickets(engine: Engine, status: str | None = None) -> list[dict[str, Any]]:
    with Session(engine) as session:
        query = select(Ticket).order_by(Ticket.number)
        if status:
            query = query.where(Ticket.status == status)
        return [ticket_summary(t) for t in session.execute(query).scalars()]


def show_ticket(engine: Engine, number: int) -> dict[str, Any] | None:
    with Session(engine) as session:
        ticket = session.get(Ticket, number)
        return ticket_detail(session, ticket) if ticket is not None else None


def export_tickets(engine: Engine, chunk: int = 200) -> Iterator[dict[str, Any]]:
    """Every ticket with its messages, streamed in number order with bounded memory."""
    last = 0
    while True:
        with Session(engine) as session:
            tickets = list(
                session.execute(
                    select(Ticket).where(Ticket.number > last).order_by(Ticket.number).limit(chunk)
                ).scalars()
            )
            if not tickets:
                return
            for ticket in tickets:
                yield ticket_detail(session, ticket)
            last = tickets[-1].number


def list_quarantine(engine: Engine, include_replayed: bool = False) -> list[dict[str, Any]]:
    with Session(engine) as session:
        query = select(
            QuarantineItem.id,
            QuarantineItem.mailbox,
            QuarantineItem.uid,
            QuarantineItem.error,
            QuarantineItem.created_at,
            QuarantineItem.replayed_at,
        ).order_by(QuarantineItem.id)
        if not include_replayed:
            query = query.where(QuarantineItem.replayed_at.is_(None))
        return [
            {
                "id": r.id,
                "mailbox": r.mailbox,
                "uid": r.uid,
                "error": r.error,
                "created_at": iso(r.created_at),
                "replayed_at": iso(r.replayed_at),
            }
            for r in session.execute(query)
        ]


def list_outbox(
    engine: Engine, status: str | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    """The newest `limit` rows (0: all)."""
    with Session(engine) as session:
        query = (
            select(
                OutboxItem.id,
                OutboxItem.ticket_number,
                OutboxItem.kind,
                OutboxItem.recipients,
                OutboxItem.message_id,
                OutboxItem.status,
                OutboxItem.attempts,
                OutboxItem.next_attempt_at,
                OutboxItem.last_error,
                OutboxItem.created_at,
                OutboxItem.sent_at,
            )
            .order_by(OutboxItem.id.desc())
            .limit(limit or None)
        )
        if status:
            query = query.where(OutboxItem.status == status)
        return [
            {
                "id": r.id,
                "ticket": r.ticket_number,
                "kind": r.kind,
                "to": r.recipients,
                "message_id": r.message_id,
                "status": r.status,
                "attempts": r.attempts,
                "next_attempt_at": iso(r.next_attempt_at),
                "last_error": r.last_error or None,
                "created_at": iso(r.created_at),
                "sent_at": iso(r.sent_at),
            }
            for r in session.execute(query)
        ]


def awaiting(engine: Engine, limit: int | None) -> list[Ticket]:
    """Open tickets awaiting the team, the earliest due first (an index on the due time)."""
    with Session(engine) as session:
        query = (
            select(Ticket)
            .where(
                Ticket.next_response_due.is_not(None),
                Ticket.status == "open",
                Ticket.clock_started_at.is_not(None),
            )
            .order_by(Ticket.next_response_due, Ticket.number)
        )
        if limit:
            query = query.limit(limit)
        return list(session.execute(query).scalars())


def sla_rows(
    engine: Engine, policy: SlaPolicy, now: datetime, limit: int | None
) -> list[dict[str, Any]]:
    """`supportd sla`: tickets awaiting the team, most urgent first, with the time left."""
    rows: list[dict[str, Any]] = []
    for t in awaiting(engine, limit):
        clock = clock_of(state_from(t))
        if clock is None:
            continue
        ev = evaluate(clock, now, policy)
        rows.append(
            {
                "number": t.number,
                "subject": t.subject,
                "requester": t.requester,
                "status": t.status,
                "due": iso(None if ev.due == NEVER else ev.due),
                "business_hours_left": round(ev.left / timedelta(hours=1), 2),
                "escalation_level": ev.level,
            }
        )
    rows.sort(key=lambda r: (r["due"] is None, r["due"] or "", r["number"]))
    return rows


def corrected_examples(engine: Engine) -> Iterator[dict[str, str]]:
    """Tickets whose category the team corrected: the first customer message, labelled with
    the category that holds (training JSON Lines for `supportd classify train`)."""
    with Session(engine) as session:
        tickets = session.execute(
            select(Ticket.number, Ticket.category).where(
                Ticket.category_predicted.is_not(None),
                Ticket.category != Ticket.category_predicted,
            )
        ).all()
        for number, category in tickets:
            first = session.execute(
                select(MessageRow.subject, MessageRow.text)
                .where(MessageRow.ticket_number == number, MessageRow.kind == "customer")
                .order_by(MessageRow.id)
                .limit(1)
            ).first()
            if first is not None:
                yield {"subject": first.subject, "text": first.text, "category": category}
