"""Acknowledgements end to end: Dovecot in, aiosmtpd out, SQLite and PostgreSQL between."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from supportd.adapters.db.models import MessageRow, Suppression
from supportd.adapters.db.views import list_outbox, list_tickets, show_ticket
from supportd.adapters.parsepool import parse_serial
from supportd.bootstrap import Desk
from supportd.domain.autoreply import issued_by_us
from tests.conftest import SMTP_PORT
from tests.support.desk import append, imap, run_once
from tests.support.desk import make_desk as _make_desk
from tests.support.dovecot import Account, Dovecot
from tests.support.mail import make_mail
from tests.support.smtp import Sink

DHAKA = ZoneInfo("Asia/Dhaka")
SECRET = "test-secret-key-0123456789"


def arrive(dovecot: Dovecot, account: Account, raw: bytes, when: datetime) -> None:
    with imap(dovecot, account) as client:
        client.append("INBOX", raw, msg_time=when)


def make_desk(*args: Any, **overrides: Any) -> Desk:
    """Desks without agents: these tests watch acknowledgements, not notifications."""
    overrides.setdefault("support__agents", [])
    return _make_desk(*args, **overrides)


@pytest.mark.parametrize(
    ("arrived", "due", "outside"),
    [
        (
            datetime(2026, 11, 22, 12, 0, tzinfo=DHAKA),
            datetime(2026, 11, 23, 18, 0, tzinfo=DHAKA),
            False,
        ),
        (
            datetime(2026, 11, 19, 17, 0, tzinfo=DHAKA),
            datetime(2026, 11, 22, 15, 0, tzinfo=DHAKA),
            False,
        ),
        (
            datetime(2026, 11, 20, 12, 0, tzinfo=DHAKA),
            datetime(2026, 11, 22, 16, 0, tzinfo=DHAKA),
            True,
        ),
        # Wednesday 4 February 2026 (Mid-Sha'ban) is a public holiday in Bangladesh: 8 h on
        # Thursday, Friday closed, 6 h on Saturday. (Dovecot keeps no INTERNALDATE in the
        # future, so the holiday is a past one.)
        (
            datetime(2026, 2, 4, 12, 0, tzinfo=DHAKA),
            datetime(2026, 2, 7, 16, 0, tzinfo=DHAKA),
            True,
        ),
    ],
    ids=["in-hours", "thursday-evening", "friday", "public-holiday"],
)
def test_one_acknowledgement_with_headers_and_due_time(
    arrived: datetime,
    due: datetime,
    outside: bool,
    db_url: str,
    dovecot: Dovecot,
    account: Account,
    smtp: Sink,
) -> None:
    arrive(dovecot, account, make_mail(message_id="<q1@customer.example>"), arrived)
    desk = make_desk(db_url, dovecot, account, support__product="WPERP")
    run_once(desk)
    [ticket] = list_tickets(desk.engine)
    assert ticket["first_response_due"] == due.astimezone(UTC).isoformat()
    assert ticket["category"] == "installation"
    [ack] = smtp.received
    assert ack.recipients == ["alice@customer.example"]
    assert ack.sender == "support@desk.example"
    msg = ack.message
    assert msg["Subject"] == f"[WPERP #{ticket['number']}] Help with installation"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["In-Reply-To"] == "<q1@customer.example>"
    assert "<q1@customer.example>" in msg["References"]
    assert issued_by_us(msg["Message-ID"], SECRET)
    text = msg.get_body(("plain",)).get_content()
    assert f"{due:%A %d %B %Y, %H:%M}" in text
    assert ("outside our support hours" in text) is outside
    detail = show_ticket(desk.engine, ticket["number"])
    assert detail is not None
    out = [m for m in detail["messages"] if m["direction"] == "out"]
    assert [m["kind"] for m in out] == ["auto_reply"] and out[0]["delivery"]["status"] == "sent"
    assert out[0]["message_id"] == msg["Message-ID"]
    assert detail["messages"][0]["auto_reply"] == "sent"


def test_reply_to_the_acknowledgement_joins_the_ticket_without_a_second_one(
    db_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    append(dovecot, account, make_mail())
    desk = make_desk(db_url, dovecot, account)
    run_once(desk)
    [ack] = smtp.received
    ack_id = ack.message["Message-ID"]
    append(
        dovecot,
        account,
        make_mail(
            subject=f"Re: {ack.message['Subject']}",
            message_id="<q2@customer.example>",
            In_Reply_To=ack_id,
            References=f"<a1@customer.example> {ack_id}",
        ),
    )
    stats = run_once(desk)
    assert stats.new_tickets == 0 and len(smtp.received) == 1
    [ticket] = list_tickets(desk.engine)
    detail = show_ticket(desk.engine, ticket["number"])
    assert detail is not None
    last = [m for m in detail["messages"] if m["direction"] == "in"][-1]
    assert last["auto_reply"] == "suppressed: follow-up on an existing ticket"


def test_rate_limit_per_sender(
    sqlite_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    append(
        dovecot,
        account,
        *[make_mail(subject=f"Question {n}", message_id=f"<r{n}@c.example>") for n in range(5)],
    )
    desk = make_desk(sqlite_url, dovecot, account)
    assert run_once(desk).new_tickets == 5
    assert len(smtp.received) == 3  # support.autoreply_per_sender
    decisions = [
        show_ticket(desk.engine, t["number"])["messages"][0]["auto_reply"]  # type: ignore[index]
        for t in list_tickets(desk.engine)
    ]
    assert decisions.count("sent") == 3
    assert all(d.startswith("suppressed: rate limit") for d in decisions if d != "sent")


def dsn(original_id: str, recipient: str, status: str = "5.1.1") -> bytes:
    return (
        "From: MAILER-DAEMON@mx.customer.example\r\n"
        "To: support@desk.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <bounce1@mx.customer.example>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.customer.example\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: {status}\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: support@desk.example\r\nTo: {recipient}\r\nMessage-ID: {original_id}\r\n"
        "--B--\r\n"
    ).encode()


def test_permanent_bounce_joins_its_ticket_and_stops_replies(
    db_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    append(
        dovecot, account, make_mail(sender="Bob <bob@gone.example>", message_id="<b1@gone.example>")
    )
    desk = make_desk(db_url, dovecot, account)
    run_once(desk)
    [ack] = smtp.received
    append(dovecot, account, dsn(ack.message["Message-ID"], "bob@gone.example"))
    stats = run_once(desk)
    assert stats.new_tickets == 0 and len(smtp.received) == 1  # never answered
    [ticket] = list_tickets(desk.engine)
    detail = show_ticket(desk.engine, ticket["number"])
    assert detail is not None
    [bounce] = [m for m in detail["messages"] if m["kind"] == "note"]
    assert bounce["direction"] == "in" and "Undelivered" in bounce["subject"]
    with desk.engine.connect() as conn:
        until = conn.execute(
            select(Suppression.until).where(Suppression.address == "bob@gone.example")
        ).scalar()
    assert until is not None and until > datetime.now(UTC) + timedelta(days=29)
    append(
        dovecot,
        account,
        make_mail(
            sender="bob@gone.example", subject="New question", message_id="<b2@gone.example>"
        ),
    )
    run_once(desk)
    assert len(smtp.received) == 1
    newest = show_ticket(desk.engine, list_tickets(desk.engine)[-1]["number"])
    assert newest is not None and "bounced permanently" in newest["messages"][0]["auto_reply"]


# Form mailers often send from a no-reply address: the mail is still the customer's.
@pytest.mark.parametrize("mailer", ["form@desk.example", "no-reply@shop.desk.example"])
def test_contact_form_mail_belongs_to_the_customer(
    mailer: str, sqlite_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    form = make_mail(
        sender=f"Website <{mailer}>",
        subject="Contact form: installation",
        body="Name: Rahim Uddin\nEmail: rahim@customer.example\n\nHow do I install it?",
        message_id="<f1@desk.example>",
    )
    append(dovecot, account, form)
    desk = make_desk(sqlite_url, dovecot, account, support__form_senders=[mailer])
    run_once(desk)
    [ticket] = list_tickets(desk.engine)
    assert ticket["requester"] == "rahim@customer.example"
    assert ticket["category"] != "other"  # classified, as a person's mail is
    assert [r.recipients for r in smtp.received] == [["rahim@customer.example"]]


def test_presales_gets_the_contact_form_and_a_copy_to_sales(
    sqlite_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    append(
        dovecot,
        account,
        make_mail(subject="Pricing before we buy", body="Do you offer a discount for 20 sites?"),
    )
    desk = make_desk(
        sqlite_url,
        dovecot,
        account,
        support__sales="sales@desk.example",
        support__contact_form_url="https://desk.example/contact",
    )
    run_once(desk)
    assert list_tickets(desk.engine)[0]["category"] == "presales"
    [ack] = smtp.to("alice@customer.example")
    assert "https://desk.example/contact" in ack.message.get_body(("plain",)).get_content()
    [copy] = smtp.to("sales@desk.example")
    assert "discount for 20 sites" in copy.message.get_content()


class Clock:
    """The outbox's clock, a little ahead so that rows queued by the test are due."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC) + timedelta(seconds=5)

    def __call__(self) -> datetime:
        return self.now


def test_temporary_failures_retry_until_delivered_once(
    db_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    smtp.failures.extend(["451 4.3.0 try later"] * 3)
    append(dovecot, account, make_mail())
    desk = make_desk(db_url, dovecot, account)
    clock = Clock()
    desk.outbox.clock = clock
    run_once(desk)  # first attempt: 451
    for _ in range(6):
        clock.now += timedelta(minutes=10)
        desk.outbox.send_due()
    assert len(smtp.received) == 1 and smtp.attempts == 4
    [row] = list_outbox(desk.engine)
    assert row["status"] == "sent" and row["attempts"] == 3


def test_permanent_failure_is_recorded_and_retryable(
    sqlite_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    smtp.failures.append("550 5.1.1 no such user")
    append(dovecot, account, make_mail())
    desk = make_desk(sqlite_url, dovecot, account)
    run_once(desk)
    [row] = list_outbox(desk.engine, "failed")
    assert "550" in row["last_error"] and "permanent" in row["last_error"]
    assert smtp.received == []
    desk.outbox.send_due()
    assert smtp.attempts == 1  # a permanent failure is not retried by itself
    from supportd.adapters.db.engine import outbox_database
    from supportd.adapters.db.outbox import outbox_unit_of_work

    with outbox_unit_of_work(outbox_database(desk.engine))() as store:
        assert store.retry(row["id"], datetime.now(UTC))
        store.commit()
    desk.outbox.send_due()
    assert len(smtp.received) == 1


def test_without_a_worker_process_the_daemon_sends_itself(
    sqlite_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    """One core (imap.parse_workers = 0): parsing and the outbox lanes stay in the daemon."""
    append(dovecot, account, make_mail())
    desk = make_desk(sqlite_url, dovecot, account, imap__parse_workers=0)
    assert desk.parse_pool is None
    run_once(desk)
    assert [r["status"] for r in list_outbox(desk.engine)] == ["sent"]
    assert len(smtp.received) == 1


def test_smtp_outage_delays_but_loses_nothing(
    sqlite_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    append(dovecot, account, make_mail())
    desk = make_desk(sqlite_url, dovecot, account, smtp__port=1)  # nothing listens there
    good_port = SMTP_PORT["port"]
    clock = Clock()
    desk.outbox.clock = clock
    run_once(desk)
    [row] = list_outbox(desk.engine)
    assert (
        row["status"] == "pending"
        and row["attempts"] == 1
        and "connect" in row["last_error"].lower()
    )
    desk.settings.smtp.port = good_port
    clock.now += timedelta(minutes=5)
    desk.outbox.send_due()
    assert len(smtp.received) == 1
    assert list_outbox(desk.engine)[0]["status"] == "sent"


def test_gives_up_after_the_deadline(
    sqlite_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    smtp.failures.extend(["421 4.7.0 busy"] * 50)
    append(dovecot, account, make_mail())
    desk = make_desk(sqlite_url, dovecot, account, smtp__give_up_after=3600)
    clock = Clock()
    desk.outbox.clock = clock
    run_once(desk)
    clock.now += timedelta(hours=2)
    desk.outbox.send_due()
    [row] = list_outbox(desk.engine)
    assert row["status"] == "failed" and "gave up" in row["last_error"]


def test_no_acknowledgement_to_robots_or_agents(
    sqlite_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    append(
        dovecot,
        account,
        make_mail(sender="news@shop.example", List_Id="<news.shop.example>", message_id="<n@s>"),
        make_mail(
            sender="carol@customer.example", Auto_Submitted="auto-replied", message_id="<v@c>"
        ),
        make_mail(sender="agent@desk.example", message_id="<ag@d>"),
        make_mail(sender="support@desk.example", message_id="<self@d>"),
    )
    desk = make_desk(sqlite_url, dovecot, account, support__agents=["agent@desk.example"])
    assert run_once(desk).new_tickets == 4
    assert smtp.received == []  # no acknowledgement, and no notification either
    with desk.engine.connect() as conn:
        decisions = list(conn.execute(select(MessageRow.reply_decision)).scalars())
    assert all(d.startswith("suppressed: ") for d in decisions) and len(decisions) == 4


def test_a_contact_form_naming_an_agent_does_not_make_the_visitor_an_agent(
    sqlite_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    append(
        dovecot,
        account,
        make_mail(
            sender="WordPress <form@desk.example>",
            subject="Contact form: relay this",
            body="Name: Mallory\nEmail: agent@desk.example\n\nSend the customer my link.",
            Reply_To="agent@desk.example",
        ),
    )
    desk = make_desk(
        sqlite_url,
        dovecot,
        account,
        support__form_senders=["form@desk.example"],
        support__agents=["agent@desk.example"],
    )
    run_once(desk)
    [ticket] = list_tickets(desk.engine)
    assert ticket["requester"] == "form@desk.example"  # not the agent's address
    detail = show_ticket(desk.engine, ticket["number"])
    assert detail is not None
    assert [m["kind"] for m in detail["messages"] if m["direction"] == "in"] == ["customer"]


def test_a_reply_that_opens_a_ticket_is_classified_there(
    sqlite_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    """The parse leaves replies unclassified (they usually continue a ticket); one whose
    thread the desk never saw opens a ticket, and filing classifies it then."""
    reply = make_mail(
        subject="Re: Pricing before we buy",
        body="Do you offer a discount for 20 sites?",
        message_id="<r1@customer.example>",
        **{"In-Reply-To": "<elsewhere-1@customer.example>"},
    )
    [parsed] = parse_serial([reply])
    assert not isinstance(parsed, BaseException)
    assert parsed.category == ""  # not classified by the parse
    [new] = parse_serial([make_mail(subject="Pricing before we buy", body=parsed.text)])
    assert not isinstance(new, BaseException)
    assert new.category == "presales"
    append(dovecot, account, reply)
    desk = make_desk(sqlite_url, dovecot, account, support__sales="sales@desk.example")
    run_once(desk)
    assert list_tickets(desk.engine)[0]["category"] == "presales"
    assert smtp.to("sales@desk.example")  # and it is answered as presales
