"""Bad input: every shape real servers deliver parses to the best text available."""

from __future__ import annotations

import base64

from supportd.adapters.mailparse import clean_header, html_to_text, parse
from supportd.domain.mail import dedup_key

CRLF = b"\r\n"


def raw(*lines: bytes, body: bytes = b"hello") -> bytes:
    return CRLF.join(lines) + CRLF + CRLF + body


def test_plain_message_fields() -> None:
    m = parse(
        raw(
            b"From: =?utf-8?q?Rahman=2C_Alice?= <Alice@Customer.Example>",
            b"To: support@desk.example, Bob <bob@x.example>",
            b"Cc: carol@x.example",
            b"Subject: =?utf-8?b?SW5zdGFsbGF0aW9uIMOpY2hvdcOpZQ==?=",
            b"Message-ID: <abc@customer.example>",
            b"In-Reply-To: <p1@desk.example>",
            b"References: <r0@desk.example> <p1@desk.example>",
            b"Date: Sun, 22 Nov 2026 10:00:00 +0600",
        )
    )
    assert m.sender is not None
    assert (m.sender.email, m.sender.name) == ("alice@customer.example", "Rahman, Alice")
    assert [a.email for a in m.to] == ["support@desk.example", "bob@x.example"]
    assert [a.email for a in m.cc] == ["carol@x.example"]
    assert m.subject == "Installation échouée"
    assert m.message_id == "<abc@customer.example>"
    assert m.thread_references() == ("<p1@desk.example>", "<r0@desk.example>")
    assert m.date is not None and m.date.utcoffset() is not None
    assert m.text == "hello"


def test_raw_8bit_bytes_in_headers() -> None:
    m = parse(raw(b"From: J\xf6rg <joerg@x.example>", b"Subject: Gr\xfc\xdfe \xe2\x82\xac"))
    assert m.sender is not None and m.sender.email == "joerg@x.example"
    assert "Jörg" in m.sender.name
    assert "€" in m.subject or "Gr" in m.subject
    m.subject.encode("utf-8")  # no lone surrogates survive


def test_unknown_charset_body() -> None:
    m = parse(
        raw(
            b"From: a@x.example",
            b"Content-Type: text/plain; charset=x-unknown",
            b"Content-Transfer-Encoding: 8bit",
            body=b"caf\xc3\xa9 ok",
        )
    )
    assert m.text == "café ok"


def test_unknown_charset_in_encoded_word() -> None:
    m = parse(raw(b"From: a@x.example", b"Subject: =?x-unknown?q?hello_there?="))
    assert "hello" in m.subject


def test_multipart_without_boundary() -> None:
    m = parse(
        raw(
            b"From: a@x.example",
            b"Content-Type: multipart/mixed",
            body=b"--xyz\r\nContent-Type: text/plain\r\n\r\nlost boundary text\r\n--xyz--\r\n",
        )
    )
    assert "lost boundary text" in m.text
    assert m.defects


def test_missing_from_message_id_and_date() -> None:
    m = parse(raw(b"Subject: orphan", body=b"who am I"))
    assert m.sender is None and m.message_id is None and m.date is None
    assert m.text == "who am I"
    assert len(dedup_key(m, b"x")) == 64


def test_undisclosed_recipients_group() -> None:
    m = parse(
        raw(b"From: a@x.example", b"To: unlisted-recipients:;", b"Cc: undisclosed-recipients: ;")
    )
    assert m.to == () and m.cc == ()


def test_empty_message() -> None:
    m = parse(b"")
    assert m.sender is None and m.text == "" and m.subject == ""


def test_large_attachment_is_not_decoded_into_text() -> None:
    blob = base64.encodebytes(b"\x00" * (30 * 1024 * 1024))
    body = (
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename=big.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + blob + b"--b--\r\n"
    )
    m = parse(raw(b"From: a@x.example", b'Content-Type: multipart/mixed; boundary="b"', body=body))
    assert m.text.strip() == "see attached"


def test_bounce_with_8bit_embedded_message() -> None:
    body = (
        b"--B\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\nStatus: 5.1.1\r\n"
        b"--B\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: J\xf6rg <j@x.example>\r\nSubject: \xff\xfe\r\n\r\nbody \xe9\r\n--B--\r\n"
    )
    m = parse(
        raw(
            b"From: MAILER-DAEMON@mx.example",
            b"Return-Path: <>",
            b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"',
            body=body,
        )
    )
    assert m.text.strip() == "Delivery failed."
    assert m.content_type == "multipart/report"
    assert m.return_path == ""


def test_html_only_message() -> None:
    m = parse(
        raw(
            b"From: a@x.example",
            b"Content-Type: text/html; charset=utf-8",
            body=b"<html><head><style>p{}</style></head>"
            b"<body><p>Hello</p><p>World &amp; co</p></body></html>",
        )
    )
    assert "Hello" in m.text and "World & co" in m.text and "p{}" not in m.text


def test_nul_bytes_never_reach_the_text() -> None:
    m = parse(raw(b"From: a@x.example", body=b"a\x00b"))
    assert "\x00" not in m.text


def test_header_injection_is_flattened() -> None:
    assert clean_header("Hi\r\nBcc: victim@x") == "Hi Bcc: victim@x"
    m = parse(raw(b"From: a@x.example", b"Subject: =?utf-8?q?Hi=0D=0ABcc:_v@x?="))
    assert "\r" not in m.subject and "\n" not in m.subject


def test_html_to_text_handles_broken_markup() -> None:
    assert "text" in html_to_text("<p>text<div")


def test_dedup_key_ignores_transport_headers() -> None:
    a = parse(
        raw(
            b"Received: by mx1",
            b"From: a@x.example",
            b"Message-ID: <1@x>",
            b"Subject: s",
            b"Date: Sun, 22 Nov 2026 10:00:00 +0000",
        )
    )
    b = parse(
        raw(
            b"Received: by mx2",
            b"From: a@x.example",
            b"Message-ID: <1@x>",
            b"Subject: s",
            b"Date: Sun, 22 Nov 2026 10:00:00 +0000",
        )
    )
    c = parse(
        raw(
            b"From: other@x.example",
            b"Message-ID: <1@x>",
            b"Subject: s",
            b"Date: Sun, 22 Nov 2026 10:00:00 +0000",
        )
    )
    body = raw(b"X: y")
    assert dedup_key(a, body) == dedup_key(b, body)
    assert dedup_key(a, body) != dedup_key(c, body)


def test_same_message_id_with_different_text_is_a_different_message() -> None:
    head = (
        b"From: a@x.example",
        b"Message-ID: <1@x>",
        b"Subject: s",
        b"Date: Sun, 22 Nov 2026 10:00:00 +0000",
    )
    first, second = raw(*head, body=b"first variant"), raw(*head, body=b"second variant")
    assert dedup_key(parse(first), first) != dedup_key(parse(second), second)


def test_crlf_and_lf_copies_are_the_same_message() -> None:
    crlf = raw(b"From: a@x.example", b"Message-ID: <1@x>", body=b"line one\r\nline two\r\n")
    lf = crlf.replace(b"\r\n", b"\n")
    assert dedup_key(parse(crlf), crlf) == dedup_key(parse(lf), lf)


def test_html_to_text_keeps_blocks_and_cells_apart() -> None:
    html = (
        "<table><tr><td>Requester</td><td>Alice</td></tr></table><h5>Title</h5>after"
        '<div>Done.</div><pre class="moz-signature">-- \nBob</pre><ul><li>one</li></ul>'
        "<p>a</p><p>b</p>"
    )
    assert html_to_text(html) == "Requester Alice\nTitle\nafter\nDone.\n-- \nBob\none\na\nb"


def test_a_display_name_that_looks_like_an_address_is_not_the_sender() -> None:
    """Mail clients and DMARC read "alice@x <mallory@y>" as mallory's mailbox; splitting it
    in two made alice the sender, a forged requester that passes the tag check."""

    def sender(from_: str) -> str:
        raw = f"From: {from_}\r\nTo: support@desk.example\r\nSubject: s\r\n\r\nbody\r\n"
        mail = parse(raw.encode())
        return mail.sender.email if mail.sender else ""

    forged = "alice@customer.example <mallory@elsewhere.example>"
    assert sender(forged) == "mallory@elsewhere.example"
    assert sender('"Smith, J" <j@x.example>') == "j@x.example"
    assert sender("a@x.example, b@y.example") == "a@x.example"  # a real list: the first
    assert sender("alice@customer.example mallory@elsewhere.example") == ""
