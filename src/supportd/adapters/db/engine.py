"""Engine construction: SQLite in WAL mode with real SAVEPOINTs, or PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from supportd.adapters.db.outbox import OutboxDatabase
from supportd.errors import ConfigError

# Execution option: False for a transaction whose commit may return before the disk has
# it (a kill -9 keeps it, an OS crash or power loss may not). A later durable commit makes
# it durable too: SQLite's WAL is written in order, and its fsync covers everything before
# it. services/ingest commits a backlog's batches so. SQLite only: on PostgreSQL
# (synchronous_commit=off for those transactions) it made no difference in alternated
# runs (bench/RESULTS.md, issue 9, tenth session), and a server crash would then send the
# last batches' mail twice; its commits stay durable.
DURABLE = "durable"
_LEVEL = "supportd_synchronous"  # Connection.info: the SQLite connection's level now


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An Engine for `url`; SQLite gets WAL, FULL sync and working SAVEPOINTs."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"database.url: not a database URL: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, echo=echo, connect_args={"timeout": 30})
        _sqlite_setup(engine)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        return create_engine(parsed, echo=echo, pool_pre_ping=True)
    except Exception as exc:  # unknown dialect, missing driver
        raise ConfigError(f"database.url: cannot use {parsed.drivername!r}: {exc}") from None


def outbox_database(engine: Engine) -> OutboxDatabase:
    """Where `engine`'s outbox table is, for the sender's own connections (db/outbox):
    the SQLite file, or the PostgreSQL URI libpq reads."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ConfigError("database.url: the outbox needs a SQLite file, not :memory:")
        return OutboxDatabase("sqlite", url.database)
    if url.get_backend_name() == "postgresql":
        uri = url.set(drivername="postgresql").render_as_string(hide_password=False)
        return OutboxDatabase("postgresql", uri)
    raise ConfigError(f"database.url: {url.get_backend_name()} is not supported")


def _sqlite_setup(engine: Engine) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINT; take it over (SQLAlchemy recipe).
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives power loss; NORMAL for transactions with DURABLE=False
        # (set before their BEGIN: SQLite refuses it inside one). (The outbox's marks:
        # NORMAL, see db/outbox.OutboxDatabase.)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # Writers take the lock up front (no deadlock on upgrade); readers never block them.
        options = conn.get_execution_options()
        level = "FULL" if options.get(DURABLE, True) else "NORMAL"
        if conn.info.get(_LEVEL, "FULL") != level:
            conn.exec_driver_sql(f"PRAGMA synchronous={level}")
            conn.info[_LEVEL] = level
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("writer", False) else "BEGIN")
