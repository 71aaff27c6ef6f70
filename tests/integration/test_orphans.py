"""kill -9 of the daemon (outside systemd) leaves no parse worker behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from supportd.adapters.db import schema
from supportd.adapters.db.engine import make_engine
from tests.conftest import desk_config, write_toml
from tests.support.dovecot import Account, Dovecot
from tests.support.mail import make_mail


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of a live process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may hold spaces
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(root: int) -> dict[int, int]:
    """Every descendant of root (children, their children, ...): pid -> start time."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _stat(int(entry))) is not None:
            children.setdefault(info[0], []).append((int(entry), info[2]))
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for pid, started in children.get(todo.pop(), []):
            if pid not in found:
                found[pid] = started
                todo.append(pid)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int, started: int) -> bool:
    """Still running: the same process (not a reused pid) and not a zombie."""
    info = _stat(pid)
    return info is not None and info[2] == started and info[1] != "Z"


def test_the_parse_worker_dies_with_a_killed_daemon(
    sqlite_url: str, dovecot: Dovecot, account: Account, tmp_path: Path
) -> None:
    config = write_toml(
        tmp_path / "supportd.toml",
        desk_config(
            sqlite_url,
            account,
            dovecot.port,
            imap__batch_size=10,
            imap__idle=False,
            imap__poll_interval=0.2,
            imap__parse_workers=1,
        ),
    )
    engine = make_engine(sqlite_url)
    schema.upgrade(engine)
    engine.dispose()
    for n in range(50):
        dovecot.deliver(account, make_mail(message_id=f"<orphan{n}@customer.example>"))

    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTD_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "supportd", "--config", str(config), "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    descendants: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            descendants = _descendants(proc.pid)
            if any("supportd.adapters.worker" in _cmdline(pid) for pid in descendants):
                break  # the parse worker is up
            time.sleep(0.05)
        assert proc.poll() is None, "the daemon exited early"
        descendants = _descendants(proc.pid)  # the last word before the kill
        assert descendants, "the daemon started no parse worker"
        # One worker and nothing else: no multiprocessing resource tracker (12 MiB).
        assert [_cmdline(p) for p in descendants] == [
            c for p in descendants if "supportd.adapters.worker" in (c := _cmdline(p))
        ]

        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        survivors = {-1: "not checked yet"}
        while time.monotonic() < deadline:
            survivors = {p: _cmdline(p) for p, t in descendants.items() if _alive(p, t)}
            if not survivors:
                break
            time.sleep(0.1)
        assert not survivors, f"orphaned after kill -9 of the daemon: {survivors}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid, started in descendants.items():  # never leave our orphans behind
            if _alive(pid, started):
                os.kill(pid, signal.SIGKILL)
