"""What an acknowledgement says, as data (the wording lives in the Jinja2 templates)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from supportd.domain.calendar import BusinessCalendar
from supportd.domain.mail import Address, ParsedMail

_EMAIL_FIELD = re.compile(
    r"^\s*(?:e-?mail(?: address)?|your e-?mail|from)\s*[:=]\s*<?([^\s<>@]+@[^\s<>]+\.[a-z]{2,})>?",
    re.IGNORECASE | re.MULTILINE,
)
_NAME_FIELD = re.compile(
    r"^\s*(?:name|your name|full name)\s*[:=]\s*(.{1,100})$", re.IGNORECASE | re.MULTILINE
)


def form_customer(mail: ParsedMail) -> Address | None:
    """The customer behind a contact-form mail: Reply-To, else an e-mail field in the body."""
    if mail.reply_to:
        return mail.reply_to[0]
    match = _EMAIL_FIELD.search(mail.text)
    if match is None:
        return None
    name = _NAME_FIELD.search(mail.text)
    return Address(match.group(1).strip(".,;").lower(), name.group(1).strip() if name else "")


@dataclass(frozen=True)
class SupportHours:
    timezone: str
    days: tuple[str, ...]
    opens: str
    closes: str


@dataclass(frozen=True)
class AckContext:
    """Everything the acknowledgement templates may say about one new ticket."""

    ticket: int
    tag: str
    subject: str
    customer: Address
    category: str
    received: datetime
    outside_hours: bool
    next_open: datetime
    due: datetime
    business_clock: bool
    response_hours: float
    hours: SupportHours
    in_reply_to: str | None
    references: tuple[str, ...]
    query_text: str = ""
    contact_form_url: str = ""
    faq_url: str = ""
    customization_resources: tuple[str, ...] = field(default_factory=tuple)


def timing(received: datetime, calendar: BusinessCalendar) -> tuple[bool, datetime]:
    """(arrived outside hours?, when support is next open) for mail received at `received`."""
    return (not calendar.is_open(received), calendar.next_open(received))
