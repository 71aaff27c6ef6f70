"""The outbox store on the driver's own connection agrees with the SQLAlchemy schema: rows
written by the ingest side (SQLAlchemy) are read, marked and compared in the same formats,
on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select, text

from supportd.adapters.db import schema, tables
from supportd.adapters.db.engine import make_engine, outbox_database
from supportd.adapters.db.models import OutboxItem
from supportd.adapters.db.outbox import OutboxConnections
from supportd.errors import ConfigError
from supportd.services.outbox import DueMail, OutboxSender
from tests.support.outbox import queue_rows as _queue

T0 = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)


def _row(engine, row_id: int):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(OutboxItem.__table__).where(OutboxItem.id == row_id)).one()


@contextmanager
def _outbox(url: str) -> Iterator[tuple[Engine, OutboxConnections]]:
    """A migrated database and the sender's connections to it, closed afterwards."""
    engine = make_engine(url)
    schema.upgrade(engine)
    connections = OutboxConnections(outbox_database(engine))
    try:
        yield engine, connections
    finally:
        connections.close()
        engine.dispose()


def test_rows_round_trip_between_sqlalchemy_and_the_driver(db_url: str) -> None:
    with _outbox(db_url) as (engine, connections):
        ids = _queue(engine, 3, T0)
        with connections.transaction() as store:
            assert store.due(T0 - timedelta(microseconds=1), 10) == []  # not due yet
            due = store.due(T0, 10)
        assert [m.id for m in due] == ids
        assert due[0].recipients == ("a@example.com", "b@example.com")
        assert due[0].raw == b"Subject: x\r\n\r\nbody 0\r\n"
        assert due[0].created_at == T0  # the same instant, aware UTC

        with connections.transaction() as store:
            assert [m.id for m in store.due(T0, 10, after=ids[0])] == ids[1:]
            store.mark_sent(ids[0], T0 + timedelta(seconds=1))
            store.mark_retry(ids[1], 1, T0 + timedelta(minutes=1), "421 try later")
            store.mark_failed(ids[2], 1, "550 no such user", T0)
            store.commit()

        with connections.transaction() as store:
            store.settle(wait=True)  # SQLite: the sent mark was in the journal until now
        sent, waiting, failed = (_row(engine, i) for i in ids)
        assert sent.status == "sent" and sent.sent_at == T0 + timedelta(seconds=1)
        assert waiting.status == "pending" and waiting.attempts == 1
        assert waiting.next_attempt_at == T0 + timedelta(minutes=1)
        assert failed.status == "failed" and "550" in failed.last_error

        with connections.transaction() as store:  # the retry time compares as a time
            assert store.due(T0 + timedelta(seconds=59), 10) == []
            assert [m.id for m in store.due(T0 + timedelta(minutes=1), 10)] == [ids[1]]
            assert store.retry(ids[2], T0) and not store.retry(ids[0], T0)  # sent stays sent
            store.commit()
        assert _row(engine, ids[2]).status == "pending"


def test_a_transaction_left_without_commit_changes_nothing(db_url: str) -> None:
    with _outbox(db_url) as (engine, connections):
        [row_id] = _queue(engine, 1, T0)
        with connections.transaction() as store:
            store.mark_failed(row_id, 1, "550", T0)  # no commit: rolled back on exit
        with pytest.raises(RuntimeError), connections.transaction() as store:
            store.mark_failed(row_id, 1, "550", T0)
            raise RuntimeError("the lane died mid-row")
        assert _row(engine, row_id).status == "pending"


def test_sqlite_sent_marks_never_wait_for_the_ingest_write_lock(sqlite_url: str) -> None:
    with _outbox(sqlite_url) as (engine, connections):
        ids = _queue(engine, 20, T0)
        with engine.execution_options(writer=True).connect() as ingest:
            ingest.exec_driver_sql("SELECT 1")  # an ingest transaction: BEGIN IMMEDIATE
            started = time.monotonic()
            for row_id in ids:
                with connections.transaction() as store:
                    store.mark_sent(row_id, T0)
                    store.commit()
                    store.settle(wait=False)  # the lock is taken: the marks stay journaled
            assert time.monotonic() - started < 20  # not 20 lock timeouts of 30 s
            ingest.rollback()
        assert _row(engine, ids[0]).status == "pending"
        with connections.transaction() as store:
            assert store.due(T0, 100) == []  # journaled rows are not due again
            store.settle(wait=False)  # the lock is free and enough marks gathered
        assert {_row(engine, i).status for i in ids} == {"sent"}
        assert connections.journal().entries() == []  # type: ignore[union-attr]


def test_sqlite_marks_left_in_the_journal_by_a_crash_are_applied_first(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    schema.upgrade(engine)
    ids = _queue(engine, 3, T0)
    crashed = OutboxConnections(outbox_database(engine))
    with crashed.transaction() as store:
        store.mark_sent(ids[0], T0)  # the process dies here: the table never hears of it
    crashed.close()
    successor = OutboxConnections(outbox_database(engine))
    try:
        with successor.transaction() as store:
            assert [m.id for m in store.due(T0, 10)] == ids[1:]
            store.settle(wait=True)
        assert _row(engine, ids[0]).status == "sent"
        assert _row(engine, ids[1]).status == "pending"
    finally:
        successor.close()
        engine.dispose()


def test_postgresql_claims_skip_a_row_another_sender_holds(pg_url: str) -> None:
    with _outbox(pg_url) as (engine, connections):
        ids = _queue(engine, 2, T0)
        with connections.transaction() as first, connections.transaction() as second:
            assert first.row_locks
            [one], [two] = first.claim(T0), second.claim(T0)
            assert {one.id, two.id} == set(ids)  # the second skips the first's locked row


def test_an_in_memory_sqlite_database_is_refused_for_the_outbox() -> None:
    engine = make_engine("sqlite://")
    with pytest.raises(ConfigError, match=r"database\.url"):
        outbox_database(engine)


def test_postgresql_lane_claims_a_group_and_marks_it_at_commit(pg_url: str) -> None:
    with _outbox(pg_url) as (engine, connections):
        ids = _queue(engine, 5, T0)
        with connections.transaction() as lane, connections.transaction() as other:
            group = lane.claim(T0, 3)
            assert [m.id for m in group] == ids[:3]  # the claim order: due time, then id
            assert [m.id for m in other.claim(T0, 10)] == ids[3:]  # the group is held
            other.rollback()
            for item in group:
                lane.mark_sent(item.id, T0 + timedelta(seconds=item.id - ids[0]))
            # Journaled, each in its own commit: seen from outside before the group ends.
            with engine.connect() as conn:
                journaled = conn.execute(select(tables.outbox_sent.c.id)).scalars().all()
            assert sorted(journaled) == ids[:3]
            assert _row(engine, ids[0]).status == "pending"
            lane.commit()
        assert [_row(engine, i).status for i in ids] == ["sent"] * 3 + ["pending"] * 2
        assert _row(engine, ids[2]).sent_at == T0 + timedelta(seconds=2)  # each its own time
        with engine.connect() as conn:  # the lane forgot its entries once the table had them
            assert conn.execute(select(tables.outbox_sent)).all() == []


def test_postgresql_rows_journaled_before_a_crash_are_never_claimed_again(pg_url: str) -> None:
    with _outbox(pg_url) as (engine, connections):
        ids = _queue(engine, 3, T0)
        crashed = OutboxConnections(outbox_database(engine))
        with crashed.transaction() as lane:
            [first, _in_flight] = lane.claim(T0, 2)
            lane.mark_sent(first.id, T0)  # 250 for the first row; the process dies sending
            # the second: no commit, so the group's locks and table marks are gone
        crashed.close()
        with connections.transaction() as store:
            assert [m.id for m in store.claim(T0, 10)] == ids[1:]  # not the one sent
            store.rollback()
            assert [m.id for m in store.due(T0, 10)] == ids[1:]
            store.settle(wait=True)  # the next round applies what the crash left
        assert [_row(engine, i).status for i in ids] == ["sent", "pending", "pending"]
        with engine.connect() as conn:
            assert conn.execute(select(tables.outbox_sent)).all() == []


def test_postgresql_settle_leaves_a_live_lanes_rows_to_that_lane(pg_url: str) -> None:
    with _outbox(pg_url) as (engine, connections):
        [row_id] = _queue(engine, 1, T0)
        with connections.transaction() as lane:
            [item] = lane.claim(T0, 1)
            lane.mark_sent(item.id, T0)
            started = time.monotonic()
            with connections.transaction() as other:
                other.settle(wait=True)  # skips the locked row instead of waiting for it
            assert time.monotonic() - started < 5
            with engine.connect() as conn:  # its entry is kept: the row is not marked yet
                assert conn.execute(select(tables.outbox_sent.c.id)).scalars().all() == [row_id]
            lane.commit()
        assert _row(engine, row_id).status == "sent"


def test_postgresql_journal_survives_a_connection_dropped_while_pooled(pg_url: str) -> None:
    """The entry after a 250 must not be lost to a journal connection the server closed
    while it waited in the pool (idle timeouts, restarts of a proxy)."""
    with _outbox(pg_url) as (engine, connections):
        first, second = _queue(engine, 2, T0)
        with connections.transaction() as store:
            [item] = store.claim(T0, 1)
            store.mark_sent(item.id, T0)
            store.commit()
            journal = store.pg_journal
        assert journal is not None and journal.conn is not None
        pid = journal.conn.info.backend_pid
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with connections.transaction() as store:
            assert store.pg_journal is journal  # the same, pooled
            [item] = store.claim(T0, 1)
            assert item.id == second
            store.mark_sent(item.id, T0)  # on a new connection, not an exception
            store.commit()
        assert [_row(engine, i).status for i in (first, second)] == ["sent", "sent"]


def test_postgresql_opens_no_journal_connection_where_nothing_is_sent(pg_url: str) -> None:
    with _outbox(pg_url) as (engine, connections):
        _queue(engine, 1, T0)
        with connections.transaction() as store:
            store.settle(wait=True)
            assert store.due(T0, 10)
        assert store.pg_journal is not None and store.pg_journal.conn is None


class _Recorder:
    """An SMTP transport that keeps what it was given (one session at a time)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    @contextmanager
    def session(self) -> Iterator[_Recorder]:
        yield self

    def send(self, sender: str, recipients: tuple[str, ...], raw: bytes) -> None:
        self.sent.append(raw)


def test_the_lanes_say_how_far_behind_the_queue_they_are(db_url: str) -> None:
    """OutboxSender.lag is the age of the oldest first-attempt row the lanes took last (the
    worker reports it to the daemon's ParseShare); a retried row's age says nothing about
    the queue; a lane that found nothing is not behind; after the round it is 0."""
    with _outbox(db_url) as (engine, connections):
        _queue(engine, 2, T0)
        seen: list[float] = []

        class Watching(_Recorder):
            def send(self, sender: str, recipients: tuple[str, ...], raw: bytes) -> None:
                seen.append(outbox.lag)
                super().send(sender, recipients, raw)

        outbox = OutboxSender(
            connections.transaction,
            Watching(),
            lambda: T0 + timedelta(seconds=3),
            timedelta(days=1),
            connections=1,
        )
        assert outbox.send_due().sent == 2
        assert seen == [3.0, 3.0]
        assert outbox.lag == 0.0  # the round is over
        outbox._lags = [0.25, 0.0]  # a round of two lanes, the first 0.25 s behind
        outbox._note_lag(1, [DueMail(1, "a@x", ("b@x",), b"", 1, T0)])  # a retry
        assert outbox.lag == 0.25
        outbox._note_lag(1, [DueMail(2, "a@x", ("b@x",), b"", 0, T0)])
        assert outbox.lag == 3.0
        outbox._note_lag(1, [])  # the second lane found nothing: the first is still behind
        assert outbox.lag == 0.25


@pytest.mark.parametrize("group_seconds, claims", [(60.0, 2), (0.0, 4)])
def test_postgresql_group_stops_taking_rows_after_its_time(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, group_seconds: float, claims: int
) -> None:
    """A group's locks last until its commit; past GROUP_SECONDS the lane sends no more of
    it, so a slow SMTP server keeps each group to about one row (the rest claimed anew)."""
    from supportd.services import outbox as service

    monkeypatch.setattr(service, "GROUP_SECONDS", group_seconds)
    with _outbox(pg_url) as (engine, connections):
        ids = _queue(engine, 3, T0)
        claimed: list[int] = []

        @contextmanager
        def uow() -> Iterator[object]:
            with connections.transaction() as store:
                claim = store.claim

                def counted(now: datetime, limit: int = 1) -> list[object]:
                    rows = claim(now, limit)
                    claimed.append(len(rows))
                    return rows  # type: ignore[return-value]

                store.claim = counted  # type: ignore[method-assign]
                yield store

        transport = _Recorder()
        sender = service.OutboxSender(
            uow,  # type: ignore[arg-type]
            transport,
            lambda: T0,
            timedelta(days=1),
            connections=1,
        )
        assert sender.send_due().sent == 3
        assert len(transport.sent) == 3
        assert len(claimed) == claims, claimed  # the last claim finds nothing
        assert {_row(engine, i).status for i in ids} == {"sent"}


def test_a_row_journaled_as_sent_is_not_put_back_by_retry(db_url: str) -> None:
    """`supportd outbox retry` of a row a crash left journaled: it was sent, so "already
    sent", not "queued" (it would never go out again anyway)."""
    with _outbox(db_url) as (engine, connections):
        [row_id] = _queue(engine, 1, T0)
        crashed = OutboxConnections(outbox_database(engine))
        with crashed.transaction() as store:
            if store.row_locks:
                assert [m.id for m in store.claim(T0, 1)] == [row_id]
            store.mark_sent(row_id, T0)  # then the process dies: no commit, no settle
        crashed.close()
        with connections.transaction() as store:
            assert not store.retry(row_id, T0)
            store.commit()
