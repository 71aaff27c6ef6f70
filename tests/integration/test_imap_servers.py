"""Servers that are not a default Dovecot: no MOVE, no UIDPLUS, a Cyrus-like namespace.

Dovecot configured like an older server (capabilities hidden, every folder under "INBOX.")
stands in for Cyrus IMAP 3.6 with `altnamespace: no` and for servers without MOVE.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient

from supportd.adapters.db import schema
from supportd.adapters.db.engine import make_engine
from tests.conftest import REQUIRE_DOVECOT, desk_config, write_toml
from tests.support.desk import incoming, make_desk, run_once
from tests.support.dovecot import Account, Dovecot, older_server, unavailable_reason
from tests.support.mail import make_mail
from tests.support.proxy import FaultProxy
from tests.support.smtp import Sink

PROCESSED = "INBOX.Processed"  # what "Processed" means under the Cyrus-like namespace


def _server(extra: str) -> Iterator[Dovecot]:
    reason = unavailable_reason()
    if reason:
        if REQUIRE_DOVECOT:
            pytest.fail(f"required for this run but unavailable: {reason}")
        pytest.skip(reason)
    server = Dovecot(extra)
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def no_move() -> Iterator[Dovecot]:
    """UIDPLUS but no MOVE, folders under INBOX. (Cyrus without altnamespace)."""
    yield from _server(older_server("MOVE"))


@pytest.fixture(scope="module")
def bare() -> Iterator[Dovecot]:
    """Neither MOVE nor UIDPLUS."""
    yield from _server(older_server("MOVE", "UIDPLUS"))


def folder_count(server: Dovecot, account: Account, folder: str) -> int:
    with IMAPClient("127.0.0.1", port=server.port, ssl=False, timeout=30) as client:
        client.login(account.username, account.password)
        if not client.folder_exists(folder):
            return 0
        return len(client.select_folder(folder, readonly=True) and client.search(["ALL"]))


def supportd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTD_")}
    return subprocess.run(
        [sys.executable, "-m", "supportd", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def seed(server: Dovecot, account: Account, n: int) -> None:
    for k in range(n):
        server.deliver(account, make_mail(message_id=f"<m{k}@x.example>", subject=f"q{k}"))


def test_without_move_each_message_is_moved_once(
    sqlite_url: str, no_move: Dovecot, smtp: Sink
) -> None:
    account = no_move.add_user()
    seed(no_move, account, 300)
    desk = make_desk(
        sqlite_url, no_move, account, imap__processed_folder="Processed", support__autoreply=False
    )
    stats = run_once(desk)
    assert stats.stored == 300 and stats.archived == 300
    assert folder_count(no_move, account, "INBOX") == 0
    assert folder_count(no_move, account, PROCESSED) == 300
    again = run_once(desk)  # a second run changes nothing
    assert again.stored == 0 and again.archived == 0
    assert folder_count(no_move, account, PROCESSED) == 300
    assert incoming(desk.engine) == 300


def test_check_names_the_namespace_and_the_move_method(
    sqlite_url: str, no_move: Dovecot, smtp: Sink, tmp_path: Path
) -> None:
    account = no_move.add_user()
    config = write_toml(
        tmp_path / "supportd.toml",
        desk_config(sqlite_url, account, no_move.port, imap__processed_folder="Processed"),
    )
    assert supportd(config, "migrate").returncode == 0
    result = supportd(config, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "processed mail goes to INBOX.Processed (the server's personal namespace prefix "
        "applied to 'Processed') by COPY, STORE \\Deleted, UID EXPUNGE"
    ) in result.stdout


@pytest.mark.parametrize(
    ("command", "when"),
    [(rb"^UID COPY", "response"), (rb"^UID STORE", "response")],
    ids=["after-copy", "after-store-deleted"],
)
def test_sigkill_between_copy_and_expunge_leaves_one_copy(
    sqlite_url: str, no_move: Dovecot, smtp: Sink, tmp_path: Path, command: bytes, when: str
) -> None:
    account = no_move.add_user()
    seed(no_move, account, 300)
    make_desk(sqlite_url, no_move, account)  # migrates
    with FaultProxy(no_move.port) as proxy:
        overrides = {"imap__processed_folder": "Processed", "support__autoreply": False}
        config = write_toml(
            tmp_path / "via-proxy.toml", desk_config(sqlite_url, account, proxy.port, **overrides)
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTD_")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "supportd", "--config", str(config), "run", "--once"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # The server did the COPY (or the STORE \\Deleted), the client has not heard: kill.
        hook = proxy.on_command(command, lambda: proc.send_signal(signal.SIGKILL), when=when)
        assert proc.wait(60) == -signal.SIGKILL, proxy.log_text()
        assert hook.calls == 1
        assert folder_count(no_move, account, PROCESSED) == 300  # the interrupted copy
        assert folder_count(no_move, account, "INBOX") == 300
        # The same mailbox (the proxy's address is part of its key) once more.
        result = supportd(config, "run", "--once")
    assert result.returncode == 0, result.stderr
    assert "stored 0" in result.stdout
    assert folder_count(no_move, account, "INBOX") == 0
    assert folder_count(no_move, account, PROCESSED) == 300  # not 600
    engine = make_engine(sqlite_url)
    assert incoming(engine) == 300
    engine.dispose()


def test_without_uidplus_mail_stays_in_place_and_check_says_why(
    sqlite_url: str, bare: Dovecot, smtp: Sink, tmp_path: Path
) -> None:
    account = bare.add_user()
    seed(bare, account, 5)
    config = write_toml(
        tmp_path / "supportd.toml",
        desk_config(sqlite_url, account, bare.port, imap__processed_folder="Processed"),
    )
    schema.upgrade(engine := make_engine(sqlite_url))
    check = supportd(config, "check")
    assert check.returncode == 1
    [line] = [ln for ln in check.stdout.splitlines() if "processed_folder" in ln]
    assert line.startswith("FAIL imap:") and "neither MOVE nor UIDPLUS" in line
    assert "other clients' \\Deleted mail" in line
    result = supportd(config, "run", "--once")
    assert result.returncode == 0, result.stderr
    assert "stored 5" in result.stdout and "neither MOVE nor UIDPLUS" in result.stderr
    assert folder_count(bare, account, "INBOX") == 5  # nothing expunged, nothing lost
    assert folder_count(bare, account, PROCESSED) == 0
    assert incoming(engine) == 5
    engine.dispose()
