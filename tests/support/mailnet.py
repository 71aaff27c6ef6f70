"""A small mail network on loopback: an SMTP router delivering into private Dovecot mailboxes.

It plays the Internet between the desk, its agents and its customers: every recipient is
an account of the private Dovecot; plus-addresses (support+token@) reach the base mailbox,
with a Delivered-To header as a real MTA adds. Clients read their mail over IMAP.
"""

from __future__ import annotations

import threading
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from imapclient import IMAPClient

from tests.support.dovecot import Account, Dovecot, free_port


class MailNet:
    def __init__(self, dovecot: Dovecot) -> None:
        self.dovecot = dovecot
        self.boxes: dict[str, Account] = {}
        self.log: list[tuple[str, str]] = []  # (envelope sender, recipient)
        self.unknown: list[str] = []
        self._lock = threading.Lock()
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    def start(self) -> MailNet:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def mailbox(self, address: str, account: Account | None = None) -> Account:
        """Give `address` a mailbox (a fresh Dovecot account unless one is given)."""
        self.boxes[address.lower()] = account or self.dovecot.add_user()
        return self.boxes[address.lower()]

    def _box(self, rcpt: str) -> Account | None:
        local, _, domain = rcpt.lower().partition("@")
        return self.boxes.get(rcpt.lower()) or self.boxes.get(f"{local.split('+')[0]}@{domain}")

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw: bytes = envelope.original_content
        for rcpt in envelope.rcpt_tos:
            with self._lock:
                self.log.append((envelope.mail_from, rcpt))
            box = self._box(rcpt)
            if box is None:
                self.unknown.append(rcpt)
                continue
            delivered = f"Delivered-To: {rcpt}\r\n".encode() + raw
            self._append(box, delivered)
        return "250 OK"

    def _append(self, box: Account, raw: bytes) -> None:
        with IMAPClient("127.0.0.1", port=self.dovecot.port, ssl=False, timeout=30) as client:
            client.login(box.username, box.password)
            client.append("INBOX", raw)

    def send(self, raw: bytes, sender: str, recipients: list[str]) -> None:
        """Submit a message as a mail client would."""
        import smtplib

        wire = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # smtplib keeps bytes' EOLs
        with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
            client.sendmail(sender, recipients, wire)

    def inbox(self, address: str) -> list[EmailMessage]:
        """Every message in the mailbox of `address`, oldest first."""
        box = self.boxes[address.lower()]
        with IMAPClient("127.0.0.1", port=self.dovecot.port, ssl=False, timeout=30) as client:
            client.login(box.username, box.password)
            client.select_folder("INBOX", readonly=True)
            uids = client.search(["ALL"])
            data = client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
        return [
            message_from_bytes(data[uid][b"BODY[]"], policy=policy.default)  # type: ignore[misc]
            for uid in sorted(data)
        ]


def plain_text(msg: EmailMessage) -> str:
    body = msg.get_body(("plain",))
    return body.get_content() if isinstance(body, EmailMessage) else ""
