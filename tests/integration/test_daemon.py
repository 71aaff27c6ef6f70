"""The daemon as ops run it: SIGTERM, login failures, backoff."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from supportd.entrypoints.daemon import Runner
from tests.conftest import desk_config, write_toml
from tests.support.desk import incoming, make_desk
from tests.support.dovecot import Account, Dovecot
from tests.support.mail import make_mail


def test_sigterm_finishes_and_exits_zero(
    sqlite_url: str, dovecot: Dovecot, account: Account, tmp_path: Path
) -> None:
    make_desk(sqlite_url, dovecot, account)  # migrates
    for n in range(300):
        dovecot.deliver(account, make_mail(message_id=f"<t{n}@x.example>", subject=f"q{n}"))
    config = write_toml(
        tmp_path / "supportd.toml",
        desk_config(sqlite_url, account, dovecot.port, imap__batch_size=20),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTD_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "supportd", "--config", str(config), "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "finishing the batch in flight" in err and "stopped" in err


def test_login_failure_is_logged_once_per_attempt_without_the_password(
    sqlite_url: str, dovecot: Dovecot, account: Account, caplog: pytest.LogCaptureFixture
) -> None:
    account.password = "not-the-password-42"
    desk = make_desk(sqlite_url, dovecot, account, imap__max_backoff=0.5)
    runner = Runner(desk)
    thread = threading.Thread(target=runner.run_forever, daemon=True)
    with caplog.at_level(logging.ERROR, logger="supportd"):
        thread.start()
        time.sleep(3)
        runner.request_stop()
        thread.join(15)
    assert not thread.is_alive()
    failures = [r.getMessage() for r in caplog.records if "login refused" in r.getMessage()]
    # Dovecot answers a failed login after 2 s (auth_failure_delay): two attempts in 3 s.
    assert len(failures) >= 2
    assert "[AUTHENTICATIONFAILED]" in failures[0] and "b'" not in failures[0]
    assert all(account.username in m and "127.0.0.1" in m for m in failures)
    assert not any("not-the-password-42" in r.getMessage() for r in caplog.records)
    assert all(r.exc_info is None for r in caplog.records)  # plain lines, no tracebacks


def test_daemon_recovers_after_login_starts_working(
    sqlite_url: str, dovecot: Dovecot, account: Account
) -> None:
    right = account.password
    account.password = "wrong"
    desk = make_desk(sqlite_url, dovecot, account, imap__max_backoff=0.5, imap__idle=False)
    runner = Runner(desk)
    thread = threading.Thread(target=runner.run_forever, daemon=True)
    thread.start()
    try:
        dovecot.deliver(account, make_mail())
        time.sleep(1)
        desk.settings.imap.password = right  # the operator fixes the credential

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and incoming(desk.engine) == 0:
            time.sleep(0.1)
        assert incoming(desk.engine) == 1
    finally:
        runner.request_stop()
        thread.join(15)


def test_sigterm_waits_at_most_stop_timeout_for_an_item_in_flight(
    sqlite_url: str, dovecot: Dovecot, account: Account, tmp_path: Path
) -> None:
    """An SMTP server that never answers DATA: the stop still comes within the bound."""
    import asyncio

    from aiosmtpd.controller import Controller

    from tests.support.dovecot import free_port

    class Stuck:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            await asyncio.sleep(60)
            return "250 OK"

    controller = Controller(Stuck(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        make_desk(sqlite_url, dovecot, account)  # migrates
        dovecot.deliver(account, make_mail(message_id="<stuck@x.example>"))
        config = write_toml(
            tmp_path / "supportd.toml",
            desk_config(
                sqlite_url,
                account,
                dovecot.port,
                smtp__port=controller.port,
                smtp__timeout=120,
                daemon__stop_timeout=2,
            ),
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTD_")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "supportd", "--config", str(config), "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)  # stored, and the acknowledgement hangs in DATA
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        controller.stop()
    assert proc.returncode == 0, err
    assert took < 2 + 3, f"{took:.1f} s after SIGTERM"
    assert "exiting now" in err


def test_the_timers_do_not_fill_the_journal_at_info(
    sqlite_url: str, dovecot: Dovecot, account: Account, caplog: pytest.LogCaptureFixture
) -> None:
    """APScheduler logs two INFO lines per timer run: 17,000 a day for the heartbeat."""
    desk = make_desk(sqlite_url, dovecot, account, imap__poll_interval=0.2, imap__idle=False)
    runner = Runner(desk)
    thread = threading.Thread(target=runner.run_forever, daemon=True)
    with caplog.at_level(logging.INFO):
        thread.start()
        try:
            time.sleep(1.5)  # the poll timer runs every 0.2 s
        finally:
            runner.request_stop()
            thread.join(15)
    assert not [r for r in caplog.records if r.name.startswith("apscheduler")]
