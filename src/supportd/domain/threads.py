"""Threading rules: which ticket a message joins (pure; the service supplies the lookups).

A message joins an existing ticket only
- through a Message-ID stored or issued for that ticket (In-Reply-To, then References
  from the nearest parent back), or through a stored message of that ticket that
  answers it or shares its parent (out-of-order arrival), or
- through the ticket tag ``[<product> #<number>]`` in its subject, and only when the
  sender is that ticket's requester or a participant.
A tag from anybody else opens a new ticket: guessing a number must not reveal or
extend somebody else's ticket.

A Message-ID is no secret: every copy of a mail carries it, and newsletters, lists,
forwards and broken mailers (<1@localhost>) hand the same one to many people. So a stored
message that supportd did not write links a new mail to its ticket only when the two are
between the same people (`replies_to`, `answered_by`, `sibling_of`): otherwise one
customer could plant a newsletter's Message-ID and receive the answers to everyone who
replies to that newsletter. Message-IDs supportd issued (its own mail) link as before.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from supportd.domain.mail import ParsedMail


class ThreadReason(StrEnum):
    REFERENCE = "reference"
    RELATED = "related"
    TAG = "tag"
    NEW = "new"
    TAG_REFUSED = "tag_refused"


@dataclass(frozen=True, slots=True)
class ThreadDecision:
    ticket: int | None
    reason: ThreadReason

    @property
    def is_new(self) -> bool:
        return self.ticket is None


@lru_cache(maxsize=32)
def _tag_pattern(product: str) -> re.Pattern[str]:
    return re.compile(r"\[\s*" + re.escape(product) + r"\s*#\s*(\d{1,18})\s*\]", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Seen:
    """A stored message found by its Message-ID (or its parent's): its ticket and who
    wrote it to whom."""

    ticket: int
    ours: bool  # written by supportd (an acknowledgement, a relayed answer): an issued ID
    author: str = ""
    addressed: frozenset[str] = frozenset()  # its To and Cc


def _sender(mail: ParsedMail) -> str:
    return mail.sender.email if mail.sender else ""


def _addressed(mail: ParsedMail) -> frozenset[str]:
    return frozenset(a.email for a in (*mail.to, *mail.cc) if a.email)


def seen_in(ticket: int, mail: ParsedMail) -> Seen:
    """An incoming `mail` on `ticket`, as later mail of its batch finds it."""
    return Seen(ticket, False, _sender(mail), _addressed(mail))


def replies_to(mail: ParsedMail, parent: Seen) -> bool:
    """`mail` answers the stored `parent`: its author's follow-up, or a reply to its author."""
    return parent.ours or _to_or_from_author(mail, parent)


def answered_by(mail: ParsedMail, child: Seen) -> bool:
    """The stored `child` answers `mail`, which arrives after it: it came from the same
    sender, or was written to that sender."""
    if child.ours:
        return True
    sender = _sender(mail)
    return bool(sender) and (sender == child.author or sender in child.addressed)


def sibling_of(mail: ParsedMail, sibling: Seen) -> bool:
    """`mail` and the stored `sibling` answer the same message: the same sender, or `mail`
    is written to the sibling's author too (a reply to all)."""
    return _to_or_from_author(mail, sibling)


def _to_or_from_author(mail: ParsedMail, stored: Seen) -> bool:
    sender = _sender(mail)
    return bool(sender) and (sender == stored.author or stored.author in _addressed(mail))


def ticket_tag(product: str, number: int) -> str:
    """The tag supportd puts in subjects: ``[<product> #<number>]``."""
    return f"[{product} #{number}]"


def find_tag(subject: str, product: str) -> int | None:
    """The ticket number tagged in a subject, or None."""
    match = _tag_pattern(product).search(subject or "")
    return int(match.group(1)) if match else None


def strip_tag(subject: str, product: str) -> str:
    """The subject without our tag and leading reply prefixes."""
    cleaned = _tag_pattern(product).sub("", subject or "")
    cleaned = re.sub(r"^\s*((re|fw|fwd|aw|sv|wg)\s*:\s*)+", "", cleaned, flags=re.IGNORECASE)
    return " ".join(cleaned.split())


def decide(
    mail: ParsedMail,
    product: str,
    ticket_for_message_id: Mapping[str, int],
    participants_of: Callable[[int], frozenset[str]],
    ticket_of_related: int | None = None,
) -> ThreadDecision:
    """Which ticket `mail` joins; None in the decision means a new ticket.

    `ticket_of_related` is the ticket holding a stored reply to this very message, or a
    stored reply to the same parent (mail arrives out of order: replies before what
    they answer).
    """
    for mid in mail.thread_references():
        number = ticket_for_message_id.get(mid)
        if number is not None:
            return ThreadDecision(number, ThreadReason.REFERENCE)
    if ticket_of_related is not None:
        return ThreadDecision(ticket_of_related, ThreadReason.RELATED)
    tagged = find_tag(mail.subject, product)
    if tagged is not None:
        sender = mail.sender.email if mail.sender else ""
        if sender and sender in participants_of(tagged):
            return ThreadDecision(tagged, ThreadReason.TAG)
        return ThreadDecision(None, ThreadReason.TAG_REFUSED)
    return ThreadDecision(None, ThreadReason.NEW)


def new_participants(
    mail: ParsedMail, requester: str, desk_addresses: Iterable[str]
) -> frozenset[str]:
    """Addresses that become participants: the requester and whom the requester put in To/Cc."""
    sender = mail.sender.email if mail.sender else ""
    if not requester or sender != requester:
        return frozenset()
    # The desk's and agents' own mailboxes, with any +detail ("support+billing@"): Cc'd on
    # every answer, the desk would read its own mail back as the customer's.
    excluded = {_mailbox(a.lower()) for a in desk_addresses}
    found = {requester}
    for addr in (*mail.to, *mail.cc):
        if addr.email and _mailbox(addr.email) not in excluded and _plain(addr.email):
            found.add(addr.email)
    return frozenset(found)


def _mailbox(address: str) -> str:
    """The address without its +detail (subaddress, RFC 5233)."""
    local, at, domain = address.rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain}" if at else address


def _plain(address: str) -> bool:
    """A participant's address has no quotes, commas, spaces or brackets: a quoted local
    part such as "support@desk, x"@evil would split into two recipients later."""
    return address.count("@") == 1 and not any(c in address for c in '",;<> \t')
