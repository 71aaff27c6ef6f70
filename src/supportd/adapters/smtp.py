"""SMTP submission over aiosmtplib."""

from __future__ import annotations

import asyncio

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
