"""A real autoresponder: Dovecot's Sieve vacation on the customer's mailbox.

A small SMTP router plays the Internet: mail for the customer goes through dovecot-lda
(which runs the customer's Sieve script), mail for the desk is appended to the support
mailbox. The exchange must end after at most one message each way.
"""

from __future__ import annotations

import asyncio
import smtplib
import time
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from supportd.adapters.db.views import list_tickets, show_ticket
from tests.conftest import REQUIRE_DOVECOT
from tests.support.desk import append, imap, make_desk, run_once
from tests.support.dovecot import Account, Dovecot, install_sieve, lda_binary
from tests.support.mail import make_mail

CUSTOMER = "customer@customer.example"
SUPPORT = "support@desk.example"
VACATION = f"""require ["vacation"];
vacation :days 1 :addresses ["{CUSTOMER}"] :subject "Away" "I am on leave until Monday.";
"""


class Router:
    """Delivers by recipient: the customer through Dovecot's LDA, the desk by IMAP APPEND."""

    def __init__(self, dovecot: Dovecot, customer: Account, support: Account) -> None:
        self.dovecot, self.customer, self.support = dovecot, customer, support
        self.log: list[tuple[str, str, str]] = []  # (from, to, subject)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.original_content
        subject = next(
            (
                line[9:].decode(errors="replace")
                for line in raw.splitlines()
                if line.lower().startswith(b"subject: ")
            ),
            "",
        )
        for rcpt in envelope.rcpt_tos:
            self.log.append((envelope.mail_from, rcpt, subject))
            if rcpt == CUSTOMER:
                proc = await asyncio.create_subprocess_exec(
                    str(lda_binary()),
                    "-c",
                    str(self.dovecot.root / "dovecot.conf"),
                    "-d",
                    self.customer.username,
                    "-f",
                    envelope.mail_from or "",
                    "-a",
                    CUSTOMER,
                    stdin=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                _, err = await proc.communicate(raw)
                if proc.returncode != 0:
                    return f"451 lda failed: {err.decode(errors='replace')[:200]}"
            elif rcpt == SUPPORT:
                await asyncio.get_running_loop().run_in_executor(None, self._to_support, raw)
        return "250 OK"

    def _to_support(self, raw: bytes) -> None:
        append(self.dovecot, self.support, raw)


@pytest.fixture
def router(dovecot: Dovecot, account: Account) -> Any:
    if lda_binary() is None:
        if REQUIRE_DOVECOT:
            pytest.fail("dovecot-sieve is required for this run (apt-get install dovecot-sieve)")
        pytest.skip("dovecot-sieve not installed")
    customer = dovecot.add_user()
    install_sieve(dovecot, customer, VACATION)
    routing = Router(dovecot, customer, account)
    controller = Controller(routing, hostname="127.0.0.1", port=dovecot.submission_port)
    controller.start()
    yield routing
    controller.stop()


def settle(router: Router, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while len(router.log) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # and nothing more arrives


def test_vacation_responder_and_desk_do_not_loop(
    sqlite_url: str, dovecot: Dovecot, account: Account, router: Router
) -> None:
    # No agents: only the desk's acknowledgement and the responder talk here.
    desk = make_desk(
        sqlite_url, dovecot, account, smtp__port=dovecot.submission_port, support__agents=[]
    )
    append(
        dovecot,
        account,
        make_mail(sender=f"Customer <{CUSTOMER}>", message_id="<c1@customer.example>"),
    )
    run_once(desk)  # the desk acknowledges
    settle(router, 1)
    # The acknowledgement carries Auto-Submitted, so the vacation responder stays silent.
    assert [(f, t) for f, t, _ in router.log] == [(SUPPORT, CUSTOMER)]

    # A person at the desk writes to the customer: the responder answers that one.
    [ack_id] = [
        m["message_id"]
        for m in show_ticket(desk.engine, 1)["messages"]  # type: ignore[index]
        if m["direction"] == "out"
    ]
    human = make_mail(
        sender=f"Agent <{SUPPORT}>",
        to=CUSTOMER,
        subject="[Desk #1] Try this",
        message_id="<h1@desk.example>",
        In_Reply_To=ack_id,
        References=ack_id,
    )
    with smtplib.SMTP("127.0.0.1", dovecot.submission_port) as client:
        client.sendmail(SUPPORT, [CUSTOMER], human)
    settle(router, 3)
    assert [(f, t) for f, t, _ in router.log][1:] == [(SUPPORT, CUSTOMER), ("<>", SUPPORT)]

    for _ in range(3):  # the desk reads the vacation reply, more than once: nothing goes out
        run_once(desk)
    settle(router, 4, timeout=2)
    assert len(router.log) == 3
    [ticket] = list_tickets(desk.engine)
    detail = show_ticket(desk.engine, ticket["number"])
    assert detail is not None
    vacation = [m for m in detail["messages"] if m["subject"] == "Away"]
    assert len(vacation) == 1 and vacation[0]["automatic"]
    assert vacation[0]["auto_reply"].startswith("suppressed: ")
    with imap(dovecot, router.customer) as client:  # the customer got the ack and the reply
        assert client.select_folder("INBOX")[b"EXISTS"] == 2
