"""Real-world mail from other projects' test suites, through Dovecot into tickets."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest
from sqlalchemy import select

from supportd.adapters.db.models import DuplicateDelivery, MessageRow, QuarantineItem
from supportd.adapters.db.views import list_outbox
from tests.conftest import CORPUS
from tests.support.desk import count, incoming, make_desk, run_once
from tests.support.dovecot import Account, Dovecot
from tests.support.smtp import Sink

pytestmark = pytest.mark.slow


def corpus_emails() -> list[tuple[Path, str]]:
    manifest = CORPUS / "MANIFEST.tsv"
    if not manifest.exists():
        return []
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [(CORPUS / r["local_file"], r["category"]) for r in rows if r["kind"] == "email"]


@pytest.mark.skipif(not corpus_emails(), reason=f"corpus not found at {CORPUS}")
def test_every_corpus_message_is_stored_or_quarantined(
    sqlite_url: str, dovecot: Dovecot, account: Account
) -> None:
    files = corpus_emails()
    for path, _category in files:
        dovecot.deliver(account, path.read_bytes())
    desk = make_desk(sqlite_url, dovecot, account, imap__batch_size=50)
    stats = run_once(desk)  # must not raise, whatever the corpus holds
    stored = incoming(desk.engine)
    duplicates = count(desk.engine, DuplicateDelivery)
    quarantined = count(desk.engine, QuarantineItem)
    print(
        f"corpus: {len(files)} messages -> stored {stored}, duplicate deliveries {duplicates}, "
        f"quarantined {quarantined}"
    )
    assert stored + duplicates + quarantined == len(files)
    assert (stats.stored, stats.duplicates, stats.quarantined) == (stored, duplicates, quarantined)
    assert quarantined == 0

    # Raw bytes are kept whole: each stored message is one of the delivered files, byte for
    # byte except for the CRLF line ends Dovecot serves.
    def fold(data: bytes) -> str:
        return hashlib.sha256(data.replace(b"\r\n", b"\n")).hexdigest()

    delivered = {fold(p.read_bytes()) for p, _ in files}
    with desk.engine.connect() as conn:
        query = select(MessageRow.raw, MessageRow.size).where(MessageRow.direction == "in")
        for raw, size in conn.execute(query):
            assert len(raw) == size
            assert fold(raw) in delivered


ROBOTS = {"auto_reply", "bounce_dsn", "mailing_list"}


@pytest.mark.skipif(not corpus_emails(), reason=f"corpus not found at {CORPUS}")
def test_robots_get_no_acknowledgement_and_people_exactly_one(
    sqlite_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    files = corpus_emails()
    category_of = {}
    for path, category in files:
        raw = path.read_bytes()
        category_of[hashlib.sha256(raw.replace(b"\r\n", b"\n")).hexdigest()] = category
        dovecot.deliver(account, raw)
    # Many corpus messages share a sender; lift the per-sender limit to see every decision.
    desk = make_desk(
        sqlite_url, dovecot, account, imap__batch_size=50, support__autoreply_per_sender=10_000
    )
    run_once(desk)
    with desk.engine.connect() as conn:
        rows = conn.execute(
            select(
                MessageRow.id,
                MessageRow.ticket_number,
                MessageRow.raw,
                MessageRow.automatic,
                MessageRow.reply_decision,
            ).where(MessageRow.direction == "in")
        ).all()
        acks = (
            conn.execute(select(MessageRow.ticket_number).where(MessageRow.kind == "auto_reply"))
            .scalars()
            .all()
        )
    first_of_ticket: dict[int, int] = {}
    for row in rows:
        first_of_ticket.setdefault(row.ticket_number, row.id)
        first_of_ticket[row.ticket_number] = min(first_of_ticket[row.ticket_number], row.id)
    sent = 0
    people = 0
    for row in rows:
        category = category_of[hashlib.sha256(row.raw.replace(b"\r\n", b"\n")).hexdigest()]
        if category in ROBOTS:
            assert row.reply_decision != "sent", f"acknowledged a robot ({category})"
            continue
        if row.reply_decision == "sent":
            sent += 1
        opened_ticket = first_of_ticket[row.ticket_number] == row.id
        if (
            opened_ticket
            and not row.automatic
            and "no usable reply address" not in row.reply_decision
        ):
            people += 1
            assert row.reply_decision == "sent", row.reply_decision
    reached = [r for r in smtp.received if r.message["Auto-Submitted"] == "auto-replied"]
    notified = [r for r in smtp.received if r.recipients == ["agent@desk.example"]]
    print(
        f"corpus: {sent} acknowledgements for {people} tickets opened by people; "
        f"{len(reached)} reached the SMTP sink, with {len(notified)} notifications to the agent"
    )
    assert sent == people == len(reached) == len(acks)
    # Every notification of the corpus's mail (attachments, charsets, broken MIME) went out.
    assert list_outbox(desk.engine, "failed") == [] and list_outbox(desk.engine, "pending") == []
    assert len(notified) >= people
    assert len(set(acks)) == len(acks)  # one per ticket
