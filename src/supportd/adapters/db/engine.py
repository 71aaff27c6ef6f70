"""Engine construction: SQLite in WAL mode with real SAVEPOINTs, or PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from supportd.adapters.db.outbox import OutboxDatabase
from supportd.errors import ConfigError


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
        # FULL: a commit survives power loss, so the cursor never claims a lost message.
        # One commit per FETCH batch keeps the fsync cost small. (The outbox's marks:
        # NORMAL, see db/outbox.OutboxDatabase.)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # Writers take the lock up front (no deadlock on upgrade); readers never block them.
        writer = conn.get_execution_options().get("writer", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")
