"""Whether an incoming mail gets an acknowledgement (invariant 4: no mail loops).

Pure: every input is data, including how many acknowledgements the sender got lately.
Each rule returns its own reason, so a suppressed reply can be explained on the ticket.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime

from supportd.domain.mail import ParsedMail
from supportd.domain.robots import automatic_reason

_OUR_ID = re.compile(r"^<supportd\.(\d+)\.([0-9a-f]{12})@([^>]+)>$")
# What an SMTP envelope can carry: no spaces, quotes, brackets or control characters.
_MAILBOX = re.compile(r"^[^\s@<>()\[\],;:\\\"]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")


def outgoing_message_id(row_id: int, domain: str, secret: str) -> str:
    """The deterministic, unforgeable Message-ID of outbox row `row_id`."""
    return f"<supportd.{row_id}.{_sign(row_id, secret)}@{domain}>"


def _sign(row_id: int, secret: str) -> str:
    return hmac.new(secret.encode(), f"outbox:{row_id}".encode(), hashlib.sha256).hexdigest()[:12]


def issued_by_us(message_id: str | None, secret: str) -> bool:
    """True for a Message-ID that supportd generated (signature checked)."""
    match = _OUR_ID.match(message_id or "")
    if match is None:
        return False
    return hmac.compare_digest(match.group(2), _sign(int(match.group(1)), secret))


@dataclass(frozen=True)
class ReplyFacts:
    """What the desk knows when it decides about one incoming mail."""

    new_ticket: bool
    sender: str
    desk_addresses: frozenset[str]
    agents: frozenset[str]
    secret: str
    sent_to_sender_last_24h: int
    per_sender_limit: int
    suppressed_until: datetime | None
    now: datetime
    enabled: bool = True
    automatic: str | None = None  # the robot verdict when the caller has it (None: judge)


@dataclass(frozen=True)
class ReplyDecision:
    send: bool
    reason: str

    def describe(self) -> str:
        return "sent" if self.send else f"suppressed: {self.reason}"


def decide_acknowledgement(mail: ParsedMail, facts: ReplyFacts) -> ReplyDecision:
    """Send an acknowledgement only to a person who opened a new ticket, within limits."""
    robot = automatic_reason(mail) if facts.automatic is None else facts.automatic
    if robot:
        return ReplyDecision(False, robot)
    if issued_by_us(mail.message_id, facts.secret):
        return ReplyDecision(False, "our own message came back")
    if not _MAILBOX.match(facts.sender):
        return ReplyDecision(False, f"no usable reply address ({facts.sender or 'none'})")
    if facts.sender in facts.agents:
        return ReplyDecision(False, "sender is an agent")
    if facts.sender in facts.desk_addresses:
        return ReplyDecision(False, "sender is the support address")
    if not facts.enabled:
        return ReplyDecision(False, "acknowledgements are turned off")
    if not facts.new_ticket:
        return ReplyDecision(False, "follow-up on an existing ticket")
    if facts.suppressed_until is not None and facts.suppressed_until > facts.now:
        return ReplyDecision(
            False,
            f"address bounced permanently; no replies until {facts.suppressed_until:%Y-%m-%d}",
        )
    if facts.sent_to_sender_last_24h >= facts.per_sender_limit:
        return ReplyDecision(
            False, f"rate limit: {facts.sent_to_sender_last_24h} acknowledgements in 24 hours"
        )
    return ReplyDecision(True, "")
