"""Response clocks and escalation, with the desk's clock set to chosen instants.

Mail is APPENDed at past INTERNALDATEs (the clock starts when mail reached the mailbox);
the ingest, the scan and the outbox all read one injected clock. Policy: 14 business
hours, Saturday–Thursday 10:00–18:00 Asia/Dhaka, warning at 75 %.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from supportd.adapters.db.models import OutboxItem
from supportd.adapters.db.views import list_tickets, show_ticket
from supportd.bootstrap import Desk
from tests.conftest import desk_config, write_toml
from tests.support.desk import imap, make_desk, run_once
from tests.support.dovecot import Account, Dovecot
from tests.support.mail import make_mail
from tests.support.smtp import Sink

DHAKA = ZoneInfo("Asia/Dhaka")
LEAD = "lead@desk.example"
AGENT = "agent@desk.example"


def dhaka(*args: int) -> datetime:
    return datetime(*args, tzinfo=DHAKA)  # type: ignore[misc]


class Now:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at.astimezone(UTC)


def desk_at(db_url: str, dovecot: Dovecot, account: Account, now: Now, **extra: Any) -> Desk:
    desk = make_desk(db_url, dovecot, account, support__escalation=[LEAD], **extra)
    desk.ingestor.clock = now
    desk.outbox.clock = now
    assert desk.escalator is not None
    desk.escalator.clock = now
    return desk


def arrive(dovecot: Dovecot, account: Account, when: datetime, n: int = 1, **headers: str) -> None:
    with imap(dovecot, account) as client:
        client.append(
            "INBOX",
            make_mail(
                sender=f"Customer {n} <c{n}@customer.example>",
                subject=f"Question {n}",
                message_id=f"<q{n}-{when.timestamp():.0f}@customer.example>",
                **headers,
            ),
            msg_time=when,
        )


def escalations(smtp: Sink) -> list[str]:
    return [str(r.message["Subject"]) for r in smtp.received if LEAD in r.recipients]


def test_warning_once_then_breach_once(
    db_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    now = Now(dhaka(2026, 11, 22, 10, 5))  # Sunday
    arrive(dovecot, account, dhaka(2026, 11, 22, 10, 0))
    desk = desk_at(db_url, dovecot, account, now)
    run_once(desk)
    [ticket] = list_tickets(desk.engine)
    # 8 h on Sunday, 6 h on Monday: due Monday 16:00; warning at 10.5 h, Monday 12:30.
    assert ticket["next_response_due"] == dhaka(2026, 11, 23, 16, 0).astimezone(UTC).isoformat()
    for at, expected in [
        (dhaka(2026, 11, 23, 12, 29), []),
        (dhaka(2026, 11, 23, 12, 31), ["[Desk #1] SLA warning: Question 1"]),
        (dhaka(2026, 11, 23, 13, 0), ["[Desk #1] SLA warning: Question 1"]),
        (
            dhaka(2026, 11, 23, 16, 1),
            ["[Desk #1] SLA warning: Question 1", "[Desk #1] SLA breached: Question 1"],
        ),
        (
            dhaka(2026, 11, 24, 11, 0),
            ["[Desk #1] SLA warning: Question 1", "[Desk #1] SLA breached: Question 1"],
        ),
    ]:
        now.at = at
        run_once(desk)
        assert escalations(smtp) == expected, at
    assert list_tickets(desk.engine)[0]["escalation_level"] == 2
    breach = next(r.message for r in smtp.received if "breached" in str(r.message["Subject"]))
    assert breach["Auto-Submitted"] == "auto-generated"
    body = breach.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Requester: Customer 1 <c1@customer.example>" in body
    assert "(Asia/Dhaka)" in body and "UTC" in body and "Overdue by" in body
    kinds = [m["kind"] for m in show_ticket(desk.engine, 1)["messages"]]  # type: ignore[index]
    assert kinds.count("escalation") == 2


def test_after_downtime_only_the_breach_is_sent(
    sqlite_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    arrive(dovecot, account, dhaka(2026, 11, 22, 10, 0))
    now = Now(dhaka(2026, 11, 24, 11, 0))  # the desk was down until Tuesday
    desk = desk_at(sqlite_url, dovecot, account, now)
    run_once(desk)
    assert escalations(smtp) == ["[Desk #1] SLA breached: Question 1"]


def test_escalations_wait_for_support_hours(
    sqlite_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    # Wednesday 14:00: 4 h Wednesday, the warning at 10.5 h is Thursday 16:30. The desk was
    # down from Thursday afternoon and comes back on Friday, when support is closed.
    arrive(dovecot, account, dhaka(2026, 11, 25, 14, 0))
    now = Now(dhaka(2026, 11, 27, 12, 0))
    desk = desk_at(sqlite_url, dovecot, account, now)
    run_once(desk)
    assert escalations(smtp) == []
    now.at = dhaka(2026, 11, 28, 10, 0, 30)
    run_once(desk)
    assert escalations(smtp) == ["[Desk #1] SLA warning: Question 1"]


def test_a_bangladesh_holiday_and_a_friday_in_the_window(
    sqlite_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    # Wednesday 25 March 2026, 17:00: 1 h; Thursday 26 March is Independence Day, Friday
    # is closed; Saturday 8 h, Sunday 5 h: due Sunday 29 March 15:00.
    arrive(dovecot, account, dhaka(2026, 3, 25, 17, 0))
    desk = desk_at(sqlite_url, dovecot, account, Now(dhaka(2026, 3, 25, 17, 5)))
    run_once(desk)
    [ticket] = list_tickets(desk.engine)
    assert ticket["next_response_due"] == dhaka(2026, 3, 29, 15, 0).astimezone(UTC).isoformat()


def _answer(desk: Desk, dovecot: Dovecot, account: Account, words: str, when: datetime) -> None:
    from supportd.domain.agents import reply_token

    token = reply_token("test-secret-key-0123456789", 1, AGENT)
    with imap(dovecot, account) as client:
        client.append(
            "INBOX",
            make_mail(
                sender=AGENT,
                to=f"support+{token}@desk.example",
                subject="Re: [Desk #1] Question 1",
                body=words,
                message_id=f"<a{when.timestamp():.0f}@desk.example>",
            ),
            msg_time=when,
        )


def test_the_answer_stops_the_clock_and_a_follow_up_starts_the_next_one(
    db_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    now = Now(dhaka(2026, 11, 22, 10, 5))
    arrive(dovecot, account, dhaka(2026, 11, 22, 10, 0))
    desk = desk_at(db_url, dovecot, account, now)
    run_once(desk)
    now.at = dhaka(2026, 11, 23, 12, 45)
    run_once(desk)
    assert escalations(smtp) == ["[Desk #1] SLA warning: Question 1"]

    _answer(desk, dovecot, account, "Please update to 1.4.", dhaka(2026, 11, 23, 12, 50))
    now.at = dhaka(2026, 11, 23, 12, 55)
    run_once(desk)
    [ticket] = list_tickets(desk.engine)
    assert ticket["escalation_level"] == 0 and ticket["next_response_due"] is None
    assert ticket["first_responded_at"] is not None
    now.at = dhaka(2026, 11, 24, 17, 0)  # long past the first due time: nothing
    run_once(desk)
    assert len(escalations(smtp)) == 1

    with imap(dovecot, account) as client:  # the customer answers: the next clock runs
        client.append(
            "INBOX",
            make_mail(
                sender="c1@customer.example",
                subject="Re: [Desk #1] Question 1",
                body="Still broken.",
                message_id="<f1@customer.example>",
                In_Reply_To="<q1-x@customer.example>",
            ),
            msg_time=dhaka(2026, 11, 24, 17, 30),
        )
    run_once(desk)
    [ticket] = list_tickets(desk.engine)
    # From Tuesday 17:30: 0.5 h Tuesday, 8 h Wednesday, 5.5 h Thursday: Thursday 15:30.
    assert ticket["next_response_due"] == dhaka(2026, 11, 26, 15, 30).astimezone(UTC).isoformat()


def test_pending_pauses_the_clock(
    sqlite_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    now = Now(dhaka(2026, 11, 22, 10, 5))
    arrive(dovecot, account, dhaka(2026, 11, 22, 10, 0))
    desk = desk_at(sqlite_url, dovecot, account, now)
    run_once(desk)
    _answer(desk, dovecot, account, "#pending", dhaka(2026, 11, 22, 11, 0))  # 1 h used
    run_once(desk)
    now.at = dhaka(2026, 11, 24, 17, 0)
    run_once(desk)
    assert escalations(smtp) == []
    [ticket] = list_tickets(desk.engine)
    assert ticket["status"] == "pending" and ticket["next_response_due"] is None


def test_supportd_sla_lists_the_most_urgent_first(
    sqlite_url: str, dovecot: Dovecot, account: Account, smtp: Sink, tmp_path: Path
) -> None:
    recent = datetime.now(UTC) - timedelta(minutes=5)
    arrive(dovecot, account, datetime.now(UTC) - timedelta(days=3), n=1)  # overdue
    arrive(dovecot, account, recent, n=2)
    make_desk(sqlite_url, dovecot, account)  # migrates
    config = write_toml(  # escalations at any hour: the test runs at any hour
        tmp_path / "supportd.toml",
        desk_config(
            sqlite_url,
            account,
            dovecot.port,
            sla__notify_outside_hours=True,
            support__escalation=[LEAD],
        ),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTD_")}

    def supportd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "supportd", "--config", str(config), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    ran = supportd("run", "--once")
    assert ran.returncode == 0, ran.stderr
    result = supportd("sla", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["number"] for r in rows] == [1, 2]
    assert set(rows[0]) == {
        "number",
        "subject",
        "requester",
        "status",
        "due",
        "business_hours_left",
        "escalation_level",
    }
    assert rows[0]["business_hours_left"] < 0 < rows[1]["business_hours_left"]
    assert rows[0]["escalation_level"] == 2  # the scan breached it in the same run
    table = supportd("sla").stdout
    assert "BREACHED" in table and "Question 2" in table
    with make_desk(sqlite_url, dovecot, account).engine.connect() as conn:
        kinds = list(conn.execute(select(OutboxItem.kind)).scalars())
    assert kinds.count("escalation") == 1


@pytest.fixture(autouse=True)
def _quiet(smtp: Sink) -> None:
    """Every test here gets an empty sink."""


@pytest.mark.slow
def test_sigkill_during_escalations_sends_each_once(
    db_url: str, dovecot: Dovecot, account: Account, smtp: Sink, tmp_path: Path
) -> None:
    """200 tickets past their target; the daemon is killed at random moments while it
    ingests, scans and sends. Each ticket gets exactly one breach queued, and a mail can
    repeat only for the rows in flight at a kill (one per SMTP connection)."""
    import random
    import signal

    from sqlalchemy import func

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    long_ago = datetime.now(UTC) - timedelta(days=6)
    with imap(dovecot, account) as client:
        for n in range(200):
            client.append(
                "INBOX",
                make_mail(
                    sender=f"c{n}@customer.example",
                    subject=f"Question {n}",
                    message_id=f"<k{n}@customer.example>",
                ),
                msg_time=long_ago,
            )
    make_desk(db_url, dovecot, account)  # migrates
    config = write_toml(
        tmp_path / "supportd.toml",
        desk_config(
            db_url,
            account,
            dovecot.port,
            imap__batch_size=20,
            sla__notify_outside_hours=True,
            support__escalation=[LEAD],
            support__agents=[],
        ),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTD_")}
    kills = 0
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "supportd", "--config", str(config), "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.8, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
    final = subprocess.run(
        [sys.executable, "-m", "supportd", "--config", str(config), "run", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert final.returncode == 0, final.stderr
    desk = make_desk(db_url, dovecot, account)
    with desk.engine.connect() as conn:
        per_ticket = conn.execute(
            select(OutboxItem.ticket_number, func.count())
            .where(OutboxItem.kind == "escalation")
            .group_by(OutboxItem.ticket_number)
        ).all()
        pending = conn.execute(
            select(func.count()).where(OutboxItem.status != "sent").select_from(OutboxItem)
        ).scalar_one()
    assert len(per_ticket) == 200 and all(n == 1 for _, n in per_ticket), f"seed {seed}"
    assert pending == 0
    mails = [s for s in escalations(smtp) if "SLA breached" in s]
    assert not [s for s in escalations(smtp) if "SLA warning" in s]  # only the breach
    # Repeats: at most the rows in flight at a kill, one per SMTP connection (4 by default).
    assert 200 <= len(mails) <= 200 + 4 * kills, f"seed {seed}: {len(mails)} breach mails"
    assert len(set(mails)) == 200
