"""SMTP submission over aiosmtplib."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import aiosmtplib

from supportd.adapters.imap import tls_context
from supportd.config import SmtpSettings
from supportd.errors import SendError


def _client(settings: SmtpSettings) -> aiosmtplib.SMTP:
    context = tls_context(settings.ca_file, settings.tls_verify)
    return aiosmtplib.SMTP(
        hostname=settings.host,
        port=settings.effective_port,
        use_tls=settings.security == "tls",
        start_tls=settings.security == "starttls",
        tls_context=context,
        timeout=settings.timeout,
        username=settings.username or None,
        password=settings.password or None,
    )


async def _probe(settings: SmtpSettings) -> str:
    client = _client(settings)
    try:
        await client.connect()
    except aiosmtplib.SMTPAuthenticationError as exc:
        raise SendError(
            f"SMTP login refused at {settings.host}:{settings.effective_port} "
            f"for user {settings.username}: {exc.code} {exc.message}",
            permanent=True,
            code=exc.code,
        ) from None
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise SendError(
            f"SMTP connect to {settings.host}:{settings.effective_port} failed: {exc}",
            permanent=False,
        ) from None
    try:
        await client.ehlo()
        return f"{settings.host}:{settings.effective_port} ({settings.security})"
    finally:
        try:
            await client.quit()
        except aiosmtplib.SMTPException:
            client.close()


def probe(settings: SmtpSettings) -> str:
    """Connect, EHLO, log in when configured; raise SendError naming host and port."""
    return asyncio.run(_probe(settings))


def _send_error(exc: BaseException, where: str) -> SendError:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        return SendError(
            f"{where}: recipients refused: {detail}",
            permanent=all(c >= 500 for c in codes),
            code=max(codes, default=None),
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return SendError(
            f"{where}: {exc.code} {exc.message}", permanent=exc.code >= 500, code=exc.code
        )
    return SendError(f"{where}: {type(exc).__name__}: {exc}", permanent=False)


class _Session:
    def __init__(
        self, loop: asyncio.AbstractEventLoop, client: aiosmtplib.SMTP, where: str
    ) -> None:
        self.loop = loop
        self.client = client
        self.where = where

    def send(self, sender: str, recipients: tuple[str, ...], raw: bytes) -> None:
        try:
            self.loop.run_until_complete(self.client.sendmail(sender, list(recipients), raw))
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            raise _send_error(exc, self.where) from None


class SmtpTransport:
    """Synchronous sessions over aiosmtplib: one connection, many messages."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    @contextmanager
    def session(self) -> Iterator[_Session]:
        where = f"SMTP {self.settings.host}:{self.settings.effective_port}"
        loop = asyncio.new_event_loop()
        client = _client(self.settings)
        try:
            try:
                loop.run_until_complete(client.connect())
            except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
                raise _send_error(exc, where) from None
            yield _Session(loop, client, where)
            try:
                loop.run_until_complete(client.quit())
            except (TimeoutError, aiosmtplib.SMTPException, OSError):
                client.close()
        finally:
            if client.is_connected:
                client.close()
            loop.run_until_complete(asyncio.sleep(0))  # let the transport finish closing
            loop.close()
