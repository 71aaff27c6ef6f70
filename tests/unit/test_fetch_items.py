"""adapters/imap reads UID FETCH responses itself where they have the usual shape, and
gives imapclient's parser everything else: both must find the same mail and times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from imapclient.response_parser import parse_fetch_response

from supportd.adapters.imap import ImapSource, _quick_items, fetch_items, fetch_sizes, internaldate
from supportd.config import settings_from_dict
from supportd.errors import MailboxError
from tests.conftest import desk_config

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def imap_date(when: datetime) -> bytes:
    """RFC 3501's date-time: day padded with a space, the sender's own offset."""
    offset = when.utcoffset() or timedelta()
    sign = "-" if offset < timedelta() else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return (
        f"{when.day:2d}-{MONTHS[when.month - 1]}-{when.year:04d} "
        f"{when:%H:%M:%S} {sign}{minutes // 60:02d}{minutes % 60:02d}"
    ).encode()


def response(uid: int, seq: int, body: bytes, date: bytes, order: str) -> list[Any]:
    """imaplib's data for one message: (head, literal) and the rest of the line."""
    uid_item, date_item = b"UID %d" % uid, b'INTERNALDATE "' + date + b'"'
    if order == "before":
        head, tail = b"%d (%s %s BODY[] {%d}" % (seq, uid_item, date_item, len(body)), b")"
    elif order == "after":
        head, tail = (
            b"%d (BODY[] {%d}" % (seq, len(body)),
            b" " + date_item + b" " + uid_item + b")",
        )
    else:
        head, tail = b"%d (%s BODY[] {%d}" % (seq, date_item, len(body)), b" " + uid_item + b")"
    return [(head, body), tail]


def by_imapclient(data: list[Any]) -> dict[int, tuple[bytes, datetime | None]]:
    return {
        uid: (item[b"BODY[]"], item.get(b"INTERNALDATE"))
        for uid, item in parse_fetch_response(data, False, True).items()
    }


ZONES = st.integers(-12 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
WHEN = st.builds(
    lambda naive, zone: naive.replace(tzinfo=zone),
    st.datetimes(datetime(1990, 1, 1), datetime(2090, 1, 1)).map(
        lambda d: d.replace(microsecond=0)
    ),
    ZONES,
)
BODY = st.binary(max_size=300) | st.just(b'Subject: x\r\n\r\n"UID 9" BODY[] {3}\r\n)')


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(BODY, WHEN, st.sampled_from(["before", "after", "split"])), max_size=6))
def test_the_quick_reading_agrees_with_imapclient(
    mails: list[tuple[bytes, datetime, str]],
) -> None:
    data: list[Any] = []
    for n, (body, when, order) in enumerate(mails, start=1):
        data += response(100 + n, n, body, imap_date(when), order)
    quick = _quick_items(data)
    assert quick is not None  # every shape above is the usual one
    assert quick == by_imapclient(data)
    assert {uid: when for uid, (_, when) in quick.items()} == {
        100 + n: when for n, (_, when, _) in enumerate(mails, start=1)
    }


def test_other_shapes_go_to_imapclient() -> None:
    body = b"Subject: hi\r\n\r\nHello\r\n"
    date = b" 7-Dec-2026 06:00:00 +0600"
    usual = response(5, 1, body, date, "before")
    expected = {5: (body, datetime(2026, 12, 7, 0, 0, tzinfo=UTC))}
    others = {
        "an unsolicited flag change of another message": [*usual, b"3 (FLAGS (\\Seen))"],
        "flags with the body": [(usual[0][0].replace(b"UID 5", b"UID 5 FLAGS ()"), body), b")"],
        "a date that is not one": response(5, 1, body, b"31-Feb-2026 06:00:00 +0000", "before"),
    }
    for why, data in others.items():
        assert _quick_items(data) is None, why
        found = fetch_items(data)
        assert found[5][0] == body, why
        if why != "a date that is not one":
            assert found[5] == expected[5], why
    assert fetch_items(usual) == expected
    assert fetch_items(usual)[5][1] == datetime(2026, 12, 7, 0, 0, tzinfo=UTC)


def test_a_literal_of_the_wrong_length_is_not_trusted() -> None:
    data = response(5, 1, b"12345", b"07-Dec-2026 06:00:00 +0000", "before")
    data[0] = (data[0][0].replace(b"{5}", b"{4}"), data[0][1])
    assert _quick_items(data) is None


def test_internaldate_reads_rfc_3501_times() -> None:
    assert internaldate(b" 7-Dec-2026 06:00:00 +0600") == datetime(
        2026, 12, 7, 6, 0, tzinfo=timezone(timedelta(hours=6))
    )
    assert internaldate(b"17-Jul-1996 02:44:25 -0730") == datetime(
        1996, 7, 17, 2, 44, 25, tzinfo=timezone(-timedelta(hours=7, minutes=30))
    )
    for bad in (b"", b"7-Foo-2026 06:00:00 +0000", b"07-Dec-2026 25:00:00 +0000", b"07-Dec-2026"):
        assert internaldate(bad) is None, bad


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 2**32 - 1), st.integers(0, 10**9), st.booleans()),
        max_size=20,
        unique_by=lambda t: t[0],
    )
)
def test_sizes_are_read_as_imapclient_reads_them(rows: list[tuple[int, int, bool]]) -> None:
    data = [
        b"%d (UID %d RFC822.SIZE %d)" % (n, uid, size)
        if uid_first
        else b"%d (RFC822.SIZE %d UID %d)" % (n, size, uid)
        for n, (uid, size, uid_first) in enumerate(rows, start=1)
    ]
    expected = {uid: size for uid, size, _ in rows}
    assert fetch_sizes(data) == expected
    by_parser = parse_fetch_response(data, False, True)
    assert {uid: item[b"RFC822.SIZE"] for uid, item in by_parser.items()} == expected


def test_sizes_of_another_shape_go_to_imapclient() -> None:
    data = [b"1 (UID 7 RFC822.SIZE 120)", b"2 (FLAGS (\\Seen) UID 8 RFC822.SIZE 99)"]
    assert fetch_sizes(data) == {7: 120, 8: 99}


class _Imaplib:
    """What ImapSource asks of imaplib, answering every UID FETCH with `data`."""

    def __init__(self, data: list[Any]) -> None:
        self.data = data

    def uid(self, command: str, *args: str) -> tuple[str, list[Any]]:
        assert command == "FETCH"
        return "OK", self.data


class _Client:
    def __init__(self, data: list[Any]) -> None:
        self._imap = _Imaplib(data)

    def logout(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


def test_a_response_no_parser_can_read_is_a_failed_fetch() -> None:
    """A MailboxError (the daemon reconnects and tries again), not an exception that
    ends the daemon."""
    source = ImapSource(settings_from_dict(desk_config("sqlite://", None, 1)).imap)
    source.client = _Client([b"1 (UID 5 BODY[] {3}"])  # type: ignore[assignment]
    with pytest.raises(MailboxError, match="FETCH UIDs 5-5"):
        source._fetch_batch([5])
    source.client = _Client([b"1 (UID 5 RFC822.SIZE)"])  # type: ignore[assignment]
    with pytest.raises(MailboxError, match=r"FETCH RFC822\.SIZE"):
        list(source._plan([5]))
