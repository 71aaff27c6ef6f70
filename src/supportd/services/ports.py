"""The ports the services talk through; adapters implement them, tests fake them."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

from supportd.domain.mail import Cursor, FetchedMail, ParsedMail, QuarantinedMail

__all__ = ["Cursor", "FetchedMail", "MailSource", "TicketStore", "UnitOfWorkFactory"]


class MailSource(Protocol):
    """A mailbox folder read by UID (IMAP in production)."""

    @property
    def key(self) -> str: ...

    def open(self) -> int:
        """Connect if needed, select the folder, return its UIDVALIDITY."""

    def uids_after(self, last_uid: int) -> list[int]: ...

    def fetch(self, uids: Sequence[int]) -> Iterator[list[FetchedMail]]:
        """The messages in bounded batches, in UID order, without setting \\Seen."""

    def archive(self, up_to_uid: int) -> int:
        """Move processed messages (UID <= up_to_uid) aside if configured; return how many."""

    def wait(self, timeout: float, stop: threading.Event) -> None:
        """Block until new mail may be there, `timeout` passes, or `stop` is set."""

    def close(self) -> None: ...


class TicketStore(Protocol):
    """Everything ingestion reads and writes; one instance is one transaction."""

    def get_cursor(self, mailbox: str) -> Cursor | None: ...

    def set_cursor(self, mailbox: str, cursor: Cursor, now: datetime) -> None: ...

    def find_delivery(self, mailbox: str, dedup_key: str) -> int | None: ...

    def record_duplicate(
        self, row_id: int, mailbox: str, uidvalidity: int, uid: int, now: datetime
    ) -> None: ...

    def tickets_for_message_ids(self, message_ids: Sequence[str]) -> dict[str, int]: ...

    def tickets_by_parent(self, message_ids: Sequence[str]) -> dict[str, int]:
        """Tickets holding a stored message whose nearest parent is one of `message_ids`."""

    def participants(self, ticket: int) -> frozenset[str]: ...

    def requester(self, ticket: int) -> str: ...

    def create_ticket(
        self, *, subject: str, requester: str, requester_name: str, created_at: datetime
    ) -> int: ...

    def add_participants(self, ticket: int, addresses: frozenset[str], requester: str) -> None: ...

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
    ) -> int: ...

    def quarantine(
        self, fetched: FetchedMail, *, mailbox: str, uidvalidity: int, error: str, now: datetime
    ) -> int: ...

    def quarantined(self, item_id: int) -> QuarantinedMail | None: ...

    def mark_replayed(self, item_id: int, row_id: int | None, now: datetime) -> None: ...

    def savepoint(self) -> AbstractContextManager[None]: ...

    def commit(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> AbstractContextManager[TicketStore]: ...


class Clock(Protocol):
    def __call__(self) -> datetime: ...
