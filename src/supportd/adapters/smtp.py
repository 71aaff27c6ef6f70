"""SMTP submission over the standard library's smtplib.

Why smtplib and not aiosmtplib (which this adapter used until issue 9): the outbox sends
from a few threads, one blocking connection each, and smtplib costs a fraction of the CPU
per message. The profile of a 10,000-mail backlog had aiosmtplib at about 1 ms per message
in the daemon: an event loop spun up per call (run_until_complete) and a regular-expression
pass over every message to normalise its line endings, which the desk's own mail (written
with CRLF by adapters/mime) does not need. bench/RESULTS.md has the figures.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from supportd.adapters.tls import tls_context
from supportd.errors import SendError

if TYPE_CHECKING:
    from supportd.config import SmtpSettings


class SmtpConfig(Protocol):
    """What a transport reads: config.SmtpSettings, or its copy SmtpTarget."""

    @property
    def host(self) -> str: ...
    @property
    def effective_port(self) -> int: ...
    @property
    def security(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def timeout(self) -> float: ...
    @property
    def ca_file(self) -> str: ...
    @property
    def tls_verify(self) -> bool: ...


@dataclass(frozen=True)
class SmtpTarget:
    """A plain copy of the SMTP settings for the worker process (no pydantic there)."""

    host: str
    effective_port: int
    security: str
    username: str
    password: str
    timeout: float
    ca_file: str
    tls_verify: bool

    @classmethod
    def of(cls, settings: SmtpSettings) -> SmtpTarget:
        return cls(
            settings.host,
            settings.effective_port,
            settings.security,
            settings.username,
            settings.password,
            settings.timeout,
            settings.ca_file,
            settings.tls_verify,
        )


_BARE_LF = re.compile(rb"(?<!\r)\n")


def _where(settings: SmtpConfig) -> str:
    return f"SMTP {settings.host}:{settings.effective_port}"


def _text(message: bytes | str) -> str:
    return message.decode(errors="replace") if isinstance(message, bytes) else str(message)


def _send_error(exc: BaseException, where: str) -> SendError:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = exc.recipients
        codes = [code for code, _ in refused.values()]
        detail = "; ".join(
            f"{address}: {code} {_text(message)}" for address, (code, message) in refused.items()
        )
        return SendError(
            f"{where}: recipients refused: {detail}",
            permanent=bool(codes) and all(c >= 500 for c in codes),
            code=max(codes, default=None),
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        return SendError(
            f"{where}: {exc.smtp_code} {_text(exc.smtp_error)}",
            permanent=exc.smtp_code >= 500,
            code=exc.smtp_code,
        )
    return SendError(f"{where}: {type(exc).__name__}: {exc}", permanent=False)


_DOT_LINE = re.compile(rb"(?m)^\.")
_BAD_ADDRESS = re.compile(r"[\s<>]")


class _Session:
    """One connection's transactions. smtplib's sendmail() parses each address again and
    runs its dot-stuffing regex over every message (a tenth of the daemon's CPU under a
    backlog), and waits for each command's reply; this sends MAIL, RCPT and DATA in one
    write where the server offers PIPELINING (RFC 2920) and dot-stuffs only messages that
    have a line starting with a dot. Replies are read and judged as sendmail() judges them.
    """

    def __init__(self, client: smtplib.SMTP, where: str, pipelining: bool | None = None) -> None:
        self.client = client
        self.where = where
        self.pipelining = client.has_extn("pipelining") if pipelining is None else pipelining

    def send(self, sender: str, recipients: tuple[str, ...], raw: bytes) -> None:
        if raw.count(b"\n") != raw.count(b"\r\n"):  # SMTP wants CRLF; ours already has it
            raw = _BARE_LF.sub(b"\r\n", raw)
        for address in (sender, *recipients):
            if _BAD_ADDRESS.search(address) or not address.isascii():
                raise SendError(f"{self.where}: cannot send to or from {address!r}", permanent=True)
        try:
            self._transaction(sender, recipients, raw)
        except (smtplib.SMTPException, OSError) as exc:
            raise _send_error(exc, self.where) from None

    def _transaction(self, sender: str, recipients: tuple[str, ...], raw: bytes) -> None:
        client = self.client
        commands = [f"MAIL FROM:<{sender}>", *(f"RCPT TO:<{r}>" for r in recipients), "DATA"]
        if self.pipelining:
            client.send(("\r\n".join(commands) + "\r\n").encode("ascii"))
            replies = [client.getreply() for _ in commands]
        else:
            replies = []
            for command in commands:
                client.send((command + "\r\n").encode("ascii"))
                replies.append(client.getreply())
                if replies[-1][0] >= 400 and command.startswith("MAIL"):
                    break  # the server refused the sender: nothing else is worth sending
        mail_code, mail_reply = replies[0]
        refused = {
            r: reply
            for r, reply in zip(recipients, replies[1 : 1 + len(recipients)], strict=False)
            if reply[0] not in (250, 251)
        }
        data_code = replies[-1][0] if len(replies) == len(commands) else 0
        if data_code == 354 and (mail_code != 250 or len(refused) == len(recipients)):
            client.send(b".\r\n")  # the server wants data we will not send: end it empty
            client.getreply()
        if mail_code != 250:
            self._reset()
            raise smtplib.SMTPSenderRefused(mail_code, mail_reply, sender)
        if len(refused) == len(recipients):
            self._reset()
            raise smtplib.SMTPRecipientsRefused(refused)
        if data_code != 354:
            self._reset()
            raise smtplib.SMTPDataError(data_code, replies[-1][1])
        if raw.startswith(b".") or b"\n." in raw:
            raw = _DOT_LINE.sub(b"..", raw)
        if not raw.endswith(b"\r\n"):
            raw += b"\r\n"
        client.send(raw + b".\r\n")
        code, reply = client.getreply()
        if code != 250:
            self._reset()
            raise smtplib.SMTPDataError(code, reply)

    def _reset(self) -> None:
        with suppress(smtplib.SMTPException, OSError):
            self.client.rset()


class SmtpTransport:
    """Blocking sessions: one connection, many messages. Thread-safe (one session each)."""

    def __init__(self, settings: SmtpConfig) -> None:
        self.settings = settings
        self._context: ssl.SSLContext | None = None

    def _tls(self) -> ssl.SSLContext:
        # Built once: loading the system's CA store takes ~17 ms, per connection before.
        if self._context is None:
            self._context = tls_context(self.settings.ca_file, self.settings.tls_verify)
        return self._context

    def connect(self) -> smtplib.SMTP:
        """An open, greeted (and logged-in, when configured) connection; raises SendError."""
        settings = self.settings
        where = _where(settings)
        client: smtplib.SMTP | None = None
        try:
            if settings.security == "tls":
                client = smtplib.SMTP_SSL(
                    settings.host,
                    settings.effective_port,
                    timeout=settings.timeout,
                    context=self._tls(),
                )
            else:
                client = smtplib.SMTP(
                    settings.host, settings.effective_port, timeout=settings.timeout
                )
            client.ehlo()
            if settings.security == "starttls":
                client.starttls(context=self._tls())
                client.ehlo()
            if settings.username:
                client.login(settings.username, settings.password)
            return client
        except smtplib.SMTPAuthenticationError as exc:
            _close(client)
            raise SendError(
                f"SMTP login refused at {settings.host}:{settings.effective_port} "
                f"for user {settings.username}: {exc.smtp_code} "
                f"{_text(exc.smtp_error)}",
                permanent=True,
                code=exc.smtp_code,
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            _close(client)
            raise SendError(f"{where} connect failed: {exc}", permanent=False) from None

    @contextmanager
    def session(self) -> Iterator[_Session]:
        client = self.connect()
        try:
            yield _Session(client, _where(self.settings))
            with suppress(smtplib.SMTPException, OSError):
                client.quit()
        finally:
            _close(client)


def _close(client: smtplib.SMTP | None) -> None:
    if client is not None:
        with suppress(OSError):
            client.close()


def probe(settings: SmtpSettings) -> str:
    """Connect, EHLO, log in when configured; raise SendError naming host and port."""
    client = SmtpTransport(settings).connect()
    try:
        with suppress(smtplib.SMTPException, OSError):
            client.quit()
    finally:
        _close(client)
    return f"{settings.host}:{settings.effective_port} ({settings.security})"
