"""A backlog's batches commit without waiting for the disk (SQLite); nothing leaves the
server before a durable commit covers them (invariant 1 under power loss as well as kill
-9)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from supportd.adapters.db import schema
from supportd.bootstrap import Desk, build_desk, build_engine
from supportd.config import settings_from_dict
from supportd.domain.mail import FetchedMail
from supportd.errors import MailboxError
from supportd.services.ports import ArchiveJournal
from tests.conftest import desk_config
from tests.support.desk import OPEN_DESKS
from tests.support.mail import make_mail

BATCH = 2


class Backlog:
    """A mailbox of `count` mails served in batches of BATCH; archive() is logged."""

    def __init__(
        self, count: int, log: list[Any], stop_after: int = 0, fail_after: int = 0
    ) -> None:
        self.mails = [
            FetchedMail(
                uid,
                datetime(2026, 12, 7, 6, 0, tzinfo=UTC),
                make_mail(sender=f"c{uid}@customer.example", message_id=f"<m{uid}@c.example>"),
            )
            for uid in range(1, count + 1)
        ]
        self.log = log
        self.stop = threading.Event()
        self.stop_after = stop_after
        self.fail_after = fail_after  # the first fetch fails after this many batches

    key = "INBOX"

    def open(self) -> int:
        return 7

    def uids_after(self, last_uid: int) -> Sequence[int]:
        return [m.uid for m in self.mails if m.uid > last_uid]

    def fetch(self, uids: Sequence[int]) -> Iterator[list[FetchedMail]]:
        wanted = [m for m in self.mails if m.uid in set(uids)]
        for start in range(0, len(wanted), BATCH):
            if self.fail_after and start // BATCH >= self.fail_after:
                self.fail_after = 0
                raise MailboxError("IMAP connection lost")
            if self.stop_after and start // BATCH >= self.stop_after:
                self.stop.set()  # the drain stops after the batch it holds
            yield wanted[start : start + BATCH]

    def archive(self, up_to_uid: int, journal: ArchiveJournal) -> int:
        self.log.append(("archive", up_to_uid))
        return up_to_uid

    def wait(self, timeout: float, stop: threading.Event) -> None:
        pass

    def close(self) -> None:
        pass


def _desk(db_url: str, log: list[Any]) -> Desk:
    settings = settings_from_dict(desk_config(db_url, None, 1, imap__parse_workers=0))
    engine = build_engine(settings)
    schema.upgrade(engine)
    desk = build_desk(settings, engine=engine)
    OPEN_DESKS.append(desk)
    real = desk.ingestor.uow

    @contextmanager
    def recording(durable: bool = True) -> Iterator[Any]:
        with real(durable=durable) as store:
            commit = store.commit

            def logged() -> None:
                level = ""
                if store.conn.dialect.name == "postgresql":  # the level this commit runs with
                    on = store.conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
                    level = "FULL" if on else "NORMAL"
                commit()
                if store.conn.dialect.name == "sqlite":  # the level this commit ran with
                    raw = store.conn.connection.dbapi_connection
                    level = {1: "NORMAL", 2: "FULL"}[
                        raw.execute("PRAGMA synchronous").fetchone()[0]
                    ]
                log.append(("commit", durable, level))

            store.commit = logged
            yield store

    desk.ingestor.uow = recording
    return desk


def _commits_before_archive(log: list[Any]) -> list[bool]:
    end = next(i for i, entry in enumerate(log) if entry[0] == "archive")
    return [entry[1] for entry in log[:end] if entry[0] == "commit"]


def test_a_backlog_commits_relaxed_and_ends_durable_before_the_archive(db_url: str) -> None:
    log: list[Any] = []
    desk = _desk(db_url, log)
    source = Backlog(7, log)
    stats = desk.ingestor.drain(source)
    assert stats.stored == 7
    assert log[-1] == ("archive", 7)
    commits = _commits_before_archive(log)
    ingest = [entry for entry in log if entry[0] == "commit"][-4:]  # 4 batches of <= 2
    assert [durable for _, durable, _ in ingest] == [False, False, False, True]
    assert commits[-1] is True  # the archive comes after a durable commit
    # The relaxed commits really ran so on SQLite (synchronous=NORMAL), and the next
    # transaction is durable again; PostgreSQL's stay durable (synchronous_commit on).
    if desk.settings.database.url.startswith("sqlite"):
        assert [level for _, _, level in ingest] == ["NORMAL", "NORMAL", "NORMAL", "FULL"]
        with desk.engine.connect() as conn:
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 2
    else:
        assert [level for _, _, level in ingest] == ["FULL"] * 4


def test_a_drain_stopped_early_makes_its_batches_durable_before_the_archive(
    db_url: str,
) -> None:
    log: list[Any] = []
    desk = _desk(db_url, log)
    source = Backlog(9, log, stop_after=2)
    stats = desk.ingestor.drain(source, stop=source.stop)
    assert 0 < stats.stored < 9
    archived_up_to = log[-1][1]
    assert archived_up_to == stats.stored  # only what was stored is moved
    commits = _commits_before_archive(log)
    assert False in commits  # the backlog's batches were relaxed
    assert commits[-1] is True


class _Job:
    """A batch 'parsed' elsewhere, already done."""

    def __init__(self, parsed: list[Any]) -> None:
        self.parsed = parsed

    def __call__(self) -> list[Any]:
        return self.parsed

    def done(self) -> bool:
        return True

    def behind(self) -> bool:
        return False


def test_the_worker_gets_its_batches_ahead_of_the_one_being_stored(db_url: str) -> None:
    """The worker parses between its lanes' sends: it is handed parse_ahead batches more
    than the one being stored (two on SQLite), so one store's time is not all it has
    (issue 9). Every batch is stored once, in order, and the last one durably."""
    log: list[Any] = []
    desk = _desk(db_url, log)
    ingestor = desk.ingestor
    parse_many = ingestor.parse_many

    def parse_async(raws: Sequence[bytes]) -> _Job:
        log.append(("parse", len([e for e in log if e[0] == "parse"])))
        return _Job(parse_many(raws))

    ingest_batch = ingestor.ingest_batch

    def stored(
        mailbox: str, uidvalidity: int, batch: list[FetchedMail], *args: Any, **kw: Any
    ) -> Any:
        log.append(("store", batch[0].uid))
        return ingest_batch(mailbox, uidvalidity, batch, *args, **kw)

    ingestor.parse_async = parse_async
    ingestor.ingest_batch = stored  # type: ignore[method-assign]
    stats = ingestor.drain(Backlog(11, log))  # 6 batches of <= 2
    assert stats.stored == 11
    order = [entry for entry in log if entry[0] in ("parse", "store")]
    ahead = ingestor.parse_ahead
    assert ahead == (1 if desk.engine.dialect.name == "postgresql" else 2)
    for k in range(6):
        at = order.index(("store", 2 * k + 1))
        handed = len([e for e in order[:at] if e[0] == "parse"])
        assert handed == min(6, k + 1 + ahead)  # batch k and the ones ahead of it
    assert [e[1] for e in order if e[0] == "store"] == [1, 3, 5, 7, 9, 11]
    ingest = [entry for entry in log if entry[0] == "commit"][-6:]
    assert [durable for _, durable, _ in ingest] == [False] * 5 + [True]


def test_after_a_drain_failed_midway_the_next_makes_it_durable_before_the_archive(
    db_url: str,
) -> None:
    """Batches committed relaxed, then the FETCH fails: nothing is archived. The next
    drain finds no new mail, and still commits durably before it moves anything."""
    log: list[Any] = []
    desk = _desk(db_url, log)
    source = Backlog(14, log, fail_after=5)
    with pytest.raises(MailboxError):
        desk.ingestor.drain(source)
    assert not [entry for entry in log if entry[0] == "archive"]
    relaxed = [entry for entry in log if entry[0] == "commit"]
    assert relaxed and all(durable is False for _, durable, _ in relaxed[-2:])
    with desk.ingestor.uow() as store:
        cursor = store.get_cursor(source.key)
    assert cursor is not None and cursor.last_uid >= 2 * BATCH
    source.mails = source.mails[: cursor.last_uid]  # the next drain finds nothing new
    log.clear()
    stats = desk.ingestor.drain(source)
    assert stats.stored == 0
    assert log[-1] == ("archive", cursor.last_uid)
    assert _commits_before_archive(log) == [True]
