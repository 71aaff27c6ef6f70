"""SQLAlchemy models: the tables behind tickets, messages, the mailbox cursor and the outbox."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC (SQLite has no zones); always returned timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class MailboxState(Base):
    """The IMAP cursor: advanced in the same transaction as the messages it covers."""

    __tablename__ = "mailbox_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(500), unique=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Fencing: bumped by each new owner; a batch commits only under the epoch it began with.
    owner_epoch: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    owner: Mapped[str] = mapped_column(String(300), default="", server_default="")
    # The highest UID whose COPY to the processed folder may have been sent, not finished.
    archive_pending_uid: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # ...and the processed folder's UIDNEXT before that COPY: its copies are at or above it.
    archive_dest_uidnext: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_next_event", "next_event_at"),
        Index("ix_tickets_response_due", "next_response_due"),
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    requester: Mapped[str] = mapped_column(String(320))
    requester_name: Mapped[str] = mapped_column(String(500), default="")
    status: Mapped[str] = mapped_column(String(16), default="open")
    category: Mapped[str] = mapped_column(String(32), default="other")
    # What the classifier said at arrival; `category` is what holds (#category corrects it).
    category_predicted: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    first_response_due: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    first_responded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    assignee: Mapped[str | None] = mapped_column(String(320), nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The older ticket this one continues (a customer wrote long after it was closed).
    continues: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The response clock now running (None: not awaiting the team); see domain/sla.py.
    clock_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    clock_first: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    clock_paused: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    clock_paused_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    next_response_due: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When the escalation scan must look at this ticket next: the scan is one indexed query.
    next_event_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Participant(Base):
    __tablename__ = "participants"
    __table_args__ = (UniqueConstraint("ticket_number", "address"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_number: Mapped[int] = mapped_column(ForeignKey("tickets.number", ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16), default="cc")


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_message_id", "message_id"),
        Index("ix_messages_parent", "parent_message_id"),
        # The delivery identity: even two writers that both believe they own the mailbox
        # cannot store a message twice.
        Index("uq_messages_delivery", "mailbox", "dedup_key", unique=True),
        Index("ix_messages_ticket", "ticket_number", "id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_number: Mapped[int] = mapped_column(ForeignKey("tickets.number", ondelete="CASCADE"))
    direction: Mapped[str] = mapped_column(String(3))
    kind: Mapped[str] = mapped_column(String(16))
    from_addr: Mapped[str] = mapped_column(String(320), default="")
    from_name: Mapped[str] = mapped_column(String(500), default="")
    to_addrs: Mapped[str] = mapped_column(Text, default="")
    cc_addrs: Mapped[str] = mapped_column(Text, default="")
    subject: Mapped[str] = mapped_column(Text, default="")
    message_id: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    in_reply_to: Mapped[str] = mapped_column(Text, default="")
    # The nearest parent (first In-Reply-To, else last Reference): finds a reply's ticket
    # when the message it answers arrives after it.
    parent_message_id: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    references: Mapped[str] = mapped_column(Text, default="")
    date: Mapped[datetime] = mapped_column(UTCDateTime)
    header_date: Mapped[str] = mapped_column(String(200), default="")
    text: Mapped[str] = mapped_column(Text, default="")
    mailbox: Mapped[str | None] = mapped_column(String(500), nullable=True)
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    uid: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    dedup_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    automatic: Mapped[str] = mapped_column(String(200), default="")
    # For incoming mail: "sent", or "suppressed: <reason>" (why no acknowledgement went out).
    reply_decision: Mapped[str] = mapped_column(String(300), default="", server_default="")
    # Mail from an agent's address that was not trusted: why (it was relayed to nobody).
    untrusted: Mapped[str] = mapped_column(String(300), default="", server_default="")
    defects: Mapped[str] = mapped_column(Text, default="")
    size: Mapped[int] = mapped_column(Integer, default=0)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DuplicateDelivery(Base):
    """A second delivery of a stored message: recorded, never stored twice."""

    __tablename__ = "duplicate_deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_row_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    mailbox: Mapped[str] = mapped_column(String(500))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class QuarantineItem(Base):
    """A message that could not be processed: raw bytes kept with the error, replayable."""

    __tablename__ = "quarantine"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(500))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    internaldate: Mapped[datetime] = mapped_column(UTCDateTime)
    error: Mapped[str] = mapped_column(Text)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    replayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    message_row_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL"), nullable=True
    )


class Suppression(Base):
    """An address that bounced permanently: no automatic mail to it until `until`."""

    __tablename__ = "suppressions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    until: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OutboxItem(Base):
    """Mail to send, written in the same transaction as the change that caused it."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at", "id"),  # the claim order
        Index("ix_outbox_recipient", "recipients", "kind", "created_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_number: Mapped[int | None] = mapped_column(
        ForeignKey("tickets.number", ondelete="SET NULL"), nullable=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    message_id: Mapped[str | None] = mapped_column(String(1000), unique=True, nullable=True)
    sender: Mapped[str] = mapped_column(String(320))
    recipients: Mapped[str] = mapped_column(Text)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    # What to write instead of raw (JSON; rendered when sent, adapters/teammail): a
    # notification is 8 KiB of intent instead of 17 KiB of MIME in the ingest transaction.
    intent: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
