"""Process-wide settings shared by the daemon and its worker process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass


def limit_malloc_arenas(arenas: int = 1) -> None:
    """Cap glibc's malloc arenas (M_ARENA_MAX) unless MALLOC_ARENA_MAX says otherwise.

    glibc gives each thread that allocates its own arena, up to 8 per core, and the outbox
    lanes and the background sender (in the daemon or its worker) are such threads: a
    10,000-mail backlog peaked at 135 MiB in the daemon with the default and 107 MiB with
    one arena, at the same speed (the GIL serialises the allocations anyway).
    bench/RESULTS.md, issue 9.
    """
    if sys.platform != "linux" or "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        import ctypes

        m_arena_max = -8
        ctypes.CDLL(None).mallopt(m_arena_max, arenas)
    except (OSError, AttributeError):  # not glibc (musl has no arenas to cap)
        pass


@dataclass
class StartedWorker:
    """A worker process (adapters/worker) and the daemon's end of its socket, started
    before the daemon has built its desk: the worker imports its modules (about 0.4 s of
    a core) on the second core while the daemon imports its own, instead of afterwards.
    It waits for its "init" message; if the daemon exits first, it sees the end of stream
    and exits too."""

    sock: socket.socket
    process: subprocess.Popen[bytes]


def start_worker() -> StartedWorker:
    """Start `python -m supportd.adapters.worker FD` on one end of a new socketpair."""
    ours, theirs = socket.socketpair()
    # The worker imports what this process can (a source checkout, the bench's path).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "supportd.adapters.worker", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return StartedWorker(ours, process)
