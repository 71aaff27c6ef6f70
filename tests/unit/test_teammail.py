"""Notifications written when they are sent: the intent stored in the ingest transaction
renders to the same mail as writing it at once, in this process or in another one."""

from __future__ import annotations

import json
import pickle
import re
from datetime import UTC, datetime

from supportd.adapters.teammail import TeamComposer
from supportd.domain.agents import Agent
from supportd.domain.mail import Address
from supportd.domain.team import TicketFacts
from supportd.services.records import Deferred
from tests.unit.test_compose import composer

FACTS = TicketFacts(
    number=42,
    tag="[WPERP #42]",
    subject="Payroll export is blank",
    requester=Address("rahim@example.com", "Rahim Uddin"),
    category="technical",
    status="open",
    due=datetime(2026, 11, 30, 8, 0, tzinfo=UTC),
    assignee=None,
    continues=7,
)
AGENT = Agent("nadia@desk.example", "Nadia")
CUSTOMER = Address("rahim@example.com", "Rahim Uddin")
TEXT = "The export page is blank since the update.\n\nঅনুগ্রহ করে দেখুন — thanks!\n"
PLAIN = b"From: rahim@example.com\r\nSubject: x\r\nContent-Type: text/plain\r\n\r\nhi\r\n"


def _team() -> TeamComposer:
    return TeamComposer(composer(), secret="s3cret", forward_limit=1_000_000)


def _without_date(raw: bytes) -> bytes:
    """The mail without what differs on every writing: its Date and MIME boundaries."""
    for boundary in re.findall(rb'boundary="([^"]+)"', raw):
        raw = raw.replace(boundary, b"BOUNDARY")
    return re.sub(rb"\r\nDate: [^\r]*", b"", raw)


def test_a_notification_without_files_is_deferred_and_renders_as_if_written_at_once() -> None:
    team = _team()
    subject, text, payload = team.notification(FACTS, AGENT, CUSTOMER, TEXT, PLAIN, "<n1@x>")
    assert isinstance(payload, Deferred)
    assert subject == "[WPERP #42] Payroll export is blank" and text == TEXT
    now = team._notification(FACTS, AGENT, CUSTOMER, TEXT, PLAIN, "<n1@x>")[2]
    assert payload.quoted == TEXT and TEXT not in payload.intent  # kept apart: see plan
    later = team.render(payload.whole, "<n1@x>")
    assert _without_date(later) == _without_date(now)
    assert b"Message-ID: <n1@x>" in later and b"Reply-To: " in later


def test_the_worker_process_renders_the_same_mail_from_its_spec() -> None:
    team = _team()
    payload = team.notification(FACTS, AGENT, CUSTOMER, TEXT, PLAIN, "<n2@x>")[2]
    assert isinstance(payload, Deferred)
    elsewhere = pickle.loads(pickle.dumps(team.spec())).build()
    assert _without_date(elsewhere.render(payload.whole, "<n2@x>")) == _without_date(
        team.render(payload.whole, "<n2@x>")
    )


def test_an_intent_queued_before_the_text_moved_out_of_its_json_still_renders() -> None:
    """Rows queued by the previous release hold one JSON object, the text inside it."""
    team = _team()
    payload = team.notification(FACTS, AGENT, CUSTOMER, TEXT, PLAIN, "<n4@x>")[2]
    assert isinstance(payload, Deferred)
    facts_line, _, text = payload.whole.partition("\n")
    assert text == TEXT and "\n" not in facts_line
    old = json.dumps({**json.loads(facts_line), "text": text}, ensure_ascii=False)
    assert _without_date(team.render(old, "<n4@x>")) == _without_date(
        team.render(payload.whole, "<n4@x>")
    )


def test_a_notification_with_files_is_written_at_once() -> None:
    raw = (
        b"From: rahim@example.com\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n"
        b'Content-Type: application/pdf; name="a.pdf"\r\n'
        b'Content-Disposition: attachment; filename="a.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n"
    )
    payload = _team().notification(FACTS, AGENT, CUSTOMER, "see attached", raw, "<n3@x>")[2]
    assert isinstance(payload, bytes) and b"a.pdf" in payload
