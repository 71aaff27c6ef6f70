"""The outbox's lanes in the worker process (adapters/sendhost): what the daemon commits is
sent from there, nothing is sent when the daemon may not send, and a dead worker neither
hangs the daemon nor loses a row."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

from supportd.adapters.db import schema
from supportd.adapters.db.engine import make_engine, outbox_database
from supportd.adapters.parsepool import ParsePool
from supportd.adapters.sendhost import SenderSpec
from supportd.adapters.smtp import SmtpTarget
from supportd.adapters.teammail import TeamComposer
from tests.conftest import SMTP_PORT
from tests.support.mail import make_mail
from tests.support.outbox import queue_rows
from tests.support.smtp import Sink
from tests.unit.test_compose import composer


def _pool(engine: Engine) -> ParsePool:
    target = SmtpTarget("127.0.0.1", SMTP_PORT["port"], "none", "", "", 10.0, "", True)
    spec = SenderSpec(
        outbox_database(engine),
        target,
        give_up_after=3600,
        batch_size=10,
        connections=2,
        team_mail=TeamComposer(composer(), secret="s", forward_limit=1000).spec(),
    )
    return ParsePool(1, sender=spec)


def _not_here() -> Callable[[], None]:
    raise AssertionError("the daemon's own sender was used, not the worker's")


def _statuses(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT status, count(*) FROM outbox GROUP BY status"))
        return {status: n for status, n in rows}


def _migrated(url: str) -> Engine:
    engine = make_engine(url)
    schema.upgrade(engine)
    return engine


def test_the_worker_sends_what_the_daemon_commits(db_url: str, smtp: Sink) -> None:
    engine = _migrated(db_url)
    pool = _pool(engine)
    try:
        with pool.background(lambda: True, _not_here) as wake:  # type: ignore[arg-type]
            for _ in range(3):  # three "batches", each committed and announced
                queue_rows(engine, 10, datetime.now(UTC))
                wake()
        # Leaving the block waits for the worker to have sent everything due.
        assert _statuses(engine) == {"sent": 30}
        bodies = sorted(r.raw.split(b"\r\n\r\n", 1)[1] for r in smtp.received)
        assert len(bodies) == 30  # each row once
    finally:
        pool.close()
        engine.dispose()


def test_the_worker_reports_how_far_behind_its_lanes_are(db_url: str, smtp: Sink) -> None:
    """With each parsed batch the worker says how far behind the queue its lanes are (the
    age of the row they took last): lanes busy with mail queued a minute ago make the
    daemon's ParseShare give the worker fewer batches; idle lanes do not."""
    engine = _migrated(db_url)
    pool = _pool(engine)
    release = threading.Event()
    smtp.on_message = lambda item: release.wait(30)  # the lanes wait for their 250s
    raws = [make_mail(message_id=f"<l{n}@x>") for n in range(3)]
    try:
        with pool.background(lambda: True, _not_here) as wake:  # type: ignore[arg-type]
            queue_rows(engine, 4, datetime.now(UTC) - timedelta(minutes=1))
            wake()
            deadline = time.monotonic() + 30
            while not smtp.attempts and time.monotonic() < deadline:
                time.sleep(0.01)  # a lane has taken its row and waits in DATA
            job = pool.parse_async(raws)
            assert len(job()) == 3
            assert job.behind()
            release.set()
        assert _statuses(engine) == {"sent": 4}
        job = pool.parse_async(raws)
        assert len(job()) == 3
        assert not job.behind()  # nothing left to send
    finally:
        release.set()
        pool.close()
        engine.dispose()


def test_nothing_is_sent_while_the_daemon_may_not_send(sqlite_url: str, smtp: Sink) -> None:
    engine = _migrated(sqlite_url)
    pool = _pool(engine)
    try:
        with pool.background(lambda: False, _not_here) as wake:  # type: ignore[arg-type]
            queue_rows(engine, 5, datetime.now(UTC))
            wake()
        assert _statuses(engine) == {"pending": 5}
        assert smtp.received == []
    finally:
        pool.close()
        engine.dispose()


def test_a_killed_worker_neither_hangs_the_drain_nor_loses_a_row(
    sqlite_url: str, smtp: Sink
) -> None:
    engine = _migrated(sqlite_url)
    pool = _pool(engine)
    delivered = []

    def slow(item: object) -> None:  # keep the backlog in flight while the worker dies
        delivered.append(item)
        if len(delivered) == 3:
            os.kill(worker, signal.SIGKILL)

    try:
        assert pool._alive()
        [worker] = pool.worker_pids()
        smtp.on_message = slow
        with pool.background(lambda: True, _not_here) as wake:  # type: ignore[arg-type]
            queue_rows(engine, 40, datetime.now(UTC) - timedelta(seconds=1))
            wake()
        states = _statuses(engine)
        assert sum(states.values()) == 40 and states.get("pending", 0) > 0
        # What the worker left is still queued; a sender that lives sends it.
        with pool.background(lambda: True, _not_here) as wake:  # type: ignore[arg-type]
            wake()
        assert _statuses(engine) == {"sent": 40}
        assert len(smtp.received) >= 40  # at most the rows in flight at the kill repeat
        assert len(smtp.received) <= 40 + 2
    finally:
        pool.close()
        engine.dispose()
