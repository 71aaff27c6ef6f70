"""adapters/mime writes bytes by hand: the email package must read back what went in."""

from __future__ import annotations

import email
import email.utils
from email import policy
from email.message import EmailMessage

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from supportd.adapters import mime

# Text as customers and agents write it: any script, blank lines, long lines, dots, "=".
TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r") | st.just("\n"),
    max_size=3000,
)


def read(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    assert not msg.defects, msg.defects
    return msg


def lines_ok(raw: bytes) -> None:
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only, as SMTP wants
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


@settings(max_examples=150, deadline=None)
@given(TEXT, TEXT, st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=300))
def test_text_and_html_round_trip(plain: str, html: str, subject: str) -> None:
    body = mime.multipart("alternative", [mime.text("plain", plain), mime.text("html", html)])
    raw = mime.message(
        [("From", "Desk <support@desk.example>"), ("Subject", mime.encode_header(subject))], body
    )
    lines_ok(raw)
    msg = read(raw)
    assert " ".join(str(msg["Subject"] or "").split()) == " ".join(subject.split())
    got_plain = msg.get_body(("plain",))
    got_html = msg.get_body(("html",))
    assert got_plain is not None and got_html is not None
    # (the parser leaves a CR on a leading empty line; clients show the same empty line)
    assert got_plain.get_content().replace("\r\n", "\n").rstrip("\n") == plain.rstrip("\n")
    assert got_html.get_content().replace("\r\n", "\n").rstrip("\n") == html.rstrip("\n")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=5000), st.text(min_size=1, max_size=60).filter(str.strip))
@example(b"", "<>")  # found by hypothesis in CI: the reader unwraps a name in angle brackets
@example(b"x", " <report.pdf> ")
def test_attachments_round_trip(data: bytes, name: str) -> None:
    body = mime.multipart(
        "mixed",
        [mime.text("plain", "see the file"), mime.attachment("application/pdf", name, data)],
    )
    raw = mime.message([("Subject", "files")], body)
    lines_ok(raw)
    files = list(read(raw).iter_attachments())
    assert len(files) == 1
    assert files[0].get_content() == data
    clean = "".join(c for c in name if c >= " " and c != "\x7f")
    # The reader strips a name's spaces, and (email.utils.unquote) the angle brackets of a
    # value wrapped in them: "<x>" is written as it is and read back as "x".
    assert files[0].get_filename() == email.utils.unquote(clean).strip()


def test_long_headers_are_folded_and_unfold_to_the_value() -> None:
    refs = " ".join(f"<message-{i}.0123456789abcdef@mail.customer.example>" for i in range(20))
    raw = mime.message([("References", refs)], mime.text("plain", "x"))
    lines_ok(raw)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))
    assert read(raw)["References"] == refs


def test_a_header_value_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="Subject"):
        mime.message([("Subject", "hi\r\nBcc: victim@example.com")], mime.text("plain", "x"))


def test_empty_values_are_left_out() -> None:
    raw = mime.message([("Cc", ""), ("To", "a@example.com")], mime.text("plain", "x"))
    assert b"Cc:" not in raw and b"To: a@example.com\r\n" in raw


def test_ascii_text_goes_as_it_is_and_the_rest_quoted_printable() -> None:
    assert b"7bit" in mime.text("plain", "Hello,\nplain words.").headers[1].encode()
    assert mime.text("plain", "Hello,\nplain words.").body == b"Hello,\r\nplain words.\r\n"
    for content in ("caf\u00e9", "x" * 999, "nul\0byte"):
        part = mime.text("plain", content)
        assert part.headers[1].endswith("quoted-printable"), content
        raw = mime.message([("Subject", "t")], part)
        lines_ok(raw)
        body = read(raw).get_body(("plain",))
        assert body is not None
        assert body.get_content().replace("\r\n", "\n").rstrip("\n") == content


# ASCII lines around the limit: 998 octets may go as they are, 999 may not.
LINES = st.lists(
    st.integers(0, 1100).map(lambda n: "x" * n) | st.sampled_from(["x" * 998, "x" * 999]),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(LINES)
def test_ascii_goes_as_it_is_exactly_when_every_line_fits(lines: list[str]) -> None:
    part = mime.text("plain", "\n".join(lines))
    fits = all(len(line) <= mime.MAX_LINE for line in lines)
    assert part.headers[1].endswith("7bit") == fits, [len(line) for line in lines]
    lines_ok(mime.message([("Subject", "t")], part))


def test_boundaries_are_distinct_and_none_is_a_prefix_of_another() -> None:
    marks = [mime.boundary() for _ in range(2000)]
    assert len(set(marks)) == len(marks)
    assert len({len(m) for m in marks}) == 1  # fixed width: "--B1" never starts "--B10"


def test_a_text_holding_the_next_boundaries_cannot_split_the_message() -> None:
    """A customer who saw an acknowledgement's boundary can guess the next ones; the
    desk never uses a boundary that occurs in a part, and takes a random one at once
    rather than trying the serials one by one through the text."""
    guessed = [mime.boundary() for _ in range(3)]
    ahead = [f"{guessed[-1][:-16]}{int(guessed[-1][-16:], 16) + n:016x}" for n in range(1, 500)]
    forged = "Hello\n" + "".join(
        f"--{mark}\nContent-Type: text/html\n\n<b>injected</b>\n" for mark in ahead
    )
    part = mime.multipart(
        "alternative", [mime.text("plain", forged), mime.text("html", "<p>x</p>")]
    )
    used = part.headers[0].split('boundary="')[1].rstrip('"')
    assert used not in forged
    msg = read(mime.message([("Subject", "t")], part))
    bodies = [p.get_content() for p in msg.iter_parts()]
    assert len(bodies) == 2
    assert bodies[0].replace("\r\n", "\n").rstrip("\n") == forged.rstrip("\n")
