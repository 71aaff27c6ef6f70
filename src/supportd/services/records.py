"""What the desk writes, in its own words: the database adapter maps these to columns.

Services build these records and never name a column; adapters/db/store.py owns the
mapping (issue 9: the 23-key row dictionaries used to live in the services).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from supportd.domain.mail import FetchedMail, ParsedMail


@dataclass
class NewTicket:
    placeholder: int
    subject: str
    requester: str
    requester_name: str
    created_at: datetime
    category: str = "other"
    due: datetime | None = None
    message_count: int = 0
    continues: int | None = None


@dataclass
class IncomingMessage:
    """A fetched message as stored on a ticket, with what the desk decided about it."""

    ticket: int  # negative: a ticket this chunk opens (replaced at flush)
    mail: ParsedMail
    fetched: FetchedMail
    kind: str  # customer, agent, note
    automatic: str  # why it is automatic mail ("" for a person)
    mailbox: str
    uidvalidity: int
    dedup_key: str
    stored_at: datetime
    direction: str = "in"
    text: str | None = None  # None: the mail's own text
    untrusted: str = ""  # why agent-looking mail was not trusted
    reply_decision: str = ""
    row_id: int | None = None  # set when it is written

    @property
    def sender(self) -> str:
        return self.mail.sender.email if self.mail.sender else ""

    @property
    def stored_text(self) -> str:
        return self.mail.text if self.text is None else self.text


@dataclass(frozen=True)
class Deferred:
    """An outgoing mail written when it is sent: what to write (JSON, rendered by the
    outbox sender's renderer), instead of the bytes in the ingest transaction."""

    intent: str
    # The text the mail quotes (a notification's: the customer's), kept apart so that the
    # rows can refer to the stored message that holds it instead of a copy; written after
    # the intent and a line break otherwise.
    quoted: str | None = None

    @property
    def whole(self) -> str:
        """The intent with its quoted text: what the renderer reads."""
        return self.intent if self.quoted is None else f"{self.intent}\n{self.quoted}"

    @property
    def size(self) -> int:
        """len(self.whole), without writing it out."""
        return len(self.intent) + (0 if self.quoted is None else 1 + len(self.quoted))


# What composing an outgoing mail gives the outbox: its bytes, or what to write later.
Payload = bytes | Deferred


@dataclass
class OutgoingCopy:
    """The ticket's copy of a mail the desk sends (the raw bytes live in the outbox)."""

    ticket: int
    kind: str
    sender: str
    recipient: str
    subject: str
    text: str
    message_id: str
    size: int
    created_at: datetime
    text_of: int | None = None  # the message row holding the text (then text is "")
    # As the mail's headers say, where it has several recipients (a relayed answer: the
    # requester in To, the participants in Cc); else recipient is its To.
    to: str = ""
    cc: str = ""
    in_reply_to: str = ""


@dataclass
class QueuedMail:
    """An outbox row before its mail is composed."""

    ticket: int | None
    kind: str
    sender: str
    recipient: str
    queued_at: datetime
    text_of: int | None = None  # the message row whose text follows the intent
