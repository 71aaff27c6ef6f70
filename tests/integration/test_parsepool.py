"""The parse worker on the second core, and what happens when it dies."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Sequence

import pytest
from sqlalchemy import select

from supportd.adapters.db.models import MessageRow
from supportd.adapters.parsepool import ParseFailure, ParsePool, WorkerGone, parse_serial
from supportd.adapters.process import start_worker
from supportd.domain.mail import ParsedMail
from supportd.errors import ConfigError
from supportd.services.ingest import ParseJob
from tests.support.desk import append, make_desk, run_once
from tests.support.dovecot import Account, Dovecot
from tests.support.mail import make_mail


def test_pool_parses_like_the_serial_parser() -> None:
    raws = [make_mail(message_id=f"<p{n}@x>", subject=f"s{n}") for n in range(20)]
    pool = ParsePool(1)
    try:
        parsed = pool.parse_async(raws)()
    finally:
        pool.close()
    assert parsed == parse_serial(raws)
    assert all(isinstance(p, ParsedMail) for p in parsed)


def test_a_worker_started_early_is_the_one_that_parses() -> None:
    early = start_worker()  # what `supportd run` does before it imports the desk
    raws = [make_mail(message_id=f"<e{n}@x>") for n in range(3)]
    pool = ParsePool(1, started=early)
    try:
        assert len(pool.parse_async(raws)()) == 3
        assert pool.worker_pids() == [early.process.pid]
    finally:
        pool.close()
    assert early.process.returncode is not None  # reaped


def test_a_worker_started_early_and_never_used_ends_with_the_pool() -> None:
    early = start_worker()
    pool = ParsePool(1, started=early)
    pool.close()
    assert early.process.returncode is not None
    assert early.sock.fileno() == -1


def test_a_dead_worker_costs_time_not_mail() -> None:
    raws = [make_mail(message_id=f"<d{n}@x>") for n in range(5)]
    pool = ParsePool(1)
    try:
        assert len(pool.parse_async(raws)()) == 5
        for pid in pool.worker_pids():  # the worker dies between batches
            os.kill(pid, signal.SIGKILL)
        parsed = pool.parse_async(raws)()
        assert [p.message_id for p in parsed if isinstance(p, ParsedMail)] == [
            f"<d{n}@x>" for n in range(5)
        ]
        assert len(pool.parse_async(raws)()) == 5  # and a new worker takes over
    finally:
        pool.close()


def test_parse_failures_are_returned_not_raised(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from supportd.adapters import mailparse

    def broken(raw: bytes) -> ParsedMail:
        raise LookupError("codec exploded")

    monkeypatch.setattr(mailparse, "parse", broken)
    [result] = parse_serial([b"x"])
    assert isinstance(result, ParseFailure) and "codec exploded" in str(result)


class _Watched:
    """The worker's jobs, seen from the daemon as keeping it waiting, as coming back with
    the lanes behind the queue, or as keeping up."""

    def __init__(self, parse_async: Callable[[Sequence[bytes]], ParseJob], seen: str) -> None:
        self.parse_async = parse_async
        self.seen = seen
        self.sent: list[int] = []  # the batch sizes handed to the worker

    def __call__(self, raws: Sequence[bytes]) -> ParseJob:
        self.sent.append(len(raws))
        job = self.parse_async(raws)
        seen = self.seen

        class Seen:
            def __call__(self) -> list[ParsedMail | BaseException]:
                return job()

            def done(self) -> bool:
                return seen != "waits"  # as if it had (calling it still waits)

            def behind(self) -> bool:
                return seen == "lanes behind"

        return Seen()


@pytest.mark.parametrize("seen", ["waits", "lanes behind", "keeps up"])
def test_the_daemon_parses_a_share_of_the_batches_when_the_worker_is_behind(
    sqlite_url: str, dovecot: Dovecot, account: Account, seen: str
) -> None:
    """A worker that keeps the daemon waiting, or whose outbox lanes fall behind the queue,
    gets fewer batches: the daemon parses a rising share itself, after storing the batch
    before. A worker that keeps up gets them all. Either way every mail is stored once, in
    order."""
    mails = [make_mail(message_id=f"<p{n}@x.example>", subject=f"Q{n}") for n in range(60)]
    append(dovecot, account, *mails)
    desk = make_desk(sqlite_url, dovecot, account, imap__batch_size=3)
    assert desk.ingestor.parse_async is not None
    watched = _Watched(desk.ingestor.parse_async, seen)
    desk.ingestor.parse_async = watched
    here: list[int] = []
    parse_many = desk.ingestor.parse_many

    def parse_here(raws: Sequence[bytes]) -> list[ParsedMail | BaseException]:
        here.append(len(raws))
        return parse_many(raws)

    desk.ingestor.parse_many = parse_here
    stats = run_once(desk)
    assert stats.stored == 60 and stats.quarantined == 0
    assert len(watched.sent) + len(here) == 20
    if seen != "keeps up":  # the share climbs to its cap; the worker still gets some
        assert 5 <= len(here) <= 12 and watched.sent
    else:
        assert here == []
    with desk.engine.connect() as conn:
        ids = conn.execute(
            select(MessageRow.message_id)
            .where(MessageRow.direction == "in")
            .order_by(MessageRow.id)
        ).scalars()
        assert list(ids) == [f"<p{n}@x.example>" for n in range(60)]


def test_a_worker_that_cannot_parse_never_leaves_the_daemon_waiting() -> None:
    """An error in the worker's parsing (here: its model file is missing) ends the worker;
    the daemon sees the end of its socket and parses the batch itself, where the error
    is raised with its name instead of a wait without end."""
    pool = ParsePool(1, model="/nonexistent/classifier.json")
    outcome: list[BaseException | object] = []

    def parse() -> None:
        try:
            outcome.append(pool.parse_async([make_mail(message_id="<m@x>")])())
        except BaseException as exc:  # what the daemon would see
            outcome.append(exc)

    try:
        thread = threading.Thread(target=parse, daemon=True)
        thread.start()
        thread.join(30)
        assert not thread.is_alive(), "the daemon is still waiting for the worker"
        [result] = outcome
        assert isinstance(result, ConfigError) and "classification.model" in str(result)
    finally:
        pool.close()


def test_the_worker_waits_for_the_daemon_when_systemd_signals_the_whole_group() -> None:
    """systemd's stop sends SIGTERM to every process of the service: the worker ignores it
    (its lanes would die mid-mail) and ends when the daemon closes its end."""
    pool = ParsePool(1)
    try:
        assert pool._alive()
        [pid] = pool.worker_pids()
        os.kill(pid, signal.SIGTERM)
        time.sleep(0.5)
        assert pool.worker_pids() == [pid] and len(pool.parse_async([make_mail()])()) == 1
    finally:
        pool.close()
    assert pool.worker_pids() == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_dead_worker_is_replaced_once_and_its_successor_kept() -> None:
    """Batches are parsed ahead: when a worker dies with two of them in hand, each is
    parsed in-process, and the worker started meanwhile for the next batch keeps
    working (killing it too would start and kill one worker per batch)."""
    pool = ParsePool(1)
    try:
        raws = [make_mail(message_id=f"<d{n}@x>") for n in range(7)]
        batches = [raws[:3], raws[3:6], raws[6:]]
        assert pool.parse_async(raws[:1])() == parse_serial(raws[:1])  # the worker is up
        [dead] = pool._procs
        os.kill(dead.pid, signal.SIGSTOP)  # it cannot answer the next two: they die with it
        first, second = pool.parse_async(batches[0]), pool.parse_async(batches[1])
        dead.process.kill()
        assert dead.wait(lambda: False, timeout=10)  # True: it died
        third = pool.parse_async(batches[2])  # a new worker, started for it
        [successor] = pool._procs
        assert successor is not dead
        assert first.future is not None and isinstance(first.future.exception(), WorkerGone)
        assert first() == parse_serial(batches[0])  # in-process
        assert second() == parse_serial(batches[1])
        assert pool._procs == [successor] and successor.process.poll() is None
        assert third() == parse_serial(batches[2])
        assert not successor.dead and pool.worker_pids() == [successor.pid]
    finally:
        pool.close()
