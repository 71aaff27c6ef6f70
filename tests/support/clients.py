"""Replies as real mail clients compose them: their MIME shapes, attribution lines, quotes.

Each takes the message being answered and the new words, and returns the raw reply with
the quote in both the text and the HTML part (multipart/alternative), as the clients do.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from tests.support.mailnet import plain_text


def _headers(
    msg: EmailMessage, original: EmailMessage, sender: str, to: str | None, subject: str | None
) -> None:
    msg["From"] = sender
    msg["To"] = to or str(original["Reply-To"] or original["From"])
    msg["Subject"] = subject or f"Re: {original['Subject']}"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain="client.example")
    msg["In-Reply-To"] = str(original["Message-ID"])
    refs = f"{original['References'] or ''} {original['Message-ID']}".strip()
    msg["References"] = refs


def _quote(original: EmailMessage) -> list[str]:
    return plain_text(original).splitlines()


def gmail(
    original: EmailMessage,
    sender: str,
    words: str,
    to: str | None = None,
    subject: str | None = None,
) -> bytes:
    when = "Sun, Nov 29, 2026 at 10:15 AM"
    who = str(original["From"])
    attribution = f"On {when} {who} wrote:"
    text = f"{words}\n\n{attribution}\n\n" + "\n".join(f"> {line}" for line in _quote(original))
    quoted_html = "<br>".join(html.escape(line) for line in _quote(original))
    body_html = (
        f'<div dir="ltr">{html.escape(words).replace(chr(10), "<br>")}</div><br>'
        f'<div class="gmail_quote"><div dir="ltr" class="gmail_attr">{html.escape(attribution)}'
        f'<br></div><blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;'
        f'border-left:1px solid rgb(204,204,204);padding-left:1ex">{quoted_html}</blockquote></div>'
    )
    msg = EmailMessage()
    _headers(msg, original, sender, to, subject)
    msg.set_content(text)
    msg.add_alternative(body_html, subtype="html")
    return msg.as_bytes()


OUTLOOK_LABELS = {
    "en": ("From", "Sent", "To", "Subject"),
    "fr": ("De\u00a0", "Envoyé\u00a0", "À\u00a0", "Objet\u00a0"),
    "de": ("Von", "Gesendet", "An", "Betreff"),
}


def outlook(
    original: EmailMessage,
    sender: str,
    words: str,
    language: str = "en",
    to: str | None = None,
) -> bytes:
    frm, sent, to_label, subj = OUTLOOK_LABELS[language]
    block = [
        f"{frm}: {original['From']}",
        f"{sent}: Sunday, November 29, 2026 10:15 AM",
        f"{to_label}: {original['To']}",
        f"{subj}: {original['Subject']}",
    ]
    text = f"{words}\n\n{'_' * 32}\n" + "\n".join(block) + "\n\n" + "\n".join(_quote(original))
    body_html = (
        f'<html><body><div class="WordSection1"><p class="MsoNormal">'
        f"{html.escape(words).replace(chr(10), '<br>')}</p></div>"
        '<div id="appendonsend"></div><hr style="display:inline-block;width:98%">'
        '<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri" style="font-size:11pt">'
        + "<br>".join(
            f"<b>{html.escape(line.split(':', 1)[0])}:</b>{html.escape(line.split(':', 1)[1])}"
            for line in block
        )
        + "</font><div>&nbsp;</div></div><div>"
        + "<br>".join(html.escape(line) for line in _quote(original))
        + "</div></body></html>"
    )
    msg = EmailMessage()
    _headers(msg, original, sender, to, None)
    msg["X-Mailer"] = "Microsoft Outlook 16.0"
    msg["Thread-Index"] = "AQHaxyz0123456789abcdef=="
    msg.set_content(text)
    msg.add_alternative(body_html, subtype="html")
    return msg.as_bytes()


def apple_mail_latin1(original: EmailMessage, sender: str, words: str) -> bytes:
    """Apple Mail writing ISO-8859-1 text (quoted-printable), a cite blockquote in HTML."""
    attribution = f"On 29 Nov 2026, at 10:15, {original['From']} wrote:"
    text = f"{words}\n\n{attribution}\n\n" + "\n".join(f"> {line}" for line in _quote(original))
    body_html = (
        f"<html><body>{html.escape(words).replace(chr(10), '<br>')}<br><div><br>"
        f'<blockquote type="cite"><div>{html.escape(attribution)}</div>'
        + "<br>".join(html.escape(line) for line in _quote(original))
        + "</blockquote></div></body></html>"
    )
    msg = EmailMessage()
    _headers(msg, original, sender, None, None)
    msg["X-Mailer"] = "Apple Mail (2.3774.600.62)"
    msg.set_content(text.encode("latin-1", "replace").decode("latin-1"), charset="iso-8859-1")
    msg.add_alternative(body_html, subtype="html", charset="iso-8859-1")
    return msg.as_bytes()


def only_quote(original: EmailMessage, sender: str) -> bytes:
    """A reply sent without a word of its own (the send button hit too early)."""
    return gmail(original, sender, "")
