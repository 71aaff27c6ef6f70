"""The schema as SQLAlchemy Core tables: what the daemon reads and writes.

The daemon's store (adapters/db/store.py) and the outbox speak Core only, so the running
desk never imports the ORM (sqlalchemy.orm is 6 MiB of resident memory in each daemon,
issue 9's budget). The ORM classes over these same tables (adapters/db/models.py) serve
the read side of the CLI, the migrations and the tests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    true,
)

from supportd.adapters.db.outbox import sqlite_time

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

    def bind_processor(self, dialect: Any) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # SQLite: the text SQLAlchemy's DATETIME writes ("2026-12-07 10:00:00.000000"),
        # in one step instead of this class's conversion and then DATETIME's formatting
        # through a dict (issue 9: 4.6 % of the daemon's time in a backlog, a value each
        # for every row's times).
        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is None:
                raise ValueError("naive datetime given to a UTC column")
            return sqlite_time(value)

        return process

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


metadata = MetaData(naming_convention=NAMING)


def _required(name: str, type_: Any, *args: Any, **kwargs: Any) -> Column[Any]:
    """A NOT NULL column (what the ORM's non-Optional `Mapped[...]` declared)."""
    return Column(name, type_, *args, nullable=False, **kwargs)


def _optional(name: str, type_: Any, *args: Any, **kwargs: Any) -> Column[Any]:
    return Column(name, type_, *args, nullable=True, **kwargs)


# The IMAP cursor: advanced in the same transaction as the messages it covers.
mailbox_state = Table(
    "mailbox_state",
    metadata,
    Column("id", Integer, primary_key=True),
    _required("mailbox", String(500), unique=True),
    _required("uidvalidity", BigInteger),
    _required("last_uid", BigInteger, default=0),
    _required("updated_at", UTCDateTime),
    # Fencing: bumped by each new owner; a batch commits only under the epoch it began with.
    _required("owner_epoch", BigInteger, default=0, server_default="0"),
    _required("owner", String(300), default="", server_default=""),
    # The highest UID whose COPY to the processed folder may have been sent, not finished.
    _required("archive_pending_uid", BigInteger, default=0, server_default="0"),
    # ...and the processed folder's UIDNEXT before that COPY: its copies are at or above it.
    _required("archive_dest_uidnext", BigInteger, default=0, server_default="0"),
)

tickets = Table(
    "tickets",
    metadata,
    Column("number", Integer, primary_key=True, autoincrement=True),
    _required("subject", Text, default=""),
    _required("requester", String(320)),
    _required("requester_name", String(500), default=""),
    _required("status", String(16), default="open"),
    _required("category", String(32), default="other"),
    # What the classifier said at arrival; `category` is what holds (#category corrects it).
    _optional("category_predicted", String(32)),
    _required("created_at", UTCDateTime),
    _required("updated_at", UTCDateTime),
    _optional("first_response_due", UTCDateTime),
    _optional("first_responded_at", UTCDateTime),
    _required("escalation_level", Integer, default=0),
    _required("message_count", Integer, default=0),
    _optional("assignee", String(320)),
    _optional("closed_at", UTCDateTime),
    # The older ticket this one continues (a customer wrote long after it was closed).
    _optional("continues", Integer),
    # The response clock now running (None: not awaiting the team); see domain/sla.py.
    _optional("clock_started_at", UTCDateTime),
    _required("clock_first", Boolean, default=True, server_default=true()),
    _required("clock_paused", Float, default=0.0, server_default="0"),
    _optional("clock_paused_since", UTCDateTime),
    _optional("next_response_due", UTCDateTime),
    # When the escalation scan must look at this ticket next: the scan is one indexed query.
    _optional("next_event_at", UTCDateTime),
    Index("ix_tickets_next_event", "next_event_at"),
    Index("ix_tickets_response_due", "next_response_due"),
)

participants = Table(
    "participants",
    metadata,
    Column("id", Integer, primary_key=True),
    _required("ticket_number", Integer, ForeignKey("tickets.number", ondelete="CASCADE")),
    _required("address", String(320)),
    _required("role", String(16), default="cc"),
    UniqueConstraint("ticket_number", "address"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True),
    _required("ticket_number", Integer, ForeignKey("tickets.number", ondelete="CASCADE")),
    _required("direction", String(3)),
    _required("kind", String(16)),
    _required("from_addr", String(320), default=""),
    _required("from_name", String(500), default=""),
    _required("to_addrs", Text, default=""),
    _required("cc_addrs", Text, default=""),
    _required("subject", Text, default=""),
    _optional("message_id", String(1000)),
    _required("in_reply_to", Text, default=""),
    # The nearest parent (first In-Reply-To, else last Reference): finds a reply's ticket
    # when the message it answers arrives after it.
    _optional("parent_message_id", String(1000)),
    _required("references", Text, default=""),
    _required("date", UTCDateTime),
    _required("header_date", String(200), default=""),
    _required("text", Text, default=""),
    # A notification's copy: the customer's message whose text it carries (text is "").
    _optional("text_of", Integer),
    _optional("mailbox", String(500)),
    _optional("uidvalidity", BigInteger),
    _optional("uid", BigInteger),
    _optional("dedup_key", String(64)),
    _required("automatic", String(200), default=""),
    # For incoming mail: "sent", or "suppressed: <reason>" (why no acknowledgement went out).
    _required("reply_decision", String(300), default="", server_default=""),
    # Mail from an agent's address that was not trusted: why (it was relayed to nobody).
    _required("untrusted", String(300), default="", server_default=""),
    _required("defects", Text, default=""),
    _required("size", Integer, default=0),
    _required("raw", LargeBinary),
    _required("created_at", UTCDateTime),
    Index("ix_messages_message_id", "message_id"),
    Index("ix_messages_parent", "parent_message_id"),
    # The delivery identity: even two writers that both believe they own the mailbox
    # cannot store a message twice.
    Index("uq_messages_delivery", "mailbox", "dedup_key", unique=True),
    Index("ix_messages_ticket", "ticket_number", "id"),
)

# A second delivery of a stored message: recorded, never stored twice.
duplicate_deliveries = Table(
    "duplicate_deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    _required("message_row_id", Integer, ForeignKey("messages.id", ondelete="CASCADE")),
    _required("mailbox", String(500)),
    _required("uidvalidity", BigInteger),
    _required("uid", BigInteger),
    _required("created_at", UTCDateTime),
)

# A message that could not be processed: raw bytes kept with the error, replayable.
quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Integer, primary_key=True),
    _required("mailbox", String(500)),
    _required("uidvalidity", BigInteger),
    _required("uid", BigInteger),
    _required("internaldate", UTCDateTime),
    _required("error", Text),
    _required("raw", LargeBinary),
    _required("created_at", UTCDateTime),
    _optional("replayed_at", UTCDateTime),
    _optional("message_row_id", Integer, ForeignKey("messages.id", ondelete="SET NULL")),
)

# An address that bounced permanently: no automatic mail to it until `until`.
suppressions = Table(
    "suppressions",
    metadata,
    Column("id", Integer, primary_key=True),
    _required("address", String(320), unique=True),
    _required("reason", Text, default=""),
    _required("until", UTCDateTime),
    _required("created_at", UTCDateTime),
)

# Mail to send, written in the same transaction as the change that caused it.
outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    _optional("ticket_number", Integer, ForeignKey("tickets.number", ondelete="SET NULL")),
    _required("kind", String(16)),
    _optional("message_id", String(1000), unique=True),
    _required("sender", String(320)),
    _required("recipients", Text),
    _required("raw", LargeBinary),
    # What to write instead of raw (JSON; rendered when sent, adapters/teammail): a
    # notification is 8 KiB of intent instead of 17 KiB of MIME in the ingest transaction.
    _optional("intent", Text),
    # With an intent: the message row whose text follows the intent (adapters/db/outbox
    # reads it with the row), instead of the intent holding a copy of it.
    _optional("text_of", Integer),
    _required("status", String(16), default="pending"),
    _required("attempts", Integer, default=0),
    _required("next_attempt_at", UTCDateTime),
    _required("last_error", Text, default=""),
    _required("created_at", UTCDateTime),
    _optional("sent_at", UTCDateTime),
    Index("ix_outbox_due", "status", "next_attempt_at", "id"),  # the claim order
    Index("ix_outbox_recipient", "recipients", "kind", "created_at"),
)

# PostgreSQL's journal of sent rows (adapters/db/outbox.PgJournal): a lane records each
# row here, in a commit of its own, right after the server's 250, while the row's own
# UPDATE waits for the lane's group of rows to end. Holds only rows in flight, and those a
# crash left behind until the next sender applies them. (SQLite keeps its journal in a
# file beside the database.)
outbox_sent = Table(
    "outbox_sent",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    _required("at", UTCDateTime),
)
