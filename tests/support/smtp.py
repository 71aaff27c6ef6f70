"""An aiosmtpd sink on 127.0.0.1 that records what it receives and can be told to fail."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.support.dovecot import free_port


@dataclass
class Received:
    sender: str
    recipients: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.raw, policy=policy.default)  # type: ignore[return-value]


@dataclass
class Sink:
    """Answers 250, or the codes queued in `failures` (one per DATA) first."""

    received: list[Received] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    on_message: Any = None
    refuse: set[str] = field(default_factory=set)  # recipients answered 550 at RCPT

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.attempts += 1
            if self.failures:
                return self.failures.pop(0)
            item = Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            self.received.append(item)
        if self.on_message is not None:
            self.on_message(item)
        return "250 OK"

    def reset(self) -> None:
        with self.lock:
            self.received.clear()
            self.failures.clear()
            self.attempts = 0
            self.on_message = None
            self.refuse.clear()

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address in r.recipients]


class SmtpServer:
    def __init__(self) -> None:
        self.sink = Sink()
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=free_port())

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()
