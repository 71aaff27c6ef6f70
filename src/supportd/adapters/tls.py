"""TLS client contexts for IMAP and SMTP (a module of its own: the worker process imports the
SMTP adapter without the IMAP client)."""

from __future__ import annotations

import ssl


def tls_context(ca_file: str, verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file or None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
