"""Shared fixtures: private Dovecot, databases (SQLite always, PostgreSQL where it runs)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from tests.support.dovecot import Account, Dovecot, unavailable_reason
from tests.support.smtp import Sink, SmtpServer

PG_ADMIN_URL = os.environ.get(
    "SUPPORTD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
# CI on this machine sets these: a missing server is then a failure, not a skip.
REQUIRE_DOVECOT = os.environ.get("SUPPORTD_REQUIRE_DOVECOT") == "1"
REQUIRE_POSTGRES = os.environ.get("SUPPORTD_REQUIRE_POSTGRES") == "1"
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def _skip_or_fail(reason: str, required: bool) -> None:
    if required:
        pytest.fail(f"required for this run but unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _dispose_desks() -> Iterator[None]:
    yield
    from tests.support.desk import close_desks

    close_desks()


SMTP_PORT = {"port": 2525}


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    SMTP_PORT["port"] = server.port
    yield server
    server.stop()


@pytest.fixture
def smtp(smtp_server: SmtpServer) -> Sink:
    """The SMTP sink every desk in the test sends to, emptied for the test."""
    smtp_server.sink.reset()
    return smtp_server.sink


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    reason = unavailable_reason()
    if reason:
        _skip_or_fail(reason, REQUIRE_DOVECOT)
    server = Dovecot()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def account(dovecot: Dovecot, smtp: Sink) -> Account:
    """A fresh mailbox; every test with one also gets an empty SMTP sink to send to."""
    return dovecot.add_user()


def _pg_admin() -> Engine | None:
    try:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return engine
    except Exception:
        return None


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    engine = _pg_admin()
    if engine is None:
        _skip_or_fail(f"PostgreSQL not reachable at {PG_ADMIN_URL}", REQUIRE_POSTGRES)
    assert engine is not None
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin: Engine) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    name = f"supportd_t_{uuid.uuid4().hex[:12]}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = pg_admin.url.set(database=name).render_as_string(hide_password=False)
    yield url
    with pg_admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'supportd.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'supportd.db'}"
    return str(request.getfixturevalue("pg_url"))


def desk_config(
    db_url: str, account: Account | None, port: int, **overrides: Any
) -> dict[str, Any]:
    """A full settings mapping for tests, pointing at the private Dovecot."""
    config: dict[str, Any] = {
        "database": {"url": db_url},
        "imap": {
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "username": account.username if account else "nobody",
            "password": account.password if account else "x",
            "poll_interval": 0.5,
            "max_backoff": 2,
        },
        "smtp": {"host": "127.0.0.1", "port": SMTP_PORT["port"], "security": "none"},
        "support": {
            "address": "support@desk.example",
            "name": "Desk Support",
            "product": "Desk",
            "agents": ["agent@desk.example"],
            "secret_key": "test-secret-key-0123456789",
        },
    }
    for dotted, value in overrides.items():
        section, key = dotted.split("__", 1)
        config.setdefault(section, {})[key] = value
    return config


def write_toml(path: Path, config: dict[str, Any]) -> Path:
    def fmt(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return str(value)
        if isinstance(value, list):
            return "[" + ", ".join(fmt(v) for v in value) + "]"
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {fmt(v)}" for k, v in values.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path
