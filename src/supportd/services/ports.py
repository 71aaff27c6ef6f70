"""The ports the services talk through; adapters implement them, tests fake them."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

from supportd.domain.acknowledgement import AckContext
from supportd.domain.mail import Cursor, FetchedMail, QuarantinedMail
from supportd.domain.team import TicketState
from supportd.domain.threads import Seen
from supportd.services.records import (
    IncomingMessage,
    NewTicket,
    OutgoingCopy,
    Payload,
    QueuedMail,
)

__all__ = ["Composer", "Cursor", "FetchedMail", "MailSource", "TicketStore", "UnitOfWorkFactory"]


class MailSource(Protocol):
    """A mailbox folder read by UID (IMAP in production)."""

    @property
    def key(self) -> str: ...

    def open(self) -> int:
        """Connect if needed, select the folder, return its UIDVALIDITY."""

    def uids_after(self, last_uid: int) -> Sequence[int]: ...

    def fetch(self, uids: Sequence[int]) -> Iterator[list[FetchedMail]]:
        """The messages in bounded batches, in UID order, without setting \\Seen."""

    def archive(self, up_to_uid: int, journal: ArchiveJournal) -> int:
        """Move processed messages (UID <= up_to_uid) aside if configured; return how many."""

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """Block until new mail may be there, `timeout` passes, or `stop` is set."""

    def close(self) -> None: ...


class ArchiveJournal(Protocol):
    """Durable note of a COPY in progress (see services/archive.py)."""

    def pending(self) -> tuple[int, int]:
        """(highest UID whose COPY may be unfinished, the folder's UIDNEXT before it) or 0s."""

    def begin(self, up_to_uid: int, dest_uidnext: int) -> None: ...

    def clear(self) -> None: ...


class TicketStore(Protocol):
    """Everything ingestion reads and writes; one instance is one transaction."""

    def get_cursor(self, mailbox: str) -> Cursor | None: ...

    def set_cursor(
        self, mailbox: str, cursor: Cursor, now: datetime, epoch: int | None = None
    ) -> None:
        """Advance the cursor; with `epoch`, raise FencedError unless that owner still owns."""

    def claim_mailbox(self, mailbox: str, owner: str, now: datetime) -> int:
        """Start a new ownership epoch (the caller holds the mailbox lock); returns it."""

    def archive_pending(self, mailbox: str) -> tuple[int, int]: ...

    def set_archive_pending(
        self, mailbox: str, uid: int, dest_uidnext: int, epoch: int | None
    ) -> None: ...

    def find_deliveries(self, mailbox: str, dedup_keys: Sequence[str]) -> dict[str, int]:
        """Stored message rows by delivery identity (dedup key)."""

    def seen_by_message_ids(self, message_ids: Sequence[str]) -> dict[str, Seen]:
        """The first stored message with each of `message_ids`."""

    def seen_by_parent(self, message_ids: Sequence[str]) -> dict[str, list[Seen]]:
        """Stored messages whose nearest parent is one of `message_ids`, latest first."""

    def participants(self, ticket: int) -> frozenset[str]: ...

    def requester(self, ticket: int) -> str: ...

    def ticket_state(self, ticket: int) -> TicketState | None: ...

    def ticket_states(self, tickets: Sequence[int]) -> dict[int, TicketState]:
        """The states of those of `tickets` that exist (one query for a chunk's tickets)."""

    def participants_many(self, tickets: Sequence[int]) -> dict[int, frozenset[str]]:
        """The participants of each of `tickets` that has any."""

    def due_clocks(self, now: datetime, limit: int) -> list[TicketState]:
        """Tickets whose next escalation event is at or before `now`, earliest first."""

    def latest_customer_message(self, ticket: int) -> tuple[str | None, tuple[str, ...]] | None:
        """Message-ID and References of the ticket's latest (trusted) customer mail."""

    def update_tickets(self, changes: Sequence[tuple[int, Mapping[str, object]]]) -> None:
        """Set columns per ticket; first_responded_at only where it is still empty."""

    @property
    def new_ticket_columns(self) -> frozenset[str]:
        """Ticket fields a new ticket's insert can set along with it."""

    def insert_tickets(
        self, tickets: Sequence[tuple[NewTicket, Mapping[str, object]]], now: datetime
    ) -> list[int]:
        """Insert tickets (each with extra field values); their numbers, in order."""

    def insert_messages(self, messages: Sequence[IncomingMessage]) -> list[int]:
        """Store incoming messages, each with a new row id set on it (row_id); returns the
        ids in the order given."""

    def insert_copies(self, copies: Sequence[OutgoingCopy]) -> None: ...

    def insert_participants(self, rows: Sequence[tuple[int, str, str]]) -> None:
        """(ticket, address, role) rows."""

    def insert_duplicates(
        self, rows: Sequence[tuple[int, int]], mailbox: str, uidvalidity: int, now: datetime
    ) -> None:
        """(stored message row, UID of the repeated delivery) rows."""

    def touch_tickets(self, changes: Sequence[tuple[int, int, bool]], now: datetime) -> None:
        """For (ticket, new messages, reopen): bump the count and updated_at, reopen if asked."""

    def acknowledgements_since(self, address: str, since: datetime) -> int: ...

    def suppressed_until(self, address: str) -> datetime | None: ...

    def acknowledgements_since_many(
        self, addresses: Sequence[str], since: datetime
    ) -> dict[str, int]:
        """Acknowledgements per address since `since` (addresses with none left out)."""

    def suppressed_until_many(self, addresses: Sequence[str]) -> dict[str, datetime]:
        """Suppressions of these addresses (addresses without one left out)."""

    def add_suppressions(self, rows: Sequence[tuple[str, datetime, str]], now: datetime) -> None:
        """(address, until, reason): no automatic mail to these addresses until then."""

    def outbox_ids(self, count: int) -> list[int]:
        """Ids for `count` new outbox rows, increasing, never handed out before (their
        Message-IDs derive from them, so each mail is written once, in its INSERT)."""

    def insert_outbox(self, rows: Sequence[tuple[int, QueuedMail, str, Payload]]) -> None:
        """Queue outgoing mail: (row id from outbox_ids, the row, its Message-ID, its raw
        message or intent)."""

    def quarantine(
        self, fetched: FetchedMail, *, mailbox: str, uidvalidity: int, error: str, now: datetime
    ) -> int: ...

    def quarantined(self, item_id: int) -> QuarantinedMail | None: ...

    def mark_replayed(self, item_id: int, row_id: int | None, now: datetime) -> None: ...

    def savepoint(self) -> AbstractContextManager[None]: ...

    def commit(self) -> None: ...


class Composer(Protocol):
    """Writes outgoing mail: (subject, text, raw bytes) for a given Message-ID."""

    def acknowledgement(self, ctx: AckContext, message_id: str) -> tuple[str, str, bytes]: ...

    def sales_copy(
        self, ctx: AckContext, original_text: str, message_id: str
    ) -> tuple[str, str, bytes]: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, durable: bool = True) -> AbstractContextManager[TicketStore]:
        """A transaction. durable=False: its commit may return before the disk has it (a
        kill -9 keeps it, an OS crash or power loss may not); a later durable commit makes
        it durable too."""


class Clock(Protocol):
    def __call__(self) -> datetime: ...
