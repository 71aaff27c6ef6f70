"""One owner per mailbox: a PostgreSQL advisory lock, or a file lock beside a SQLite file.

The lock says who may fetch and send; the epoch in mailbox_state (bumped by each new owner,
checked by every batch commit) makes sure an owner that lost its lock cannot commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

log = logging.getLogger(__name__)

# First key of the two-key advisory lock: "supp", so other applications' locks never clash.
LOCK_CLASS = 0x73757070


def identity() -> str:
    """How this process names itself to other instances: host, pid, start time."""
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"host {socket.gethostname()} pid {os.getpid()} since {started}"


def lock_key(mailbox: str) -> int:
    """A signed 32-bit key for the mailbox (second key of the advisory lock)."""
    digest = hashlib.blake2b(mailbox.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


class NoLock:
    """For an in-memory SQLite database: nobody else can reach it."""

    def __init__(self, who: str) -> None:
        self.who = who

    def try_acquire(self) -> bool:
        return True

    def alive(self) -> bool:
        return True

    def owner(self) -> str:
        return ""

    def release(self) -> None:
        pass


class FileLock:
    """SQLite: an exclusive flock on `<database>.lock` (one host only), naming its owner."""

    def __init__(self, path: Path, who: str) -> None:
        self.path = path
        self.who = who
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{self.who}\n".encode(), 0)
        self._fd = fd
        return True

    def alive(self) -> bool:
        """Still ours: held, and the file on disk is still the one we locked."""
        if self._fd is None:
            return False
        try:
            return os.fstat(self._fd).st_ino == os.stat(self.path).st_ino
        except OSError:
            return False

    def owner(self) -> str:
        """The holder's identity, or "" when nobody holds the lock."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return ""
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return os.pread(fd, 500, 0).decode(errors="replace").strip() or "another process"
            fcntl.flock(fd, fcntl.LOCK_UN)
            return ""
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None


class AdvisoryLock:
    """PostgreSQL: pg_try_advisory_lock on a dedicated connection.

    The connection carries TCP keepalives and tcp_user_timeout on both ends, so a lost host
    frees the lock within `takeover_seconds`; its application_name names the owner.
    """

    def __init__(self, engine: Engine, mailbox: str, who: str, takeover_seconds: float) -> None:
        self.url = engine.url
        self.key = lock_key(mailbox)
        self.who = who
        self.takeover = takeover_seconds
        self._conn: Any = None

    def _connect(self) -> Any:
        import psycopg

        idle = max(1, int(self.takeover / 3))
        interval = max(1, int(self.takeover / 9))
        user_timeout = int(self.takeover * 1000 / 2)
        server_side = (
            f"-c tcp_keepalives_idle={idle} -c tcp_keepalives_interval={interval} "
            f"-c tcp_keepalives_count=3 -c tcp_user_timeout={user_timeout}"
        )
        u = self.url
        extra: dict[str, Any] = {k: v for k, v in u.query.items() if isinstance(v, str)}
        return psycopg.connect(
            host=u.host or None,
            port=u.port or None,
            user=u.username or None,
            password=u.password or None,
            dbname=u.database or None,
            autocommit=True,
            application_name=f"supportd {self.who}"[:63],
            connect_timeout=max(2, int(self.takeover / 3)),
            keepalives=1,
            keepalives_idle=idle,
            keepalives_interval=interval,
            keepalives_count=3,
            tcp_user_timeout=user_timeout,
            options=server_side,
            **extra,
        )

    def try_acquire(self) -> bool:
        if self._conn is not None and self.alive():
            return True
        self.release()
        conn = self._connect()
        got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, self.key))
        row = got.fetchone()
        if row and row[0]:
            self._conn = conn
            return True
        conn.close()
        return False

    def alive(self) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.execute("SELECT 1")
            return True
        except Exception as exc:
            log.error("the mailbox lock connection to PostgreSQL is lost: %s", exc)
            self.release()
            return False

    def owner(self) -> str:
        import psycopg

        query = (
            "SELECT a.application_name, coalesce(host(a.client_addr), 'local') "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s "
            "AND l.objid = %s AND l.objsubid = 2"
        )
        conn = self._conn
        close = conn is None
        try:
            if conn is None:
                conn = self._connect()
            row = conn.execute(query, (LOCK_CLASS, self.key & 0xFFFFFFFF)).fetchone()
        except psycopg.Error as exc:
            return f"unknown ({exc})"
        finally:
            if close and conn is not None:
                conn.close()
        if row is None:
            return ""
        name = str(row[0]).removeprefix("supportd ")
        return f"{name} (connected from {row[1]})"

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()  # the session's advisory locks go with it
            self._conn = None


MailboxLock = NoLock | FileLock | AdvisoryLock


def mailbox_lock(engine: Engine, mailbox: str, takeover_seconds: float) -> MailboxLock:
    """The lock that fits the database: advisory on PostgreSQL, a file beside SQLite."""
    who = identity()
    if engine.dialect.name == "postgresql":
        return AdvisoryLock(engine, mailbox, who, takeover_seconds)
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        return FileLock(Path(f"{database}.lock"), who)
    return NoLock(who)
