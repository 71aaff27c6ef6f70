"""Loop protection: each rule on its own."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from supportd.domain.autoreply import (
    ReplyFacts,
    decide_acknowledgement,
    issued_by_us,
    outgoing_message_id,
)
from supportd.domain.mail import Address, ParsedMail

NOW = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
SECRET = "s3cret-key-0123456789"


def mail(sender: str = "alice@customer.example", **headers: str) -> ParsedMail:
    return ParsedMail(
        message_id="<m1@customer.example>",
        in_reply_to=(),
        references=(),
        sender=Address(sender),
        to=(),
        cc=(),
        reply_to=(),
        subject="Help",
        date_header="",
        date=None,
        text="",
        auto_headers={k.replace("_", "-"): v for k, v in headers.items()},
    )


FACTS = ReplyFacts(
    new_ticket=True,
    sender="alice@customer.example",
    desk_addresses=frozenset({"support@desk.example", "agent@desk.example"}),
    agents=frozenset({"agent@desk.example"}),
    secret=SECRET,
    sent_to_sender_last_24h=0,
    per_sender_limit=3,
    suppressed_until=None,
    now=NOW,
)


def test_a_person_opening_a_ticket_gets_one() -> None:
    assert decide_acknowledgement(mail(), FACTS).send


@pytest.mark.parametrize(
    ("m", "facts", "reason"),
    [
        (mail(auto_submitted="auto-replied"), FACTS, "Auto-Submitted"),
        (mail(precedence="bulk"), FACTS, "Precedence"),
        (mail(list_id="<l.example>"), FACTS, "mailing list"),
        (mail(x_auto_response_suppress="All"), FACTS, "X-Auto-Response-Suppress"),
        (mail("noreply@shop.example"), replace(FACTS, sender="noreply@shop.example"), "robot"),
        (mail("agent@desk.example"), replace(FACTS, sender="agent@desk.example"), "agent"),
        (mail("support@desk.example"), replace(FACTS, sender="support@desk.example"), "support"),
        (mail(), replace(FACTS, new_ticket=False), "follow-up"),
        (mail(), replace(FACTS, sent_to_sender_last_24h=3), "rate limit"),
        (mail(), replace(FACTS, suppressed_until=NOW + timedelta(days=3)), "bounced"),
        (mail(), replace(FACTS, enabled=False), "turned off"),
        (mail("big bug"), replace(FACTS, sender="big bug"), "no usable reply address"),
    ],
)
def test_each_rule_suppresses_with_its_reason(
    m: ParsedMail, facts: ReplyFacts, reason: str
) -> None:
    decision = decide_acknowledgement(m, facts)
    assert not decision.send
    assert reason in decision.reason
    assert decision.describe().startswith("suppressed: ")


def test_an_expired_suppression_no_longer_applies() -> None:
    facts = replace(FACTS, suppressed_until=NOW - timedelta(seconds=1))
    assert decide_acknowledgement(mail(), facts).send


def test_our_own_message_ids_are_recognised_and_unforgeable() -> None:
    ours = outgoing_message_id(42, "desk.example", SECRET)
    assert issued_by_us(ours, SECRET)
    assert not issued_by_us(ours.replace("supportd.42.", "supportd.43."), SECRET)
    assert not issued_by_us(outgoing_message_id(42, "desk.example", "other-secret-123456"), SECRET)
    looped = replace(mail(), message_id=ours)
    assert "our own message" in decide_acknowledgement(looped, FACTS).reason


def test_message_ids_are_deterministic() -> None:
    assert outgoing_message_id(7, "d.example", SECRET) == outgoing_message_id(
        7, "d.example", SECRET
    )
