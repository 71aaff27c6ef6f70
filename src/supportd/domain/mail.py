"""What the desk knows about one incoming message, independent of how it was parsed."""

from __future__ import annotations

import hashlib
import re
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
class Bounce:
    """A delivery status notification: who failed, how badly, for which message."""

    permanent: bool
    recipients: tuple[str, ...]
    original_ids: tuple[str, ...]


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
    bounce: Bounce | None = None
    # Filled where the mail is parsed (the parse worker, on the second core):
    body_digest: str = ""  # see body_digest()
    category: str = ""  # see domain.classify; "" = not classified yet
    automatic: str | None = None  # domain.robots.automatic_reason; None = not judged yet
    # Where the mail was delivered (Delivered-To, X-Original-To), for reply tokens.
    delivered_to: tuple[str, ...] = ()
    # Authentication-Results header values, top (newest) first.
    auth_results: tuple[str, ...] = ()

    def thread_references(self) -> tuple[str, ...]:
        """Message-IDs this mail answers, the nearest parent first."""
        seen: list[str] = []
        for mid in (*self.in_reply_to, *reversed(self.references)):
            if mid not in seen:
                seen.append(mid)
        return tuple(seen)


_WHITESPACE = bytes.maketrans(b"\t\n\r\x0b\x0c", b"     ")  # bytes.split()'s, to spaces
_SPACES = re.compile(rb"  +")


def fold_whitespace(body: bytes) -> bytes:
    """`b" ".join(body.split())`, without an object per word (54 against 69 us for 9 KiB,
    issue 9): whitespace to spaces, runs of them to one, none at either end."""
    return _SPACES.sub(b" ", body.translate(_WHITESPACE)).strip(b" ")


def body_digest(raw: bytes) -> str:
    """Hash of the body bytes with all whitespace folded (CRLF and LF copies agree).
    Stored in every dedup key: the digest of a body must never change."""
    end = raw.find(b"\r\n\r\n")
    lf_end = raw.find(b"\n\n")
    if end < 0 or 0 <= lf_end < end:
        body = raw[lf_end + 2 :] if lf_end >= 0 else b""
    else:
        body = raw[end + 4 :]
    return hashlib.sha256(fold_whitespace(body)).hexdigest()


def dedup_key(mail: ParsedMail, raw: bytes) -> str:
    """Identity of a delivery: same Message-ID, sender, date, subject and body is the same mail.

    A second delivery of one message differs only in transport headers (Received, Delivered-To)
    and so gets the same key. Two different messages sharing a Message-ID (broken mailers,
    test fixtures) differ in one of the other fields or in the body, and are both kept.
    """
    sender = mail.sender.email if mail.sender else ""
    parts = [
        mail.message_id or "",
        sender,
        " ".join(mail.date_header.split()),
        mail.subject,
        mail.body_digest or body_digest(raw),
    ]
    joined = "\x1f".join(parts).encode("utf-8", "surrogatepass")
    return hashlib.sha256(joined).hexdigest()


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


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
