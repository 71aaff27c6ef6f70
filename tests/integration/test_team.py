"""The support team answers from its own mail client, end to end.

Customer mail goes in over SMTP, the desk runs, the agent reads the notification in their
own mailbox, replies as a real client composes replies, back over SMTP; the customer reads
what the desk relayed in theirs. Plus every attack of issue 6: none reaches a customer.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from supportd.adapters.db.models import MessageRow, OutboxItem, QuarantineItem, Ticket
from supportd.adapters.db.views import corrected_examples, show_ticket
from supportd.bootstrap import Desk
from supportd.domain.agents import reply_token
from tests.support import clients
from tests.support.desk import make_desk, run_once
from tests.support.dovecot import Account, Dovecot
from tests.support.mail import make_mail
from tests.support.mailnet import MailNet, plain_text

SUPPORT = "support@desk.example"
RAHIM = "rahim@desk.example"
NADIA = "nadia@desk.example"
ALICE = "alice@customer.example"
BOB = "bob@customer.example"
MALLORY = "mallory@elsewhere.example"
SECRET = "test-secret-key-0123456789"
AUTHSERV = "mx.desk.example"
ANSWER = "Hi Alice,\n\nplease raise memory_limit to 256M and run the installer again.\n\nRahim"


@pytest.fixture
def net(dovecot: Dovecot, account: Account) -> Iterator[MailNet]:
    network = MailNet(dovecot).start()
    network.mailbox(SUPPORT, account)
    for address in (RAHIM, NADIA, ALICE, BOB, MALLORY):
        network.mailbox(address)
    yield network
    network.stop()


def team_desk(db_url: str, dovecot: Dovecot, account: Account, net: MailNet, **extra: Any) -> Desk:
    return make_desk(
        db_url,
        dovecot,
        account,
        smtp__port=net.port,
        support__agents=[f"Rahim Uddin <{RAHIM}>", f"Nadia Islam <{NADIA}>"],
        support__authserv_id=AUTHSERV,
        **extra,
    )


def question(net: MailNet, **headers: str) -> bytes:
    raw = make_mail(
        sender=f"Alice Rahman <{ALICE}>",
        subject="Cannot install on PHP 8.2",
        body="The installer stops with a blank page.",
        message_id="<q1@customer.example>",
        Cc=BOB,
        **headers,
    )
    net.send(raw, ALICE, [SUPPORT, BOB])
    return raw


def _queued(message: EmailMessage) -> int:
    """The outbox row a desk mail came from (its Message-ID is <supportd.ROW.sig@...>)."""
    return int(str(message["Message-ID"]).split(".")[1])


def notification(net: MailNet, agent: str, index: int = -1) -> EmailMessage:
    """The agent's notifications in the order the desk queued them (the outbox's lanes
    may deliver them in another)."""
    found = [m for m in net.inbox(agent) if m["Auto-Submitted"] == "auto-generated"]
    assert found, f"no notification in {agent}'s mailbox"
    return sorted(found, key=_queued)[index]


def agent_answers(net: MailNet, note: EmailMessage, sender: str, words: str) -> None:
    """The agent answers `note` from Gmail, to the notification's Reply-To."""
    net.send(clients.gmail(note, sender, words), sender, [str(note["Reply-To"])])


def relayed(net: MailNet) -> list[EmailMessage]:
    """What reached the customer from the desk, acknowledgements aside."""
    return [
        m for m in net.inbox(ALICE) if m["Auto-Submitted"] is None and SUPPORT in str(m["From"])
    ]


def ticket(desk: Desk, number: int = 1) -> dict[str, Any]:
    detail = show_ticket(desk.engine, number)
    assert detail is not None
    return detail


@pytest.mark.parametrize("client", ["gmail", "outlook-fr"])
def test_agent_answer_reaches_the_customer_with_only_the_new_words(
    client: str, db_url: str, dovecot: Dovecot, account: Account, net: MailNet
) -> None:
    desk = team_desk(db_url, dovecot, account, net)
    question(net)
    run_once(desk)

    note = notification(net, RAHIM)
    assert note["From"].addresses[0].display_name == "Alice Rahman via Desk Support"
    assert note["From"].addresses[0].addr_spec == SUPPORT
    token = reply_token(SECRET, 1, RAHIM)
    assert str(note["Reply-To"]) == f"support+{token}@desk.example"
    assert str(note["Subject"]) == "[Desk #1] Cannot install on PHP 8.2"
    facts = plain_text(note)
    assert "Requester: Alice Rahman <alice@customer.example>" in facts
    assert "Category:  installation" in facts and "Status:    open" in facts
    assert "(Asia/Dhaka)" in facts and "UTC" in facts
    assert "The installer stops with a blank page." in facts
    assert note.get_body(("html",)) is not None
    assert notification(net, NADIA)["Reply-To"] != note["Reply-To"]  # per agent
    assert ticket(desk)["first_responded_at"] is None

    if client == "gmail":
        reply = clients.gmail(note, f"Rahim Uddin <{RAHIM}>", ANSWER)
    else:
        reply = clients.outlook(note, f"Rahim Uddin <{RAHIM}>", ANSWER, language="fr")
    net.send(reply, RAHIM, [str(note["Reply-To"])])
    run_once(desk)

    [answer] = relayed(net)
    sender = answer["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == ("Rahim Uddin (Desk Support)", SUPPORT)
    assert str(answer["Subject"]) == "Re: [Desk #1] Cannot install on PHP 8.2"
    assert str(answer["In-Reply-To"]) == "<q1@customer.example>"
    assert BOB in str(answer["Cc"])
    text = plain_text(answer)
    assert "memory_limit to 256M" in text and text.startswith("Hi Alice,")
    for leaked in ("wrote:", "Reply above this line", "Requester:", token, "Envoy", "Objet"):
        assert leaked not in text, leaked
    assert [m for m in net.inbox(BOB) if "256M" in plain_text(m)]  # the Cc participant
    detail = ticket(desk)
    assert detail["first_responded_at"] is not None
    out = [m for m in detail["messages"] if (m["direction"], m["kind"]) == ("out", "agent")]
    assert len(out) == 1 and "256M" in out[0]["text"] and "wrote:" not in out[0]["text"]
    # The ticket's record says to whom it went as the mail did: requester To, participant Cc.
    assert ALICE in out[0]["to"] and BOB not in out[0]["to"] and BOB in out[0]["cc"]
    assert out[0]["in_reply_to"] == "<q1@customer.example>"


def test_notifications_refer_to_the_customers_text_instead_of_copying_it(
    db_url: str, dovecot: Dovecot, account: Account, net: MailNet
) -> None:
    """Each agent's notification quotes the customer's text, and `tickets show` shows it on
    the notification's copy, while the database holds that text once: the copies and the
    outbox rows name the customer's message row (issue 9: two more copies per agent)."""
    desk = team_desk(db_url, dovecot, account, net)
    question(net)
    run_once(desk)

    for agent in (RAHIM, NADIA):
        assert "The installer stops with a blank page." in plain_text(notification(net, agent))
    with desk.engine.connect() as conn:
        [(customer_row,)] = conn.execute(
            select(MessageRow.id).where(MessageRow.kind == "customer")
        ).all()
        copies = conn.execute(
            select(MessageRow.text, MessageRow.text_of).where(MessageRow.kind == "notification")
        ).all()
        queued = conn.execute(
            select(OutboxItem.intent, OutboxItem.text_of).where(OutboxItem.kind == "notification")
        ).all()
    assert [tuple(c) for c in copies] == [("", customer_row)] * 2
    assert len(queued) == 2
    for intent, text_of in queued:
        assert text_of == customer_row and "blank page" not in intent
    shown = [m for m in ticket(desk)["messages"] if m["kind"] == "notification"]
    assert len(shown) == 2
    assert all(m["text"].strip() == "The installer stops with a blank page." for m in shown)


def test_notifications_in_one_batch_each_quote_their_own_customer(
    db_url: str, dovecot: Dovecot, account: Account, net: MailNet
) -> None:
    """Two customers' mail stored in one batch: each ticket's notifications, as sent and as
    `tickets show` shows them, carry that ticket's customer's words and never the other's."""
    desk = team_desk(db_url, dovecot, account, net)
    words = {ALICE: "Alice's export is blank.", MALLORY: "Mallory's invoice is wrong."}
    for number, (sender, body) in enumerate(words.items(), start=1):
        net.send(
            make_mail(sender=sender, subject=f"Question {number}", body=body, message_id=None),
            sender,
            [SUPPORT],
        )
    run_once(desk)

    for number, (sender, body) in enumerate(words.items(), start=1):
        detail = ticket(desk, number)
        assert detail["requester"] == sender
        shown = [m["text"].strip() for m in detail["messages"] if m["kind"] == "notification"]
        assert shown == [body, body]  # one per agent
        for agent in (RAHIM, NADIA):
            [sent] = [
                m
                for m in net.inbox(agent)
                if str(m["Subject"]) == f"[Desk #{number}] Question {number}"
            ]
            text = plain_text(sent)
            assert body in text
            assert not [other for other in words.values() if other != body and other in text]


def test_customer_attachments_reach_the_agents_and_agent_attachments_the_customer(
    sqlite_url: str, dovecot: Dovecot, account: Account, net: MailNet
) -> None:
    desk = team_desk(sqlite_url, dovecot, account, net)
    mail = EmailMessage()
    mail["From"] = f"Alice <{ALICE}>"
    mail["To"] = SUPPORT
    mail["Subject"] = "Error log attached"
    mail["Message-ID"] = "<att@customer.example>"
    mail.set_content("See the log.")
    mail.add_attachment(
        b"PHP Fatal error: memory", maintype="text", subtype="plain", filename="error.log"
    )
    net.send(mail.as_bytes(), ALICE, [SUPPORT])
    run_once(desk)
    note = notification(net, RAHIM)
    [part] = list(note.iter_attachments())
    assert part.get_filename() == "error.log" and b"memory" in part.get_content().encode()

    reply = EmailMessage()
    reply["From"] = RAHIM
    reply["To"] = str(note["Reply-To"])
    reply["Subject"] = f"Re: {note['Subject']}"
    reply["Message-ID"] = make_msgid()
    reply["In-Reply-To"] = str(note["Message-ID"])
    reply.set_content("The fix is in the attached patch.")
    reply.add_attachment(b"--- a\n+++ b\n", maintype="text", subtype="x-diff", filename="fix.diff")
    net.send(reply.as_bytes(), RAHIM, [str(note["Reply-To"])])
    run_once(desk)
    [answer] = relayed(net)
    assert [p.get_filename() for p in answer.iter_attachments()] == ["fix.diff"]


def test_note_goes_to_the_other_agents_only(
    sqlite_url: str, dovecot: Dovecot, account: Account, net: MailNet
) -> None:
    desk = team_desk(sqlite_url, dovecot, account, net)
    question(net)
    run_once(desk)
    before = len(net.inbox(ALICE))
    note = notification(net, NADIA)
    reply = clients.gmail(note, NADIA, "#note\nSeen this on PHP 8.2 hosts with opcache on.")
    net.send(reply, NADIA, [str(note["Reply-To"])])
    run_once(desk)
    assert len(net.inbox(ALICE)) == before and len(net.inbox(BOB)) == 1  # nothing new
    internal = [m for m in net.inbox(RAHIM) if "Note:" in str(m["Subject"])]
    assert len(internal) == 1 and "opcache" in plain_text(internal[0])
    assert not [m for m in net.inbox(NADIA) if "Note:" in str(m["Subject"])]
    kinds = [(m["direction"], m["kind"]) for m in ticket(desk)["messages"]]
    assert ("in", "note") in kinds and ("out", "note") in kinds
    assert ticket(desk)["first_responded_at"] is None  # a note is not an answer


def test_commands_change_the_ticket_and_send_the_customer_nothing(
    sqlite_url: str, dovecot: Dovecot, account: Account, net: MailNet
) -> None:
    desk = team_desk(sqlite_url, dovecot, account, net)
    question(net)
    run_once(desk)
    before = len(net.inbox(ALICE))
    note = notification(net, RAHIM)
    commands = "#assign me\n#category bug\n#pending"
    agent_answers(net, note, RAHIM, commands)
    run_once(desk)
    detail = ticket(desk)
    assert (detail["assignee"], detail["category"], detail["status"]) == (RAHIM, "bug", "pending")
    assert detail["category_predicted"] == "installation"  # kept beside the correction
    assert list(corrected_examples(desk.engine)) == [  # supportd classify export
        {
            "subject": "Cannot install on PHP 8.2",
            "text": "The installer stops with a blank page.\n",
            "category": "bug",
        }
    ]
    assert len(net.inbox(ALICE)) == before

    # Assigned: the customer's next mail notifies the assignee only.
    nadia_before = len(net.inbox(NADIA))
    follow = make_mail(
        sender=ALICE,
        subject="Re: Cannot install on PHP 8.2",
        body="Any news?",
        message_id="<q2@customer.example>",
        In_Reply_To="<q1@customer.example>",
    )
    net.send(follow, ALICE, [SUPPORT])
    run_once(desk)
    assert len(net.inbox(NADIA)) == nadia_before
    assert "Any news?" in plain_text(notification(net, RAHIM))
    assert ticket(desk)["status"] == "open"  # the customer's mail reopens a pending ticket

    unknown = notification(net, RAHIM)
    agent_answers(net, unknown, RAHIM, "#frobnicate\nHello Alice")
    run_once(desk)
    assert len(net.inbox(ALICE)) == before
    [notice] = [m for m in net.inbox(RAHIM) if str(m["Subject"]).startswith("Not sent")]
    assert "#frobnicate" in plain_text(notice)


def test_direct_answer_with_the_desk_in_cc_counts_and_is_not_sent_twice(
    sqlite_url: str, dovecot: Dovecot, account: Account, net: MailNet
) -> None:
    desk = team_desk(sqlite_url, dovecot, account, net)
    question(net)
    run_once(desk)
    direct = make_mail(
        sender=f"Rahim Uddin <{RAHIM}>",
        to=ALICE,
        subject="Re: Cannot install on PHP 8.2",
        body="Raise memory_limit, please.",
        message_id="<direct@desk.example>",
        In_Reply_To="<q1@customer.example>",
        References="<q1@customer.example>",
        Cc=SUPPORT,
    )
    net.send(direct, RAHIM, [ALICE, SUPPORT])
    run_once(desk)
    got = [m for m in net.inbox(ALICE) if "memory_limit" in plain_text(m)]
    assert len(got) == 1 and RAHIM in str(got[0]["From"])  # the agent's own mail, once
    detail = ticket(desk)
    assert detail["first_responded_at"] is not None
    assert ("out", "agent") in [(m["direction"], m["kind"]) for m in detail["messages"]]


def test_a_closed_ticket_reopens_within_reopen_days_and_later_a_new_one_names_it(
    sqlite_url: str, dovecot: Dovecot, account: Account, net: MailNet
) -> None:
    desk = team_desk(sqlite_url, dovecot, account, net)
    question(net)
    run_once(desk)
    note = notification(net, RAHIM)
    agent_answers(net, note, RAHIM, "#close")
    run_once(desk)
    assert ticket(desk)["status"] == "closed"
    again = make_mail(
        sender=ALICE,
        subject="Re: Cannot install",
        body="It broke again.",
        message_id="<q3@customer.example>",
        In_Reply_To="<q1@customer.example>",
    )
    net.send(again, ALICE, [SUPPORT])
    run_once(desk)
    assert ticket(desk)["status"] == "open" and ticket(desk)["message_count"] == 2

    with desk.engine.begin() as conn:  # closed three weeks ago
        conn.execute(
            update(Ticket).values(status="closed", closed_at=datetime.now(UTC) - timedelta(days=21))
        )
    late = make_mail(
        sender=ALICE,
        subject="Re: Cannot install",
        body="Back again.",
        message_id="<q4@customer.example>",
        In_Reply_To="<q3@customer.example>",
    )
    net.send(late, ALICE, [SUPPORT])
    run_once(desk)
    assert ticket(desk)["status"] == "closed"
    new = ticket(desk, 2)
    assert new["continues"] == 1 and new["requester"] == ALICE
    assert "Continues: ticket #1" in plain_text(notification(net, RAHIM))


# -- attacks: none reaches a customer, none raises out of the loop ---------------------------


@pytest.fixture
def attacked(
    sqlite_url: str, dovecot: Dovecot, account: Account, net: MailNet
) -> Iterator[tuple[Desk, MailNet]]:
    """Two tickets (Alice's #1, Mallory's #2), notified; afterwards: nothing leaked."""
    desk = team_desk(sqlite_url, dovecot, account, net)
    question(net)
    net.send(
        make_mail(
            sender=MALLORY,
            subject="My own question",
            body="Mallory's secret",
            message_id="<m1@elsewhere.example>",
        ),
        MALLORY,
        [SUPPORT],
    )
    run_once(desk)
    customers = {a: len(net.inbox(a)) for a in (ALICE, BOB, MALLORY)}
    yield desk, net
    for address, count in customers.items():
        new = net.inbox(address)[count:]
        assert not [m for m in new if m["Auto-Submitted"] is None], f"{address} got mail"
        for m in new:  # acknowledgements of new tickets only: never another ticket's words
            assert "Mallory's secret" not in plain_text(m) or address == MALLORY
            assert "installer stops" not in plain_text(m) or address in (ALICE, BOB)
    with desk.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(QuarantineItem)).scalar_one() == 0
        kinds = conn.execute(select(OutboxItem.kind, OutboxItem.recipients)).all()
    assert not [r for k, r in kinds if k == "agent"]  # nothing relayed


def untrusted(desk: Desk) -> list[str]:
    with desk.engine.connect() as conn:
        return list(
            conn.execute(select(MessageRow.untrusted).where(MessageRow.untrusted != "")).scalars()
        )


def test_forged_agent_from_without_token(attacked: tuple[Desk, MailNet]) -> None:
    desk, net = attacked
    forged = make_mail(
        sender=f"Rahim Uddin <{RAHIM}>",
        subject="Re: [Desk #1] Cannot install",
        body="Send me your admin password.",
        message_id="<f1@evil.example>",
    )
    net.send(forged, "attacker@evil.example", [SUPPORT])
    run_once(desk)
    assert untrusted(desk) == ["no reply token and no Authentication-Results from mx.desk.example"]
    detail = ticket(desk, 3)
    assert detail["messages"][0]["untrusted"] and detail["messages"][0]["kind"] == "customer"


def test_agent_b_using_agent_a_token(attacked: tuple[Desk, MailNet]) -> None:
    desk, net = attacked
    note = notification(net, RAHIM, 0)
    agent_answers(net, note, NADIA, "Hello from Nadia")
    run_once(desk)
    [reason] = untrusted(desk)
    assert "token of another agent or another ticket" in reason


def test_ticket_one_token_under_ticket_two_tag_and_references(
    attacked: tuple[Desk, MailNet],
) -> None:
    desk, net = attacked
    one = notification(net, RAHIM, 0)
    two = notification(net, RAHIM, 1)
    assert "#1]" in str(one["Subject"]) and "#2]" in str(two["Subject"])
    reply = clients.gmail(two, RAHIM, "Mallory, here is Alice's data", to=str(one["Reply-To"]))
    net.send(reply, RAHIM, [str(one["Reply-To"])])
    run_once(desk)
    [reason] = untrusted(desk)
    assert reason == "token of ticket 1 under another ticket's tag or thread"


def test_stranger_writing_to_an_agent_token_address(attacked: tuple[Desk, MailNet]) -> None:
    desk, net = attacked
    note = notification(net, RAHIM, 0)
    stranger = clients.gmail(note, MALLORY, "Alice, this is support, send your password")
    net.send(stranger, MALLORY, [str(note["Reply-To"])])
    run_once(desk)
    detail = ticket(desk, 2)  # Mallory's message stays on Mallory's side, nobody relays it
    assert all(m["kind"] != "agent" for m in detail["messages"])


@pytest.mark.parametrize(
    "headers",
    [
        ["mx.evil.example; dmarc=pass header.from=desk.example"],
        [
            f"{AUTHSERV}; dmarc=fail header.from=desk.example",
            f"{AUTHSERV}; dmarc=pass header.from=desk.example",
        ],
    ],
    ids=["other-authserv-id", "below-the-trusted-one"],
)
def test_forged_authentication_results(headers: list[str], attacked: tuple[Desk, MailNet]) -> None:
    desk, net = attacked
    forged = make_mail(
        sender=RAHIM,
        to=ALICE,
        subject="Re: Cannot install",
        body="Pay here: evil.example",
        message_id="<f2@evil.example>",
        In_Reply_To="<q1@customer.example>",
        Cc=SUPPORT,
    )
    extra = "".join(f"Authentication-Results: {h}\r\n" for h in headers).encode()
    net.send(extra + forged, "attacker@evil.example", [SUPPORT])  # the desk's copy only
    # Not in Cc-to-customer form either: an answer to the desk itself.
    forged2 = make_mail(
        sender=RAHIM,
        subject="Relay this",
        body="Pay here: evil.example",
        message_id="<f3@evil.example>",
    )
    net.send(extra + forged2, "attacker@evil.example", [SUPPORT])
    run_once(desk)
    reasons = untrusted(desk)
    assert len(reasons) == 1  # the direct one names Alice's thread: recorded, never relayed
    assert "Authentication-Results" in reasons[0]


@pytest.mark.parametrize("mangle", ["wrong-signature", "truncated"])
def test_token_with_a_bad_signature(mangle: str, attacked: tuple[Desk, MailNet]) -> None:
    desk, net = attacked
    note = notification(net, RAHIM, 0)
    good = str(note["Reply-To"])
    local, domain = good.split("@")
    bad = (
        local[:-1] + ("0" if local[-1] != "0" else "1")
        if mangle == "wrong-signature"
        else local[:-4]
    )
    address = f"{bad}@{domain}"
    net.send(clients.gmail(note, RAHIM, "Hello", to=address), RAHIM, [address])
    run_once(desk)
    assert len(untrusted(desk)) == 1


def test_reply_with_only_quoted_history(attacked: tuple[Desk, MailNet]) -> None:
    desk, net = attacked
    note = notification(net, RAHIM, 0)
    net.send(clients.only_quote(note, RAHIM), RAHIM, [str(note["Reply-To"])])
    run_once(desk)
    [notice] = [m for m in net.inbox(RAHIM) if str(m["Subject"]).startswith("Not sent")]
    assert "no new text" in plain_text(notice)


def test_twenty_megabytes_attached(attacked: tuple[Desk, MailNet]) -> None:
    desk, net = attacked
    big = EmailMessage()
    big["From"] = f"Alice <{ALICE}>"
    big["To"] = SUPPORT
    big["Subject"] = "Full backup"
    big["Message-ID"] = "<big@customer.example>"
    big.set_content("My whole site.")
    big.add_attachment(
        b"x" * (20 * 1024 * 1024), maintype="application", subtype="zip", filename="site.zip"
    )
    net.send(big.as_bytes(), ALICE, [SUPPORT])
    note = notification(net, RAHIM, 0)
    forged = EmailMessage()  # and a forged agent reply carrying it
    forged["From"] = RAHIM
    forged["To"] = SUPPORT
    forged["Subject"] = "Re: [Desk #1] here it is"
    forged["Message-ID"] = "<bigforged@evil.example>"
    forged["In-Reply-To"] = str(note["Message-ID"])
    forged.set_content("take it")
    forged.add_attachment(
        b"y" * (20 * 1024 * 1024), maintype="application", subtype="zip", filename="x.zip"
    )
    net.send(forged.as_bytes(), "attacker@evil.example", [SUPPORT])
    run_once(desk)
    listed = plain_text(notification(net, RAHIM))
    assert "site.zip (20.0 MB): too large to forward" in listed
    assert not list(notification(net, RAHIM).iter_attachments())
    assert len(untrusted(desk)) == 1


def test_agent_reply_in_latin1_and_with_8bit_headers(
    sqlite_url: str, dovecot: Dovecot, account: Account, net: MailNet
) -> None:
    desk = team_desk(sqlite_url, dovecot, account, net)
    question(net)
    run_once(desk)
    note = notification(net, RAHIM)
    words = "Bonjour Alice,\n\nle café est prêt. Grüße, Rahim"
    net.send(clients.apple_mail_latin1(note, RAHIM, words), RAHIM, [str(note["Reply-To"])])
    raw8 = (
        f"From: Rähim <{RAHIM}>\r\nTo: {note['Reply-To']}\r\nSubject: Re: {note['Subject']} "
        "ünïcode\r\nMessage-ID: <8bit@desk.example>\r\nContent-Type: text/plain; "
        "charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nZweite Antwort: schön.\r\n"
    ).encode()
    net.send(raw8, RAHIM, [str(note["Reply-To"])])
    run_once(desk)
    # (the outbox sends over several connections: arrival order is not sending order)
    texts = sorted((plain_text(m) for m in relayed(net)), key=lambda t: "Zweite" in t)
    assert len(texts) == 2
    assert "le café est prêt. Grüße, Rahim" in texts[0] and "wrote:" not in texts[0]
    assert "Zweite Antwort: schön." in texts[1]


def test_reply_to_a_notification_of_a_deleted_ticket(attacked: tuple[Desk, MailNet]) -> None:
    desk, net = attacked
    note = notification(net, RAHIM, 0)
    with desk.engine.begin() as conn:  # ticket 1 removed (merged or deleted by an operator)
        conn.execute(delete(MessageRow).where(MessageRow.ticket_number == 1))
        conn.execute(delete(Ticket).where(Ticket.number == 1))
    agent_answers(net, note, RAHIM, "Hi Alice")
    run_once(desk)
    assert untrusted(desk) == ["ticket 1 no longer exists"]
    [notice] = [m for m in net.inbox(RAHIM) if str(m["Subject"]).startswith("Not sent")]
    assert "no longer exists" in plain_text(notice)


# -- from the security review ----------------------------------------------------------------


def test_a_note_hidden_behind_invisible_characters_stays_internal(
    attacked: tuple[Desk, MailNet],
) -> None:
    desk, net = attacked
    note = notification(net, NADIA, 0)
    words = "\ufeff\u200b#note\nInternal: this customer owes us two invoices."
    agent_answers(net, note, NADIA, words)
    run_once(desk)
    internal = [m for m in net.inbox(RAHIM) if "Note:" in str(m["Subject"])]
    assert len(internal) == 1 and "two invoices" in plain_text(internal[0])


def test_two_customers_answering_one_announcement_get_two_tickets(
    sqlite_url: str, dovecot: Dovecot, account: Account, net: MailNet
) -> None:
    desk = team_desk(sqlite_url, dovecot, account, net)
    parent = "<announcement-7@vendor.example>"  # sent by the vendor, not through the desk
    for sender, mid in ((ALICE, "<a7@customer.example>"), (MALLORY, "<m7@elsewhere.example>")):
        net.send(
            make_mail(
                sender=sender,
                subject="Re: New release 2.0",
                body=f"{sender} asks",
                message_id=mid,
                In_Reply_To=parent,
                References=parent,
            ),
            sender,
            [SUPPORT],
        )
        run_once(desk)
    first, second = ticket(desk, 1), ticket(desk, 2)
    assert (first["requester"], second["requester"]) == (ALICE, MALLORY)
    note = notification(net, RAHIM, 0)  # Alice's; the answer goes to Alice only
    agent_answers(net, note, RAHIM, "Hi Alice, yes.")
    run_once(desk)
    [answer] = relayed(net)
    assert str(answer["In-Reply-To"]) == "<a7@customer.example>"
    assert not [m for m in net.inbox(MALLORY) if "Hi Alice" in plain_text(m)]


def _customer_mail(net: MailNet, sender: str, mid: str, body: str, **headers: str) -> None:
    mail = make_mail(
        sender=sender, subject="Re: New release 2.0", body=body, message_id=mid, **headers
    )
    net.send(mail, sender, [SUPPORT])


def test_a_planted_message_id_does_not_pull_another_customer_in(
    sqlite_url: str, dovecot: Dovecot, account: Account, net: MailNet
) -> None:
    """A Message-ID is no secret: Mallory sends one with the vendor's newsletter's ID, so
    that replies to the newsletter would be filed on his ticket and answered to him."""
    desk = team_desk(sqlite_url, dovecot, account, net)
    parent = "<announcement-7@vendor.example>"
    _customer_mail(net, MALLORY, parent, "first!")
    run_once(desk)
    _customer_mail(
        net, ALICE, "<a7@customer.example>", "My licence key is K-123.", In_Reply_To=parent
    )
    run_once(desk)
    assert (ticket(desk, 1)["requester"], ticket(desk, 2)["requester"]) == (MALLORY, ALICE)
    agent_answers(net, notification(net, RAHIM, -1), RAHIM, "Hi Alice, K-123 is renewed.")
    run_once(desk)
    assert len(relayed(net)) == 1
    assert not [m for m in net.inbox(MALLORY) if "K-123" in plain_text(m)]


def test_a_cc_from_a_stranger_does_not_pull_the_customer_onto_his_ticket(
    sqlite_url: str, dovecot: Dovecot, account: Account, net: MailNet
) -> None:
    desk = team_desk(sqlite_url, dovecot, account, net)
    parent = "<announcement-7@vendor.example>"
    _customer_mail(net, MALLORY, "<m7@elsewhere.example>", "hi", In_Reply_To=parent, Cc=ALICE)
    run_once(desk)
    _customer_mail(
        net, ALICE, "<a7@customer.example>", "My licence key is K-123.", In_Reply_To=parent
    )
    run_once(desk)
    assert ticket(desk, 2)["requester"] == ALICE  # her own ticket, not Mallory's
    assert ticket(desk, 1)["message_count"] == 1


def test_a_message_id_used_twice_does_not_join_the_ticket_replying_to_the_first(
    sqlite_url: str, dovecot: Dovecot, account: Account, net: MailNet
) -> None:
    """Broken mailers reuse Message-IDs: Alice's follow-up answers her <1@localhost>;
    Carol's unrelated mail with that same ID must not look like what it answers."""
    desk = team_desk(sqlite_url, dovecot, account, net)
    _customer_mail(net, ALICE, "<1@localhost>", "question")
    _customer_mail(net, ALICE, "<2@localhost>", "any news?", In_Reply_To="<1@localhost>")
    run_once(desk)
    _customer_mail(net, "carol@third.example", "<1@localhost>", "Refund to IBAN DE00 1234")
    run_once(desk)
    assert ticket(desk, 1)["message_count"] == 2
    assert ticket(desk, 2)["requester"] == "carol@third.example"


def test_a_colleague_in_cc_still_joins_the_ticket_in_any_order(
    sqlite_url: str, dovecot: Dovecot, account: Account, net: MailNet
) -> None:
    """What the rules above keep: Bob, whom Alice put in Cc, answers to all; his reply
    arrives before Alice's question, and a second colleague's after it."""
    desk = team_desk(sqlite_url, dovecot, account, net)
    bob, dina = "bob@customer.example", "dina@customer.example"
    question = "<q9@customer.example>"
    reply = dict(In_Reply_To=question, to=f"{ALICE}, {SUPPORT}")
    _customer_mail(net, bob, "<b9@customer.example>", "same here", Cc=dina, **reply)
    run_once(desk)
    _customer_mail(net, ALICE, question, "cannot install", Cc=f"{bob}, {dina}")
    run_once(desk)
    _customer_mail(net, dina, "<d9@customer.example>", "and here", **reply)
    run_once(desk)
    assert ticket(desk, 1)["message_count"] == 3
    assert show_ticket(desk.engine, 2) is None


def test_untrusted_agent_looking_mail_does_not_reopen_a_closed_ticket(
    sqlite_url: str, dovecot: Dovecot, account: Account, net: MailNet
) -> None:
    desk = team_desk(sqlite_url, dovecot, account, net)
    question(net)
    run_once(desk)
    note = notification(net, RAHIM)
    agent_answers(net, note, RAHIM, "#close")
    run_once(desk)
    forged = make_mail(
        sender=RAHIM,
        subject="Re: Cannot install",
        body="reopen please",
        message_id="<fr@evil.example>",
        In_Reply_To="<q1@customer.example>",
    )
    net.send(forged, "attacker@evil.example", [SUPPORT])
    run_once(desk)
    assert ticket(desk)["status"] == "closed"
    assert untrusted(desk)


def test_forged_notes_and_assignments_reach_nobody(attacked: tuple[Desk, MailNet]) -> None:
    """A note goes to the agents and an assignment decides who hears of escalations: a
    forged agent mail (no token, or another agent's) must trigger neither."""
    desk, net = attacked
    rahim_before = len(net.inbox(RAHIM))
    nadia_before = len(net.inbox(NADIA))
    forged = make_mail(
        sender=NADIA,
        subject="Re: [Desk #1] Question",
        body="#note\nforward everything to attacker@evil.example",
        message_id="<fn@evil.example>",
        In_Reply_To="<q1@customer.example>",
    )
    net.send(forged, "attacker@evil.example", [SUPPORT])
    note = notification(net, RAHIM, 0)  # Rahim's token, in Nadia's name
    agent_answers(net, note, NADIA, f"#assign {NADIA}\n#note\nsecret plan")
    run_once(desk)
    assert len(net.inbox(RAHIM)) == rahim_before and len(net.inbox(NADIA)) == nadia_before
    assert ticket(desk)["assignee"] is None
    assert len(untrusted(desk)) == 2
