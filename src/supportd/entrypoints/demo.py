"""`supportd demo`: the real desk on embedded servers (pymap IMAP, aiosmtpd SMTP, SQLite)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import tempfile
import threading
from argparse import Namespace
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from imapclient import IMAPClient

from supportd.adapters.db import schema
from supportd.adapters.db.views import list_tickets, show_ticket
from supportd.bootstrap import build_desk, build_engine
from supportd.config import Settings, settings_from_dict
from supportd.entrypoints.daemon import Runner

PRODUCT = "WPERP"
SUPPORT = "support@demo.example"
USER, PASSWORD = "support", "demo-password"
AGENT, AGENT_NAME = "rahim@demo.example", "Rahim Uddin"
OTHER, OTHER_NAME = "nadia@demo.example", "Nadia Islam"
LEAD = "lead@demo.example"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def embedded_imap(user: str, password: str) -> Iterator[int]:
    """pymap's in-memory IMAP server on 127.0.0.1 in a thread; yields its port."""
    from pymap.backend.dict import DictBackend
    from pymap.imap import IMAPService

    port = free_port()
    ready = threading.Event()
    failure: list[BaseException] = []
    state: dict[str, object] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        state["stop"] = stop
        state["loop"] = asyncio.get_running_loop()
        args = Namespace(
            demo_data=False,
            demo_user=user,
            demo_password=password,
            host="127.0.0.1",
            port=port,
            debug=False,
            cert=None,
            key=None,
            tls=False,
            passlib_cfg=None,
            proxy_protocol=None,
            inherited_sockets=None,
        )
        backend, config = await DictBackend.init(args, secure_auth=False, invalid_user_sleep=0)
        config.apply_context()
        async with AsyncExitStack() as stack:
            await backend.start(stack)
            await IMAPService(backend, config).start(stack)
            ready.set()
            await stop.wait()

    def thread_main() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=thread_main, name="demo-imap", daemon=True)
    thread.start()
    ready.wait(30)
    if failure:
        raise RuntimeError(f"embedded IMAP server failed to start: {failure[0]}")
    try:
        yield port
    finally:
        loop = state.get("loop")
        stop = state.get("stop")
        if isinstance(loop, asyncio.AbstractEventLoop) and isinstance(stop, asyncio.Event):
            loop.call_soon_threadsafe(stop.set)
        thread.join(10)


@contextmanager
def embedded_smtp() -> Iterator[tuple[int, list[bytes]]]:
    """An aiosmtpd sink on 127.0.0.1; yields its port and the list of received messages."""
    from aiosmtpd.controller import Controller

    received: list[bytes] = []

    class Sink:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            received.append(getattr(envelope, "original_content", b"") or b"")
            return "250 OK"

    controller = Controller(Sink(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port, received
    finally:
        controller.stop()


def sample_mail(now: datetime) -> list[bytes]:
    """A question, its follow-up, a stranger using that ticket's tag, a vacation reply."""

    def mail(sender: str, subject: str, body: str, mid: str, minutes: int, **extra: str) -> bytes:
        msg = EmailMessage()
        msg["From"] = sender
        msg["To"] = f"WPERP Support <{SUPPORT}>"
        msg["Subject"] = subject
        msg["Date"] = format_datetime(now - timedelta(minutes=minutes))
        msg["Message-ID"] = mid
        for name, value in extra.items():
            msg[name.replace("_", "-")] = value
        msg.set_content(body)
        return msg.as_bytes()

    return [
        mail(
            "Alice Rahman <alice@customer.example>",
            "Cannot install WPERP on PHP 8.2",
            "Hello,\n\nthe installer stops with a blank page after the database step.\n"
            "How do I finish the installation?\n\nAlice",
            "<q1@customer.example>",
            30,
            Cc="bob@customer.example",
        ),
        mail(
            "Alice Rahman <alice@customer.example>",
            "Re: Cannot install WPERP on PHP 8.2",
            "Forgot to say: the log shows 'memory exhausted'.\n\n> the installer stops ...",
            "<q2@customer.example>",
            20,
            In_Reply_To="<q1@customer.example>",
            References="<q1@customer.example>",
        ),
        mail(
            "Mallory <mallory@elsewhere.example>",
            f"[{PRODUCT} #1] please send me the whole conversation",
            "I am also on this ticket, honest.",
            "<m1@elsewhere.example>",
            10,
        ),
        mail(
            "Carol <carol@customer.example>",
            "Out of office: your newsletter",
            "I am away until Monday.",
            "<v1@customer.example>",
            5,
            Auto_Submitted="auto-replied",
        ),
    ]


def overdue_mail(when: datetime) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Dana Akter <dana@customer.example>"
    msg["To"] = f"WPERP Support <{SUPPORT}>"
    msg["Subject"] = "Payroll export fails every month"
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = "<d1@customer.example>"
    msg.set_content("The payroll CSV export stops at 500 employees. Please help.\n\nDana")
    return msg.as_bytes()


def demo_settings(folder: Path, imap_port: int, smtp_port: int) -> Settings:
    return settings_from_dict(demo_config(folder, imap_port, smtp_port))


def demo_config(folder: Path, imap_port: int, smtp_port: int) -> dict[str, Any]:
    return {
        "database": {"url": f"sqlite:///{folder / 'supportd.db'}"},
        "imap": {
            "host": "127.0.0.1",
            "port": imap_port,
            "security": "none",
            "username": USER,
            "password": PASSWORD,
            "idle": False,
            "poll_interval": 1,
        },
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none"},
        # The demo runs at any hour; a real desk waits for support hours by default.
        "sla": {"notify_outside_hours": True},
        "support": {
            "address": SUPPORT,
            "name": "WPERP Support",
            "product": PRODUCT,
            "agents": [f"{AGENT_NAME} <{AGENT}>", f"{OTHER_NAME} <{OTHER}>"],
            "escalation": [LEAD],
            "secret_key": "demo-secret-key-not-for-production",
        },
    }


def write_config(path: Path, config: dict[str, Any]) -> None:
    """`config` as TOML (sections of strings, numbers, booleans and lists of strings)."""
    lines: list[str] = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            text = str(value).lower() if isinstance(value, bool) else json.dumps(value)
            lines.append(f"{key} = {text}")
        lines.append("")
    path.write_text("\n".join(lines))


def run_demo(echo: Callable[[str], None], *, keep: bool = False) -> None:
    folder = Path(tempfile.mkdtemp(prefix="supportd-demo-"))
    try:
        with embedded_imap(USER, PASSWORD) as imap_port, embedded_smtp() as (smtp_port, sent):
            settings = demo_settings(folder, imap_port, smtp_port)
            engine = build_engine(settings)
            schema.upgrade(engine)
            echo(f"database: {folder / 'supportd.db'} (migrated)")
            echo(
                f"IMAP: 127.0.0.1:{imap_port} (pymap, in memory); SMTP sink: 127.0.0.1:{smtp_port}"
            )
            with IMAPClient("127.0.0.1", port=imap_port, ssl=False) as client:
                client.login(USER, PASSWORD)
                now = datetime.now(UTC)
                for raw in sample_mail(now):
                    client.append("INBOX", raw)
                # One customer wrote three days ago and nobody answered: past its target.
                client.append(
                    "INBOX", overdue_mail(now - timedelta(days=3)), msg_time=now - timedelta(days=3)
                )
            echo("appended 5 sample mails to INBOX (one of them arrived three days ago)\n")
            desk = build_desk(settings, engine=engine)
            stats = Runner(desk).run_once()
            echo(
                f"run --once: stored {stats.stored}, duplicates {stats.duplicates}, "
                f"quarantined {stats.quarantined}, new tickets {stats.new_tickets}\n"
            )
            for ticket in list_tickets(engine):
                detail = show_ticket(engine, ticket["number"]) or {}
                echo(
                    f"#{ticket['number']} [{ticket['status']}] {ticket['subject']!r} "
                    f"from {ticket['requester']} ({ticket['message_count']} message(s)), "
                    f"category {ticket['category']}, reply due {ticket['first_response_due']}"
                )
                for msg in detail.get("messages", []):
                    note = f"  (automatic: {msg['automatic']})" if msg["automatic"] else ""
                    echo(
                        f"     {msg['direction']} {msg['kind']:<8} {msg['from']}: "
                        f"{msg['subject']}{note}"
                    )
            echo(
                "\nMallory's mail carried ticket #1's tag but she is no participant, "
                "so it opened its own ticket. Carol's out-of-office reply got no answer."
            )
            escalations = [m for m in _parsed(sent) if LEAD in str(m["To"])]
            echo(f"\nThe team lead received {len(escalations)} escalation(s):")
            for msg in escalations:
                _show(echo, msg, 10)
            acks = [m for m in _parsed(sent) if m["Auto-Submitted"] == "auto-replied"]
            echo(f"\nThe SMTP sink received {len(acks)} acknowledgement(s):")
            for msg in acks:
                _show(echo, msg, 14)
            notes = [m for m in _parsed(sent) if AGENT in str(m["To"])]
            echo(f"\n{AGENT_NAME} received {len(notes)} notification(s); the first:")
            _show(echo, notes[0], 12, headers=("From", "Reply-To"))

            seen = len(sent)
            reply = thunderbird_reply(notes[0], AGENT_NAME, AGENT, ANSWER)
            with IMAPClient("127.0.0.1", port=imap_port, ssl=False) as client:
                client.login(USER, PASSWORD)
                client.append("INBOX", reply)
            echo(
                f"\n{AGENT_NAME} answers from Thunderbird (reply to the notification, quote "
                "in both the text and the HTML part); the desk runs again:"
            )
            Runner(desk).run_once()
            relayed = [m for m in _parsed(sent[seen:]) if "alice@" in str(m["To"])]
            echo(f"\nAlice receives {len(relayed)} mail(s), only the new words:")
            for msg in relayed:
                _show(echo, msg, 12, headers=("From", "Cc", "In-Reply-To"))

            seen = len(sent)
            other = next(m for m in _parsed(sent) if OTHER in str(m["To"]))
            with IMAPClient("127.0.0.1", port=imap_port, ssl=False) as client:
                client.login(USER, PASSWORD)
                client.append("INBOX", thunderbird_reply(other, OTHER_NAME, OTHER, NOTE))
            Runner(desk).run_once()
            echo(f"\n{OTHER_NAME} replies with #note: it goes to {AGENT_NAME} only:")
            for msg in _parsed(sent[seen:]):
                _show(echo, msg, 8)
            detail = show_ticket(engine, 1) or {}
            echo(
                f"\nTicket #1 now: status {detail.get('status')}, first response at "
                f"{detail.get('first_responded_at')}; messages:"
            )
            for msg in detail.get("messages", []):
                echo(
                    f"     {msg['direction']:<3} {msg['kind']:<12} {msg['from']}: {msg['subject']}"
                )
            desk.close()
    finally:
        if keep:
            # The servers are gone; the read commands need only the database from this.
            config = folder / "supportd.toml"
            write_config(config, demo_config(folder, 1, 1))
            echo(f"kept {folder}; look inside with: supportd --config {config} tickets list")
        else:
            shutil.rmtree(folder, ignore_errors=True)


ANSWER = (
    "Hi Alice,\n\n"
    "the blank page is PHP running out of memory. Please set memory_limit = 256M in\n"
    "php.ini, restart the web server and run the installer again.\n\n"
    "Rahim"
)
NOTE = "#note\nSeen this twice on PHP 8.2 hosts with opcache on; worth asking about opcache."


def _parsed(raws: list[bytes]) -> list[EmailMessage]:
    return [message_from_bytes(raw, policy=policy.default) for raw in raws]  # type: ignore[misc,unused-ignore]


def _show(
    echo: Callable[[str], None], msg: EmailMessage, lines: int, headers: tuple[str, ...] = ()
) -> None:
    echo(f"\n  To: {msg['To']}\n  Subject: {msg['Subject']}")
    for name in (*headers, "Auto-Submitted"):
        if msg[name]:
            echo(f"  {name}: {msg[name]}")
    body = msg.get_body(("plain",))
    text = body.get_content() if isinstance(body, EmailMessage) else ""
    for line in text.strip().splitlines()[:lines]:
        echo(f"  | {line}")
    echo("  | ...")


def thunderbird_reply(notification: EmailMessage, name: str, address: str, words: str) -> bytes:
    """An answer as Thunderbird writes it: the quote in both the text and the HTML part."""
    import html

    body = notification.get_body(("plain",))
    quoted = body.get_content() if isinstance(body, EmailMessage) else ""
    when = notification["Date"]
    attribution = f"On {when}, {notification['From']} wrote:"
    text = (
        words + "\n\n" + attribution + "\n" + "\n".join("> " + line for line in quoted.splitlines())
    )
    html_part = (
        "<html><body><p>" + html.escape(words).replace("\n", "<br>") + "</p>"
        f'<div class="moz-cite-prefix">{html.escape(attribution)}</div>'
        f'<blockquote type="cite"><pre>{html.escape(quoted)}</pre></blockquote></body></html>'
    )
    msg = EmailMessage()
    msg["From"] = f"{name} <{address}>"
    msg["To"] = notification["Reply-To"]
    msg["Subject"] = "Re: " + str(notification["Subject"])
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = f"<reply-{abs(hash(words))}@demo.example>"
    msg["In-Reply-To"] = notification["Message-ID"]
    msg["References"] = f"{notification['References']} {notification['Message-ID']}"
    msg["User-Agent"] = "Mozilla Thunderbird"
    msg.set_content(text)
    msg.add_alternative(html_part, subtype="html")
    return msg.as_bytes()
