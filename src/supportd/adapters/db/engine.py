"""Engine construction: SQLite in WAL mode with real SAVEPOINTs, or PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from supportd.errors import ConfigError


def make_engine(url: str, *, echo: bool = False, durable: bool = True) -> Engine:
    """An Engine for `url`; SQLite gets WAL, FULL sync and working SAVEPOINTs.

    `durable=False` (the outbox's marks, see outbox_engine): commits return before the
    disk has them (SQLite synchronous=NORMAL, PostgreSQL synchronous_commit=off).
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"database.url: not a database URL: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, echo=echo, connect_args={"timeout": 30})
        _sqlite_setup(engine, "FULL" if durable else "NORMAL")
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    connect_args = {} if durable else {"options": "-c synchronous_commit=off"}
    try:
        return create_engine(parsed, echo=echo, pool_pre_ping=True, connect_args=connect_args)
    except Exception as exc:  # unknown dialect, missing driver
        raise ConfigError(f"database.url: cannot use {parsed.drivername!r}: {exc}") from None


def outbox_engine(engine: Engine) -> Engine:
    """The engine the outbox sender marks rows with: a sibling of `engine` whose commits
    do not wait for the disk.

    SQLite (WAL, synchronous=NORMAL): a commit still reaches the log before it returns, so
    a crash of supportd (kill -9) never forgets a mark; only an OS crash or power loss can
    forget marks made since the last FULL commit (the next ingest batch fsyncs the log, and
    every mark before it), and those rows go out once more. PostgreSQL (synchronous_commit
    off): likewise, only a crash of the database server within ~0.6 s of a mark forgets
    it. It spares an fsync per sent row, which was 5 of 36 s of a 10,000-mail backlog.
    """
    return make_engine(engine.url.render_as_string(hide_password=False), durable=False)


def _sqlite_setup(engine: Engine, synchronous: str = "FULL") -> None:
    # pysqlite's own transaction handling breaks SAVEPOINT; take it over (SQLAlchemy recipe).
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives power loss, so the cursor never claims a lost message.
        # One commit per FETCH batch keeps the fsync cost small. (NORMAL: outbox_engine.)
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # Writers take the lock up front (no deadlock on upgrade); readers never block them.
        writer = conn.get_execution_options().get("writer", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")
