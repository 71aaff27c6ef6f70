"""Every way an IMAP connection ends, seen by a daemon in IDLE: FIN, BYE, silence, restart.

The daemon runs as ops run it (`supportd run`, a subprocess) behind the fault-injecting
proxy, with a poll interval far longer than the test, so only noticing the end of the
connection can bring new mail in. Its CPU time over the outage shows it never spins.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient

from supportd.adapters.db.engine import make_engine
from supportd.adapters.imap import ImapSource
from supportd.config import settings_from_dict
from tests.conftest import desk_config, write_toml
from tests.support.desk import append, incoming, make_desk
from tests.support.dovecot import Account, Dovecot
from tests.support.mail import make_mail
from tests.support.proxy import FaultProxy
from tests.support.smtp import Sink

IDLE_TIMEOUT = 4.0
SOCKET_TIMEOUT = 2.0
# The poll interval is far beyond every wait below: only the reconnect can fetch the mail.
POLL = 600
# A spinning loop burns a whole core; a healthy daemon needs a fraction of a second here.
CPU_LIMIT = 1.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def wait_for(condition: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until `condition` held, or None if it never did within `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    return None


class Daemon:
    """`supportd run` in a subprocess, stopped with SIGTERM at the end."""

    def __init__(self, config: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTD_")}
        self.log = config.with_suffix(".log")
        self._log_file = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supportd", "--config", str(config), "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log_file.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def daemon_config(
    sqlite_url: str, dovecot: Dovecot, account: Account, smtp: Sink, tmp_path: Path
) -> Callable[[int], Path]:
    make_desk(sqlite_url, dovecot, account)  # migrates

    def config(port: int, **overrides: Any) -> Path:
        values = {
            "imap__idle": True,
            "imap__poll_interval": POLL,
            "imap__timeout": SOCKET_TIMEOUT,
            "imap__idle_timeout": IDLE_TIMEOUT,
            "imap__max_backoff": 1,
            "support__autoreply": False,
            **overrides,
        }
        return write_toml(
            tmp_path / "supportd.toml", desk_config(sqlite_url, account, port, **values)
        )

    return config


@pytest.fixture
def proxy(dovecot: Dovecot) -> Iterator[FaultProxy]:
    with FaultProxy(dovecot.port) as running:
        yield running


def stored(url: str) -> Callable[[], int]:
    engine = make_engine(url)

    def count() -> int:
        return incoming(engine)

    return count


def start_idling(
    config: Path, dovecot: Dovecot, account: Account, count: Callable[[], int]
) -> Daemon:
    daemon = Daemon(config)
    append(dovecot, account, make_mail(message_id="<before@x.example>", subject="before"))
    assert wait_for(lambda: count() == 1, 30) is not None, daemon.text()
    time.sleep(1.0)  # back in IDLE
    return daemon


@pytest.mark.parametrize("fault", ["fin", "bye"])
def test_connection_closed_during_idle_reconnects_at_once_without_spinning(
    fault: str,
    sqlite_url: str,
    dovecot: Dovecot,
    account: Account,
    proxy: FaultProxy,
    daemon_config: Callable[..., Path],
) -> None:
    count = stored(sqlite_url)
    daemon = start_idling(daemon_config(proxy.port), dovecot, account, count)
    try:
        connections = proxy.accepted
        cpu_before = cpu_seconds(daemon.proc.pid)
        if fault == "fin":
            assert proxy.close_all() == 1
        else:
            assert proxy.bye_and_close() == 1
        append(dovecot, account, make_mail(message_id="<after@x.example>", subject="after"))
        took = wait_for(lambda: count() == 2, 20)
        cpu = cpu_seconds(daemon.proc.pid) - cpu_before
    finally:
        daemon.stop()
    log = daemon.text()
    print(f"{fault}: stored {took} s after the fault, CPU {cpu:.2f} s")
    assert took is not None, log  # without the reconnect: only after the 600 s poll
    assert proxy.accepted == connections + 1, proxy.log_text()
    assert cpu < CPU_LIMIT, f"{cpu:.2f} s of CPU across the outage\n{log}"
    assert "IDLE failed" in log and ("BYE" in log if fault == "bye" else "closed" in log)


def test_a_silent_peer_is_noticed_after_the_idle_timeout(
    sqlite_url: str,
    dovecot: Dovecot,
    account: Account,
    proxy: FaultProxy,
    daemon_config: Callable[..., Path],
) -> None:
    count = stored(sqlite_url)
    daemon = start_idling(daemon_config(proxy.port), dovecot, account, count)
    try:
        connections = proxy.accepted
        cpu_before = cpu_seconds(daemon.proc.pid)
        proxy.stall()  # no data, no FIN: a dead peer
        # IDLE ends after IDLE_TIMEOUT, the DONE goes unanswered for SOCKET_TIMEOUT: the
        # daemon gives the connection up and dials again.
        noticed = wait_for(lambda: proxy.accepted > connections, IDLE_TIMEOUT + 10)
        cpu = cpu_seconds(daemon.proc.pid) - cpu_before
        proxy.resume()
        append(dovecot, account, make_mail(message_id="<after@x.example>", subject="after"))
        took = wait_for(lambda: count() == 2, 30)
    finally:
        daemon.stop()
    log = daemon.text()
    print(f"stall: new connection {noticed} s after the stall, stored {took} s after resume")
    assert noticed is not None, log
    assert took is not None, log
    assert cpu < CPU_LIMIT, f"{cpu:.2f} s of CPU while the peer was silent\n{log}"


def test_server_restart_during_idle(
    sqlite_url: str,
    dovecot: Dovecot,
    account: Account,
    daemon_config: Callable[..., Path],
) -> None:
    """The real thing: Dovecot stopped and started again under an idling daemon."""
    count = stored(sqlite_url)
    daemon = start_idling(daemon_config(dovecot.port), dovecot, account, count)
    try:
        cpu_before = cpu_seconds(daemon.proc.pid)
        dovecot.restart()
        append(dovecot, account, make_mail(message_id="<after@x.example>", subject="after"))
        took = wait_for(lambda: count() == 2, 30)
        cpu = cpu_seconds(daemon.proc.pid) - cpu_before
    finally:
        daemon.stop()
    print(f"restart: stored {took} s after the restart, CPU {cpu:.2f} s")
    assert took is not None, daemon.text()
    assert cpu < CPU_LIMIT, daemon.text()


def test_folder_recreated_under_a_stale_session_is_rescanned(
    sqlite_url: str,
    dovecot: Dovecot,
    account: Account,
    proxy: FaultProxy,
    daemon_config: Callable[..., Path],
) -> None:
    """Cyrus keeps a session on a deleted folder and answers NOOP and SEARCH with nothing;
    the proxy's stale mode plays that server, while STATUS tells the truth."""
    with IMAPClient("127.0.0.1", port=dovecot.port, ssl=False) as client:
        client.login(account.username, account.password)
        client.create_folder("Support")
    config = daemon_config(proxy.port, imap__folder="Support")
    count = stored(sqlite_url)
    daemon = Daemon(config)
    try:
        append(dovecot, account, make_mail(message_id="<old@x.example>"), folder="Support")
        assert wait_for(lambda: count() == 1, 30) is not None, daemon.text()
        time.sleep(1.0)
        assert proxy.stale() == 1
        recreate_with(dovecot, account, "Support", make_mail(message_id="<new@x.example>"))
        took = wait_for(lambda: count() == 2, IDLE_TIMEOUT + 15)
    finally:
        daemon.stop()
    log = daemon.text()
    print(f"recreated folder: new mail stored after {took} s")
    assert took is not None, log + proxy.log_text()
    assert "the folder was recreated" in log


def recreate_with(dovecot: Dovecot, account: Account, folder: str, raw: bytes) -> None:
    """Delete and recreate a folder under the daemon's session, then append one mail.

    Dovecot (Maildir) can fail the first APPEND into the new folder with "Mailbox was
    deleted under us" while another session still holds the old one open: the test's own
    set-up racing the server, not the daemon. The whole step is tried again (a new
    UIDVALIDITY each time, which is what the daemon must notice)."""
    for attempt in range(5):
        with IMAPClient("127.0.0.1", port=dovecot.port, ssl=False) as client:
            client.login(account.username, account.password)
            if client.folder_exists(folder):
                client.delete_folder(folder)
            client.create_folder(folder)
            try:
                client.append(folder, raw)
                return
            except IMAPClient.Error as exc:
                if "deleted under us" not in str(exc) or attempt == 4:
                    raise
        time.sleep(0.3)


def test_folder_recreated_on_dovecot_is_rescanned(
    sqlite_url: str,
    dovecot: Dovecot,
    account: Account,
    daemon_config: Callable[..., Path],
) -> None:
    """Dovecot ends the session instead; the reconnect finds the new UIDVALIDITY."""
    with IMAPClient("127.0.0.1", port=dovecot.port, ssl=False) as client:
        client.login(account.username, account.password)
        client.create_folder("Support")
    count = stored(sqlite_url)
    daemon = Daemon(daemon_config(dovecot.port, imap__folder="Support"))
    try:
        append(dovecot, account, make_mail(message_id="<old@x.example>"), folder="Support")
        assert wait_for(lambda: count() == 1, 30) is not None, daemon.text()
        recreate_with(dovecot, account, "Support", make_mail(message_id="<new@x.example>"))
        took = wait_for(lambda: count() == 2, IDLE_TIMEOUT + 15)
    finally:
        daemon.stop()
    assert took is not None, daemon.text()


def test_a_burst_appended_while_busy_is_stored_without_waiting_for_a_poll(
    sqlite_url: str,
    dovecot: Dovecot,
    account: Account,
    daemon_config: Callable[..., Path],
) -> None:
    """Mail that lands between a cycle's SEARCH and the next IDLE must not wait for the
    600 s poll (the last mails of a burst did, before the NOOP ahead of IDLE)."""
    count = stored(sqlite_url)
    config = daemon_config(  # busy cycles (acknowledgements), and no early IDLE restart
        dovecot.port, imap__idle_timeout=600, support__autoreply=True
    )
    daemon = start_idling(config, dovecot, account, count)
    try:
        with IMAPClient("127.0.0.1", port=dovecot.port, ssl=False) as client:
            client.login(account.username, account.password)
            for n in range(60):
                mid = f"<burst{n}@x.example>"
                client.append("INBOX", make_mail(message_id=mid, subject=mid))
                time.sleep(0.1)
        took = wait_for(lambda: count() == 61, 10)
        assert took is not None, f"{count()} of 61 stored\n{daemon.text()}"
    finally:
        daemon.stop()


def test_a_folder_recreated_between_two_polls_is_noticed_by_a_live_session(
    sqlite_url: str, dovecot: Dovecot, account: Account
) -> None:
    """Dovecot keeps a session on its view of a folder deleted and recreated quickly
    (NOOP succeeds, and STATUS from that session gives the old UIDVALIDITY): the new
    folder's mail, under UIDs the old one had used, was never fetched. The check goes
    through a second session with no folder selected."""
    with IMAPClient("127.0.0.1", port=dovecot.port, ssl=False) as client:
        client.login(account.username, account.password)
        client.create_folder("Support")
        client.append("Support", make_mail(message_id="<old@x.example>"))
    settings = settings_from_dict(desk_config(sqlite_url, account, dovecot.port))
    source = ImapSource(settings.imap.model_copy(update={"folder": "Support"}))
    try:
        before = source.open()
        assert list(source.uids_after(0)) == [1]
        recreate_with(dovecot, account, "Support", make_mail(message_id="<new@x.example>"))
        after = source.open()
        assert after != before
        assert list(source.uids_after(0)) == [1]  # the new folder's first mail
    finally:
        source.close()
