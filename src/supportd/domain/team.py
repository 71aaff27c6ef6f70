"""What the desk tells its team about a ticket, as data (the wording is in templates)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from supportd.domain.mail import Address


@dataclass(frozen=True, slots=True)
class TicketFacts:
    """The facts block of a notification, and what a relay needs to know of its ticket."""

    number: int
    tag: str
    subject: str
    requester: Address
    category: str
    status: str
    due: datetime | None
    assignee: str | None = None
    continues: int | None = None


@dataclass(frozen=True, slots=True)
class TicketState:
    """A ticket as the team's commands and the reopen rule see it."""

    number: int
    subject: str
    requester: str
    requester_name: str
    status: str
    category: str
    due: datetime | None
    assignee: str | None = None
    closed_at: datetime | None = None
    continues: int | None = None
    first_responded_at: datetime | None = None
    # The response clock (see domain/sla.py); clock_started_at None: not awaiting the team.
    clock_started_at: datetime | None = None
    clock_first: bool = True
    clock_paused: float = 0.0  # seconds of support time spent paused
    clock_paused_since: datetime | None = None
    escalation_level: int = 0


@dataclass(frozen=True, slots=True)
class ThreadHead:
    """The message an answer to the customer is threaded to (their latest)."""

    message_id: str | None
    references: tuple[str, ...]


def reply_subject(tag: str, subject: str) -> str:
    """'Re: [WPERP #12] Subject', whatever prefixes and tag the subject carried."""
    return f"Re: {tag} {subject}".strip()
