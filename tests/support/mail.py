"""Building test messages."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime


def make_mail(
    sender: str = "Alice <alice@customer.example>",
    subject: str = "Help with installation",
    body: str = "The installer stops.",
    message_id: str | None = "<a1@customer.example>",
    to: str = "support@desk.example",
    date: datetime | None = None,
    **headers: str,
) -> bytes:
    msg = EmailMessage()
    if sender:
        msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date or datetime(2026, 11, 22, 6, 0, tzinfo=UTC))
    if message_id:
        msg["Message-ID"] = message_id
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()
