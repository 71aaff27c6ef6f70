"""The outbox table for the sender: due rows, and marking each one's fate.

Written on the database driver's own connection (sqlite3, psycopg), not SQLAlchemy:
- the sender also runs in the worker process (services/outbox, adapters/parsepool), where
  importing SQLAlchemy would cost 24 MiB of memory;
- a sent row's mark (UPDATE and commit) took 305 µs through SQLAlchemy Core against 65 µs
  straight through sqlite3, once for every mail the desk sends.

A sent row is recorded in a journal the moment the server says 250, and the outbox table
follows in groups:
- SQLite (SentJournal, a file beside the database): the ingest transaction holds SQLite's
  one write lock most of the time during a backlog, and lanes waiting for it to mark each
  row spent 50 s waiting over a 5,000-mail drain.
- PostgreSQL (PgJournal, the outbox_sent table): a lane claims a few rows at once and
  marks them in one UPDATE, instead of four statements (BEGIN, claim, UPDATE, COMMIT) for
  every row, 445 us of the client's CPU each time.
Either way only the row in flight on a connection can go out twice after a crash
(invariant 2): the journal entry is committed before the lane sends its next row.

The columns and their storage formats are those of tables.outbox (SQLite keeps a
datetime as naive-UTC text "YYYY-MM-DD HH:MM:SS.ffffff", the format SQLAlchemy writes, so
the two compare as strings); tests/integration/test_outbox_store.py holds them together.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from supportd.errors import ConfigError
from supportd.services.outbox import DueMail

# An intent whose row names the message holding its text (text_of) gets that text after a
# line break, as an intent that holds its own text has it.
_INTENT = (
    "COALESCE(intent || '\n' || "
    "(SELECT m.text FROM messages m WHERE m.id = outbox.text_of), intent)"
)
_COLUMNS = f"id, sender, recipients, raw, attempts, created_at, message_id, {_INTENT}"
_DUE = f"SELECT {_COLUMNS} FROM outbox WHERE status = 'pending' AND next_attempt_at <= ?"
_DUE_AFTER = f"{_DUE} AND id > ? ORDER BY id LIMIT ?"
# PostgreSQL: rows in its journal were sent (the table not yet told), so they are not due.
_UNSENT = " AND NOT EXISTS (SELECT 1 FROM outbox_sent s WHERE s.id = outbox.id)"
_PG_DUE_AFTER = f"{_DUE}{_UNSENT} AND id > ? ORDER BY id LIMIT ?"
_PG_CLAIM = f"{_DUE}{_UNSENT} ORDER BY next_attempt_at, id LIMIT ? FOR UPDATE SKIP LOCKED"
_PG_MARK_GROUP = (
    "UPDATE outbox SET status = 'sent', sent_at = g.at, last_error = '' "
    "FROM unnest(%s::integer[], %s::timestamp[]) AS g (id, at) WHERE outbox.id = g.id"
)
# Journal entries a crash left behind, for rows no live sender holds (SKIP LOCKED).
_PG_APPLY = (
    "UPDATE outbox SET status = 'sent', sent_at = s.at, last_error = '' FROM outbox_sent s "
    "WHERE outbox.id = s.id AND outbox.id IN (SELECT o.id FROM outbox o JOIN outbox_sent j "
    "ON j.id = o.id WHERE o.status <> 'sent' FOR UPDATE OF o SKIP LOCKED)"
)
_PG_FORGET_APPLIED = (
    "DELETE FROM outbox_sent WHERE id IN (SELECT s.id FROM outbox_sent s WHERE NOT EXISTS "
    "(SELECT 1 FROM outbox o WHERE o.id = s.id AND o.status <> 'sent') "
    "FOR UPDATE SKIP LOCKED)"  # never waits for a lane forgetting its own group
)
# A claim's anti-join reads the journal as it was when the claim began: a row journaled and
# released (a lane that died) while the claim ran would look unsent. A statement after the
# claim sees every entry committed before the row's lock was let go.
_PG_JOURNALED = "SELECT id FROM outbox_sent WHERE id = ANY(%s)"
_MARK_SENT = "UPDATE outbox SET status = 'sent', sent_at = ?, last_error = '' WHERE id = ?"
_MARK_RETRY = "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?"
_MARK_FAILED = "UPDATE outbox SET status = 'failed', attempts = ?, last_error = ? WHERE id = ?"
_RETRY = (
    "UPDATE outbox SET status = 'pending', next_attempt_at = ?, created_at = ? "
    "WHERE id = ? AND status <> 'sent'"
)
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
# Journal entries gathered before a lane tries (without waiting) to apply them to the table.
SETTLE_AT = 16


@dataclass(frozen=True)
class OutboxDatabase:
    """Where the outbox table is, in the driver's terms (picklable: the worker gets it).

    `durable=False`: a mark's commit returns before the disk has it (SQLite
    synchronous=NORMAL: it is in the WAL, so a kill -9 of supportd never forgets it, only an
    OS crash can, until the next durable commit or checkpoint; PostgreSQL
    synchronous_commit=off: only a crash of the server within ~0.6 s can). Such a forgotten
    mark sends its row once more. It spares an fsync per sent row.
    """

    dialect: str  # "sqlite" or "postgresql"
    target: str  # the SQLite file, or a libpq connection URI
    durable: bool = False

    def connect(self, autocommit: bool = False) -> Any:
        if self.dialect == "sqlite":
            conn = sqlite3.connect(
                self.target, timeout=30, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            # The sender touches a few pages per row: 256 KiB of page cache per connection
            # instead of SQLite's 2 MiB (a lane each, in the worker process).
            conn.execute("PRAGMA cache_size = -256")
            return conn
        if self.dialect == "postgresql":
            import psycopg  # only where the outbox is on PostgreSQL

            # A claimed group's locks live as long as the lane's transaction: a server that
            # ended idle transactions would free them while the lane still sends the group.
            options = "-c idle_in_transaction_session_timeout=0"
            if not self.durable:
                options += " -c synchronous_commit=off"
            return psycopg.connect(self.target, options=options, autocommit=autocommit)
        raise ConfigError(f"database.url: the outbox needs SQLite or PostgreSQL: {self.dialect}")


# Remembers the texts of the instants written lately: a batch writes the same few times
# (its `now`, each mail's arrival) into several rows and columns. An aware datetime's
# equality and hash are those of its UTC instant, so equal keys always have the same text.
@functools.lru_cache(maxsize=1024)
def sqlite_time(value: datetime) -> str:
    """An aware time as SQLite holds it: SQLAlchemy's DATETIME text of the UTC instant, the
    same as strftime(_SQLITE_TIME) in a fifth of the time (tables.UTCDateTime uses it too).
    A time seen lately is looked up, not converted again (2 us: sqlite_time was 2.7 % of
    the daemon's own time in issue 9's profile)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _pg_time(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def _read_time(value: str | datetime) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC)


class SentJournal:
    """SQLite: the rows sent but not yet marked in the outbox table, in a small database of
    their own beside the desk's (`<database>-sent`).

    A lane records its row here right after the server's 250, in its own commit, which
    never waits for the desk's write lock: invariant 2 stays at one row per connection. The
    marks reach the outbox table in groups, whenever its write lock is free, and always at
    the end of a sending round and before the next one reads due rows; after a crash, the
    next sender applies what the journal holds before it sends anything. WAL with
    synchronous=NORMAL: a kill -9 of supportd never forgets an entry; an OS crash can, and
    then those rows go out once more (as with the table's own marks, see OutboxDatabase).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA cache_size = -64")
        self._conn.execute("CREATE TABLE IF NOT EXISTS sent (id INTEGER PRIMARY KEY, at TEXT)")
        # Recorded by this process since it last applied the journal: the lanes' cheap
        # "enough to apply yet?" test, instead of reading the journal after every row.
        self.recorded = 0

    def record(self, row_id: int, at: str) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO sent (id, at) VALUES (?, ?)", (row_id, at))
            self.recorded += 1

    def entries(self) -> list[tuple[int, str]]:
        with self._lock:
            return self._conn.execute("SELECT id, at FROM sent ORDER BY id").fetchall()

    def forget(self, ids: list[int]) -> None:
        with self._lock:
            self._conn.execute("BEGIN")
            self._conn.executemany("DELETE FROM sent WHERE id = ?", [(i,) for i in ids])
            self._conn.execute("COMMIT")
            self.recorded = max(0, self.recorded - len(ids))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PgJournal:
    """PostgreSQL: the rows a lane sent whose outbox rows still say pending, in the
    outbox_sent table, written on a connection of their own in autocommit (the lane's
    transaction holds its claimed rows locked until their group ends).

    An entry commits right after the server's 250, before the lane sends its next row;
    the lane's commit marks its group in the outbox table and then forgets their entries.
    A crash leaves entries behind: no sender claims those rows (the claim skips them), and
    the next round applies them first. synchronous_commit=off as for the table's own marks
    (OutboxDatabase): only a crash of the server itself can forget an entry.

    The connection opens at the first entry (a round's other transactions never need it),
    and one that broke while it waited in the pool is replaced once: an entry must not be
    lost to a stale connection after the server said 250.
    """

    def __init__(self, connect: Callable[[], Any]) -> None:
        import psycopg  # only where the outbox is on PostgreSQL

        self._connect = connect
        self._broken: type[Exception] = psycopg.OperationalError
        self.conn: Any = None

    def record(self, row_id: int, at: datetime) -> None:
        self._execute(
            "INSERT INTO outbox_sent (id, at) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
            (row_id, at),
        )

    def forget(self, ids: list[int]) -> None:
        self._execute("DELETE FROM outbox_sent WHERE id = ANY(%s)", (ids,))

    def _execute(self, sql: str, params: tuple[object, ...]) -> None:
        if self.conn is not None:
            try:
                self.conn.execute(sql, params)
                return
            except self._broken:  # idle too long in the pool: a new one, once
                self.close()
        self.conn = self._connect()
        self.conn.execute(sql, params)

    def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            conn.close()


class SqlOutboxStore:
    """One transaction on one connection; it begins with the first statement (so a lane
    holds SQLite's write lock only for its mark, not while the SMTP server answers)."""

    def __init__(
        self,
        conn: Any,
        dialect: str,
        journal: SentJournal | None = None,
        pg_journal: PgJournal | None = None,
    ) -> None:
        self.conn = conn
        self.dialect = dialect
        self.journal = journal
        self.pg_journal = pg_journal
        self.sqlite = dialect == "sqlite"
        self.time: Callable[[datetime], object] = sqlite_time if self.sqlite else _pg_time
        self.open = False
        # PostgreSQL: rows sent in this transaction (journaled), marked in the table at commit.
        self._sent: list[tuple[int, datetime]] = []

    @property
    def row_locks(self) -> bool:
        """Whether claim() locks the row until commit (PostgreSQL), so senders can share."""
        return not self.sqlite

    def _begin(self, wait: bool = True) -> bool:
        """SQLite: take the write lock now; False if another writer holds it and not wait."""
        if self.open or not self.sqlite:
            self.open = True
            return True
        if not wait:
            self.conn.execute("PRAGMA busy_timeout = 0")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            if wait:
                raise
            return False
        finally:
            if not wait:
                self.conn.execute("PRAGMA busy_timeout = 30000")
        self.open = True
        return True

    def _run(self, sql: str, params: tuple[object, ...], write: bool = True) -> Any:
        if self.sqlite:
            if write:
                self._begin()  # a writer takes the lock up front
            return self.conn.execute(sql, params)
        self.open = True
        return self.conn.execute(sql.replace("?", "%s"), params)

    def claim(self, now: datetime, limit: int = 1) -> list[DueMail]:
        """Up to `limit` due rows in the claim order (PostgreSQL), locked until this
        transaction ends; rows another sender holds are skipped (FOR UPDATE SKIP LOCKED), so
        no row goes out twice while its sender lives."""
        if self.sqlite:
            raise NotImplementedError("SQLite's outbox has one sender: due() feeds it")
        rows = self._run(_PG_CLAIM, (self.time(now), limit)).fetchall()
        if rows:
            sent = {r for (r,) in self.conn.execute(_PG_JOURNALED, ([row[0] for row in rows],))}
            rows = [row for row in rows if row[0] not in sent]
        return self._mails(rows)

    def due(self, now: datetime, limit: int, after: int = 0) -> list[DueMail]:
        """Due rows with id > `after`, in id order (the SQLite feed reads on from there)."""
        query = _DUE_AFTER if self.sqlite else _PG_DUE_AFTER
        rows = self._run(query, (self.time(now), after, limit), write=False).fetchall()
        if self.journal is not None:  # sent, the table not yet told: not due
            sent = {row_id for row_id, _ in self.journal.entries()}
            rows = [row for row in rows if row[0] not in sent]
        return self._mails(rows)

    @staticmethod
    def _mails(rows: list[tuple[Any, ...]]) -> list[DueMail]:
        return [
            DueMail(
                row_id,
                sender,
                tuple(a.strip() for a in recipients.split(",") if a.strip()),
                bytes(raw),
                attempts,
                _read_time(created),
                message_id or "",
                intent,
            )
            for row_id, sender, recipients, raw, attempts, created, message_id, intent in rows
        ]

    def mark_sent(self, row_id: int, now: datetime) -> None:
        """Durable when it returns when there is a journal (SQLite's file, PostgreSQL's
        table); the table itself follows in groups. Without one, with commit()."""
        if self.journal is not None:
            self.journal.record(row_id, sqlite_time(now))
        elif self.pg_journal is not None:
            at = _pg_time(now)
            self.pg_journal.record(row_id, at)
            self._sent.append((row_id, at))
            self.open = True
        else:
            self._run(_MARK_SENT, (self.time(now), row_id))

    def settle(self, wait: bool) -> None:
        """Apply the journal's marks to the outbox table (SQLite; nothing to do elsewhere).

        wait=False: only once SETTLE_AT marks have gathered, and only if the write lock is
        free now; wait=True: all of them, waiting for the lock.
        """
        if self.pg_journal is not None:
            if wait:  # what a crash left: a lane's own group is marked at its commit
                self._run(_PG_APPLY, ())
                self._run(_PG_FORGET_APPLIED, ())
                self.commit()
            return
        if self.journal is None or (not wait and self.journal.recorded < SETTLE_AT):
            return
        entries = self.journal.entries()
        if not entries:
            return
        if not self._begin(wait):
            return
        self.conn.executemany(_MARK_SENT, [(at, row_id) for row_id, at in entries])
        self.commit()
        self.journal.forget([row_id for row_id, _ in entries])

    def mark_retry(self, row_id: int, attempts: int, at: datetime, error: str) -> None:
        self._run(_MARK_RETRY, (attempts, self.time(at), error[:2000], row_id))

    def mark_failed(self, row_id: int, attempts: int, error: str, now: datetime) -> None:
        self._run(_MARK_FAILED, (attempts, error[:2000], row_id))

    def retry(self, row_id: int, now: datetime) -> bool:
        """Put a failed or pending row back in the queue now; False if unknown or sent
        (also when its journal says sent and the table has not heard yet)."""
        if self.journal is not None and row_id in {i for i, _ in self.journal.entries()}:
            return False
        query = _RETRY if self.sqlite else _RETRY + _UNSENT
        return bool(self._run(query, (self.time(now), self.time(now), row_id)).rowcount)

    def commit(self) -> None:
        if not self.open:
            return
        if self.sqlite:
            self.conn.execute("COMMIT")
            self.open = False
            return
        sent, self._sent = self._sent, []
        if sent:
            ids = [row_id for row_id, _ in sent]
            self.conn.execute(_PG_MARK_GROUP, (ids, [at for _, at in sent]))
        self.conn.commit()
        self.open = False
        if sent and self.pg_journal is not None:
            self.pg_journal.forget(ids)  # lost with a crash here: the next settle() does it

    def rollback(self) -> None:
        """Undo this transaction's marks; rows already journaled as sent stay sent (the next
        round applies them)."""
        self._sent = []
        if self.open:
            self.conn.execute("ROLLBACK") if self.sqlite else self.conn.rollback()
            self.open = False


class OutboxConnections:
    """Transactions for the outbox sender, on a few reused connections (one per lane)."""

    def __init__(self, database: OutboxDatabase, keep: int = 8) -> None:
        self.database = database
        self.keep = keep
        self._idle: list[Any] = []
        self._idle_journals: list[PgJournal] = []  # PostgreSQL: their own connections
        self._lock = threading.Lock()
        self._journal: SentJournal | None = None

    def journal(self) -> SentJournal | None:
        if self.database.dialect != "sqlite":
            return None
        with self._lock:
            if self._journal is None:
                self._journal = SentJournal(f"{self.database.target}-sent")
            return self._journal

    @contextmanager
    def transaction(self) -> Iterator[SqlOutboxStore]:
        """`with uow() as store: ...; store.commit()`; otherwise it rolls back. A connection
        that failed is closed, not reused."""
        postgresql = self.database.dialect == "postgresql"
        with self._lock:
            conn = self._idle.pop() if self._idle else None
            pg_journal = self._idle_journals.pop() if postgresql and self._idle_journals else None
        if conn is None:
            conn = self.database.connect()
        if postgresql and pg_journal is None:
            pg_journal = PgJournal(lambda: self.database.connect(autocommit=True))
        store = SqlOutboxStore(conn, self.database.dialect, self.journal(), pg_journal)
        try:
            yield store
            store.rollback()
        except BaseException:
            try:
                store.rollback()
            finally:
                _discard(conn, pg_journal)
            raise
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(conn)
                if pg_journal is not None:
                    self._idle_journals.append(pg_journal)
                return
        _discard(conn, pg_journal)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            idle_journals, self._idle_journals = self._idle_journals, []
            journal, self._journal = self._journal, None
        for conn in idle:
            conn.close()
        for pg_journal in idle_journals:
            pg_journal.close()
        if journal is not None:
            journal.close()


def _discard(conn: Any, pg_journal: PgJournal | None) -> None:
    conn.close()
    if pg_journal is not None:
        pg_journal.close()


def outbox_unit_of_work(
    database: OutboxDatabase,
) -> Callable[[], AbstractContextManager[SqlOutboxStore]]:
    """Transactions for a one-off use of the outbox (the CLI's retry)."""
    return OutboxConnections(database, keep=0).transaction
