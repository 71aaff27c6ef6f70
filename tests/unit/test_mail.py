"""Domain values of an incoming message: the body digest behind every delivery's identity."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from supportd.domain.mail import body_digest, fold_whitespace


def test_crlf_and_lf_copies_of_a_mail_agree() -> None:
    lf = b"Subject: x\n\nHello  there,\n\nthanks.\n"
    assert body_digest(lf) == body_digest(lf.replace(b"\n", b"\r\n"))
    assert body_digest(lf) == body_digest(lf.replace(b"  ", b" \t ").replace(b",", b",\x0b"))
    assert body_digest(lf) != body_digest(lf.replace(b"there", b"here"))
    assert body_digest(lf) != body_digest(lf.replace(b"Hello  there", b"Hellothere"))


WHITESPACE_HEAVY = st.lists(
    st.sampled_from([b" ", b"  ", b"\t", b"\r\n", b"\n", b"\x0b", b"\x0c", b"\r", b"a", b"b"])
    | st.binary(max_size=8),
    max_size=60,
).map(b"".join)


@settings(max_examples=500, deadline=None)
@given(WHITESPACE_HEAVY)
def test_folding_is_split_and_join_exactly(body: bytes) -> None:
    """Every stored dedup key holds this digest: the fold must stay exactly the one
    the keys were made with, `b" ".join(body.split())`."""
    assert fold_whitespace(body) == b" ".join(body.split())


def test_the_digest_of_a_body_never_changes() -> None:
    raw = b"Subject: x\r\n\r\n  Hello \t there,\r\n\r\n\x0bthanks.  \r\n"
    assert body_digest(raw) == hashlib.sha256(b"Hello there, thanks.").hexdigest()
