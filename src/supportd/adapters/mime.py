"""Writing the desk's own MIME messages straight to bytes.

The desk composes a handful of fixed shapes (text, text+HTML, files), so it does not need
the email package's object model and generator: they cost 1-2 ms per message (header
folding in Python, base64 line by line, a second pass for line endings), which was most of
ingestion with acknowledgements and notifications on (bench/RESULTS.md, issue 9). Here the
encoders are the C ones (binascii quoted-printable, base64), lines end in CRLF as SMTP
wants, and the stdlib still does the delicate parts: RFC 2047 words (email.header) and
RFC 2231 file names (email.utils). tests/unit/test_mime.py reads every shape back with the
email package and compares what it finds with what was put in.

Header values must be single lines (callers clean what comes from incoming mail with
mailparse.clean_header); a value with CR or LF is refused, so nothing can add a header.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from email.header import Header
from email.utils import encode_rfc2231

CRLF = b"\r\n"
_LINE = 76  # folded header lines aim at this length (RFC 5322 asks for 78 at most)


_BOUNDARY_KEY = secrets.token_hex(8)  # this process's
_BOUNDARY_SERIAL = itertools.count(secrets.randbits(32))


def boundary() -> str:
    """A fresh MIME boundary: a random key of this process's and a fixed-width serial.

    Not one os.urandom call per message (issue 9: a system call that hands the GIL to the
    other threads, under a backlog about 0.1 ms before it comes back). The key need not be
    secret: multipart() never uses a boundary that occurs in one of its parts, so a text
    written to contain a boundary the desk will use cannot split the message, and one that
    does costs one random boundary, not a search through the serials.
    """
    return f"=_supportd_{_BOUNDARY_KEY}{next(_BOUNDARY_SERIAL) & 0xFFFFFFFFFFFFFFFF:016x}"


@dataclass(frozen=True)
class Part:
    """A MIME entity: its Content-* header lines and its encoded body (CRLF endings)."""

    headers: tuple[str, ...]
    body: bytes


def encode_header(value: str) -> str:
    """A header value as ASCII: RFC 2047 words (UTF-8) where it is not ASCII."""
    if value.isascii():
        return value
    return Header(value, "utf-8").encode().replace("\n", "")


def fold(name: str, value: str) -> str:
    """`Name: value`, folded at spaces so lines stay near 76 octets (RFC 5322 2.2.3)."""
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name} holds a line break")
    line = f"{name}: {value}"
    if len(line) <= _LINE:
        return line
    lines: list[str] = []
    current = f"{name}:"
    for word in value.split(" "):
        if not word:
            continue
        if len(current) + 1 + len(word) > _LINE and current.strip() and current != f"{name}:":
            lines.append(current)
            current = ""
        current += " " + word
    lines.append(current)
    return "\r\n".join(lines)


MAX_LINE = 998  # RFC 5322: octets per line at most


def _lines(text: str) -> bytes:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.replace("\n", "\r\n").encode("utf-8")


def _short_lines(data: bytes) -> bool:
    """Whether every line of `data` (CRLF endings) holds at most MAX_LINE octets. It jumps
    from the last line end within reach to the next: a few steps for a whole mail, where
    splitting it made an object of every line (12 us of 9 KiB, issue 9)."""
    start, end = 0, len(data)
    while end - start > MAX_LINE:
        cut = data.rfind(b"\n", start, start + MAX_LINE + 2)  # a line of MAX_LINE, CRLF
        if cut < 0:
            return False
        start = cut + 1
    return True


def text(subtype: str, content: str) -> Part:
    """text/<subtype> in UTF-8: as it is (7bit) when it is ASCII in lines of at most 998
    octets, as most mail is; else quoted-printable (readable, and the C encoder is fast)."""
    data = _lines(content)
    if not data.endswith(CRLF):
        data += CRLF
    kind = f'Content-Type: text/{subtype}; charset="utf-8"'
    if data.isascii() and b"\0" not in data and _short_lines(data):
        return Part((kind, "Content-Transfer-Encoding: 7bit"), data)
    return Part(
        (kind, "Content-Transfer-Encoding: quoted-printable"),
        binascii.b2a_qp(data, istext=True),
    )


def _param(name: str, value: str) -> str:
    if value.isascii():  # always quoted: parsers read a bare ' as RFC 2231 syntax
        quoted = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{name}="{quoted}"'
    return f"{name}*={encode_rfc2231(value, 'utf-8')}"


def attachment(content_type: str, filename: str, data: bytes) -> Part:
    """A file, base64-encoded; `content_type` must already be a sane type/subtype."""
    name = "".join(c for c in filename if c >= " " and c != "\x7f")
    return Part(
        (
            f"Content-Type: {content_type}",
            "Content-Transfer-Encoding: base64",
            f"Content-Disposition: attachment; {_param('filename', name)}",
        ),
        base64.encodebytes(data).replace(b"\n", CRLF),
    )


def _entity(part: Part) -> bytes:
    return ("\r\n".join(part.headers)).encode("ascii") + CRLF + CRLF + part.body


def multipart(subtype: str, parts: Sequence[Part]) -> Part:
    """multipart/<subtype> of `parts`, with a fresh boundary found in none of them."""
    entities = [_entity(part) for part in parts]
    mark = boundary().encode("ascii")
    while any(mark in entity for entity in entities):  # RFC 2046: never inside a part
        # A text that holds the next boundaries (they can be guessed): a random one, which
        # it cannot hold, rather than trying the serials one by one through all of it.
        mark = f"=_supportd_{secrets.token_hex(24)}".encode("ascii")
    chunks = []
    for entity in entities:
        chunks.append(b"--" + mark + CRLF + entity)
        if not entity.endswith(CRLF):
            chunks.append(CRLF)
    chunks.append(b"--" + mark + b"--" + CRLF)
    return Part(
        (f'Content-Type: multipart/{subtype}; boundary="{mark.decode()}"',),
        b"".join(chunks),
    )


def message(headers: Sequence[tuple[str, str]], body: Part) -> bytes:
    """The whole message: `headers` (ASCII single-line values), MIME-Version, the body."""
    lines = [fold(name, value) for name, value in headers if value]
    lines.append("MIME-Version: 1.0")
    lines.extend(body.headers)
    return ("\r\n".join(lines)).encode("ascii") + CRLF + CRLF + body.body
