"""How a backlog flows through the daemon (issue 9): the parsing it shares with its worker,
and the FETCH of the next batch while the one before is stored."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from supportd.errors import MailboxError
from supportd.services.ingest import IngestStats, ParseShare, prefetched


def test_the_share_rises_while_the_worker_keeps_the_daemon_waiting() -> None:
    """Waits raise the daemon's share a step at a time, up to its cap; ready batches lower
    it to nothing; the batches it takes are spread out, never all of them."""
    share = ParseShare()
    assert [share.here() for _ in range(8)] == [False] * 8  # no waits: the worker parses all
    share.observed(waited=True)
    assert share.share == ParseShare.STEP
    for _ in range(20):
        share.observed(waited=True)
    assert share.share == ParseShare.MOST
    picks = [share.here() for _ in range(8)]
    assert picks.count(True) == 6
    assert all(not all(picks[i : i + 4]) for i in range(5))  # spread: the worker keeps some
    for _ in range(20):
        share.observed(waited=False)
    assert share.share == 0.0
    assert [share.here() for _ in range(8)] == [False] * 8


def test_prefetched_batches_arrive_in_order_one_ahead() -> None:
    """The next FETCH runs while the batch before is stored: one ahead, in order."""
    fetched: list[int] = []

    def batches() -> Iterator[int]:
        for n in range(5):
            fetched.append(n)
            yield n

    reader = prefetched(batches())
    assert next(reader) == 0
    deadline = time.monotonic() + 5
    while len(fetched) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert fetched == [0, 1]  # batch 1 fetched before it was asked for, batch 2 not yet
    assert list(reader) == [1, 2, 3, 4]


def test_a_fetch_error_is_raised_where_its_batch_would_have_been() -> None:
    def batches() -> Iterator[int]:
        yield 0
        yield 1
        raise MailboxError("IMAP connection lost")

    got: list[int] = []
    with pytest.raises(MailboxError, match="connection lost"):
        for batch in prefetched(batches()):
            got.append(batch)
    assert got == [0, 1]


def test_a_reader_that_stops_early_stops_the_fetching() -> None:
    """A stop (SIGTERM) mid-backlog: the fetch thread ends after its batch, and nothing
    touches the mailbox after the reader is gone."""
    fetched: list[int] = []

    def batches() -> Iterator[int]:
        for n in range(1000):
            fetched.append(n)
            yield n

    reader = prefetched(batches())
    assert next(reader) == 0
    reader.close()
    count = len(fetched)
    time.sleep(0.1)
    assert len(fetched) == count <= 3
    assert not [t for t in threading.enumerate() if t.name == "imap-fetch"]


def test_a_drains_statistics_stay_one_size() -> None:
    """Counts only: a list of every ticket opened grew with the backlog (1.3 MB at 50,000
    mails, issue 9's memory target is flat from 10,000 to 50,000)."""
    total = IngestStats()
    for _ in range(1000):
        total.add(IngestStats(stored=100, new_tickets=70, batches=1))
    assert (total.stored, total.new_tickets, total.batches) == (100_000, 70_000, 1000)
    assert all(isinstance(value, int) for value in vars(total).values())
