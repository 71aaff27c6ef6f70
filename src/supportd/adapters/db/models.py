"""ORM classes over the Core tables of adapters/db/tables.py, for the read side of the CLI
(adapters/db/views), the migrations and the tests. The daemon does not import this module:
it speaks Core only (see tables.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import DeclarativeBase, Mapped

from supportd.adapters.db import tables

__all__ = [
    "Base",
    "DuplicateDelivery",
    "MailboxState",
    "MessageRow",
    "OutboxItem",
    "Participant",
    "QuarantineItem",
    "Suppression",
    "Ticket",
]


class Base(DeclarativeBase):
    metadata = tables.metadata


class MailboxState(Base):
    __table__ = tables.mailbox_state
    id: Mapped[int]
    mailbox: Mapped[str]
    uidvalidity: Mapped[int]
    last_uid: Mapped[int]
    updated_at: Mapped[datetime]
    owner_epoch: Mapped[int]
    owner: Mapped[str]
    archive_pending_uid: Mapped[int]
    archive_dest_uidnext: Mapped[int]


class Ticket(Base):
    __table__ = tables.tickets
    number: Mapped[int]
    subject: Mapped[str]
    requester: Mapped[str]
    requester_name: Mapped[str]
    status: Mapped[str]
    category: Mapped[str]
    category_predicted: Mapped[str | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    first_response_due: Mapped[datetime | None]
    first_responded_at: Mapped[datetime | None]
    escalation_level: Mapped[int]
    message_count: Mapped[int]
    assignee: Mapped[str | None]
    closed_at: Mapped[datetime | None]
    continues: Mapped[int | None]
    clock_started_at: Mapped[datetime | None]
    clock_first: Mapped[bool]
    clock_paused: Mapped[float]
    clock_paused_since: Mapped[datetime | None]
    next_response_due: Mapped[datetime | None]
    next_event_at: Mapped[datetime | None]


class Participant(Base):
    __table__ = tables.participants
    id: Mapped[int]
    ticket_number: Mapped[int]
    address: Mapped[str]
    role: Mapped[str]


class MessageRow(Base):
    __table__ = tables.messages
    id: Mapped[int]
    ticket_number: Mapped[int]
    direction: Mapped[str]
    kind: Mapped[str]
    from_addr: Mapped[str]
    from_name: Mapped[str]
    to_addrs: Mapped[str]
    cc_addrs: Mapped[str]
    subject: Mapped[str]
    message_id: Mapped[str | None]
    in_reply_to: Mapped[str]
    parent_message_id: Mapped[str | None]
    references: Mapped[str]
    date: Mapped[datetime]
    header_date: Mapped[str]
    text: Mapped[str]
    text_of: Mapped[int | None]
    mailbox: Mapped[str | None]
    uidvalidity: Mapped[int | None]
    uid: Mapped[int | None]
    dedup_key: Mapped[str | None]
    automatic: Mapped[str]
    reply_decision: Mapped[str]
    untrusted: Mapped[str]
    defects: Mapped[str]
    size: Mapped[int]
    raw: Mapped[bytes]
    created_at: Mapped[datetime]


class DuplicateDelivery(Base):
    __table__ = tables.duplicate_deliveries
    id: Mapped[int]
    message_row_id: Mapped[int]
    mailbox: Mapped[str]
    uidvalidity: Mapped[int]
    uid: Mapped[int]
    created_at: Mapped[datetime]


class QuarantineItem(Base):
    __table__ = tables.quarantine
    id: Mapped[int]
    mailbox: Mapped[str]
    uidvalidity: Mapped[int]
    uid: Mapped[int]
    internaldate: Mapped[datetime]
    error: Mapped[str]
    raw: Mapped[bytes]
    created_at: Mapped[datetime]
    replayed_at: Mapped[datetime | None]
    message_row_id: Mapped[int | None]


class Suppression(Base):
    __table__ = tables.suppressions
    id: Mapped[int]
    address: Mapped[str]
    reason: Mapped[str]
    until: Mapped[datetime]
    created_at: Mapped[datetime]


class OutboxItem(Base):
    __table__ = tables.outbox
    id: Mapped[int]
    ticket_number: Mapped[int | None]
    kind: Mapped[str]
    message_id: Mapped[str | None]
    sender: Mapped[str]
    recipients: Mapped[str]
    raw: Mapped[bytes]
    intent: Mapped[str | None]
    text_of: Mapped[int | None]
    status: Mapped[str]
    attempts: Mapped[int]
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str]
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


class OutboxSent(Base):
    __table__ = tables.outbox_sent
    id: Mapped[int]
    at: Mapped[datetime]
