"""How the daemon and its worker share the parsing of a backlog (issue 9)."""

from __future__ import annotations

from supportd.services.ingest import ParseShare


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
