"""Domain values of an incoming message: the body digest behind every delivery's identity."""

from __future__ import annotations

from supportd.domain.mail import body_digest


def test_crlf_and_lf_copies_of_a_mail_agree() -> None:
    lf = b"Subject: x\n\nHello  there,\n\nthanks.\n"
    assert body_digest(lf) == body_digest(lf.replace(b"\n", b"\r\n"))
    assert body_digest(lf) == body_digest(lf.replace(b"  ", b" \t ").replace(b",", b",\x0b"))
    assert body_digest(lf) != body_digest(lf.replace(b"there", b"here"))
    assert body_digest(lf) != body_digest(lf.replace(b"Hello  there", b"Hellothere"))
