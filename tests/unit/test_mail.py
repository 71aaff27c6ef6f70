"""Domain values of an incoming message: the body digest behind every delivery's identity."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from supportd.domain.mail import body_digest, fold_whitespace

# Bytes that bytes.split() treats as whitespace, some it does not (str.split() would:
# \x1c-\x1f, \x85, \xa0), words, and the header/body separators body_digest looks for.
_PIECES = st.sampled_from(
    [b" ", b"  ", b"\t", b"\n", b"\r\n", b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x1f", b"\x85",
     b"\xa0", b"\x00", b"word", b"=20", b"x", b"\r\n\r\n", b"\n\n", b" " * 33]
)  # fmt: skip
_BYTES = st.one_of(st.lists(_PIECES, max_size=200).map(b"".join), st.binary(max_size=300))


@given(_BYTES)
def test_folding_is_split_and_join(data: bytes) -> None:
    """fold_whitespace replaced b" ".join(data.split()): every stored delivery's key was made
    with the old one, so a second delivery of the same mail must fold the same way."""
    assert fold_whitespace(data) == b" ".join(data.split())


@given(_BYTES, _BYTES)
def test_body_digest_is_the_hash_of_the_folded_body(head: bytes, body: bytes) -> None:
    raw = head.replace(b"\n\n", b"\n").replace(b"\r\n\r\n", b"\r\n") + b"\r\n\r\n" + body
    end = raw.find(b"\r\n\r\n")
    lf_end = raw.find(b"\n\n")
    start = lf_end + 2 if 0 <= lf_end < end else end + 4
    expected = hashlib.sha256(b" ".join(raw[start:].split())).hexdigest()
    assert body_digest(raw) == expected


def test_crlf_and_lf_copies_of_a_mail_agree() -> None:
    lf = b"Subject: x\n\nHello  there,\n\nthanks.\n"
    assert body_digest(lf) == body_digest(lf.replace(b"\n", b"\r\n"))
    assert body_digest(lf) != body_digest(lf.replace(b"there", b"here"))
