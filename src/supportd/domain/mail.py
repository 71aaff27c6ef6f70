"""What the desk knows about one incoming message, independent of how it was parsed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: lower-cased address plus display name."""

    email: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


@dataclass(frozen=True, slots=True)
class ParsedMail:
    """The facts the desk needs from one message; every field has a safe empty value."""

    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    sender: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    subject: str
    date_header: str
    date: datetime | None
    text: str
    # Headers that decide whether the mail came from a robot (lower-cased names).
    auto_headers: dict[str, str] = field(default_factory=dict)
    return_path: str | None = None
    content_type: str = "text/plain"
    defects: tuple[str, ...] = ()

    def thread_references(self) -> tuple[str, ...]:
        """Message-IDs this mail answers, the nearest parent first."""
        seen: list[str] = []
        for mid in (*self.in_reply_to, *reversed(self.references)):
            if mid not in seen:
                seen.append(mid)
        return tuple(seen)


def dedup_key(mail: ParsedMail, raw: bytes) -> str:
    """Identity of a delivery: same Message-ID, sender, date and subject means the same mail.

    Two different messages sharing a Message-ID (broken mailers) differ in one of the
    other fields and so get different keys. Without a Message-ID the text stands in.
    """
    sender = mail.sender.email if mail.sender else ""
    if mail.message_id:
        parts = ["mid", mail.message_id, sender, mail.date_header.strip(), mail.subject]
    elif mail.date_header or sender or mail.subject:
        body = hashlib.sha256(mail.text.encode("utf-8", "surrogatepass")).hexdigest()
        parts = ["nomid", sender, mail.date_header.strip(), mail.subject, body]
    else:
        parts = ["raw", hashlib.sha256(raw).hexdigest()]
    joined = "\x1f".join(parts).encode("utf-8", "surrogatepass")
    return hashlib.sha256(joined).hexdigest()


@dataclass(frozen=True, slots=True)
class FetchedMail:
    """One message as the mailbox delivered it: UID, arrival time (INTERNALDATE), bytes."""

    uid: int
    internaldate: datetime
    raw: bytes


@dataclass(frozen=True, slots=True)
class Cursor:
    """How far a mailbox folder has been read: its UIDVALIDITY and the last UID committed."""

    uidvalidity: int
    last_uid: int


@dataclass(frozen=True, slots=True)
class QuarantinedMail:
    """A message held in quarantine, as it was fetched."""

    id: int
    fetched: FetchedMail
    mailbox: str
    uidvalidity: int
    replayed_at: datetime | None
