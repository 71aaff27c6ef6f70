"""Process-wide settings shared by the daemon and its worker process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# Blocks of this size and more are mmapped (and given back when freed), and free memory
# this large at the top of the heap is returned: glibc's own starting values, which it
# otherwise raises as large blocks are freed.
FIXED_THRESHOLD = 128 * 1024


def tune_malloc(arenas: int = 1) -> None:
    """glibc's malloc for a long-running process with threads and large transient blocks.

    - One arena (M_ARENA_MAX) unless MALLOC_ARENA_MAX says otherwise: glibc gives each
      thread that allocates its own, up to 8 per core, and the outbox lanes and the
      background sender are such threads. A 10,000-mail backlog peaked at 135 MiB in the
      daemon with the default and 107 MiB with one arena, at the same speed (the GIL
      serialises the allocations anyway).
    - Fixed mmap and trim thresholds (128 KiB) unless MALLOC_MMAP_THRESHOLD_ or
      MALLOC_TRIM_THRESHOLD_ say otherwise. glibc raises both each time a large block is
      freed (a batch's pickled mails, a FETCH response), after which such blocks come from
      the heap and their pages stay with the process: PostgreSQL, 10,000 mails, 140-142 ->
      136-137 MiB for both processes at the same speed.

    bench/RESULTS.md, issue 9. Nothing to do off glibc (musl has neither).
    """
    if sys.platform != "linux":
        return
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    if "MALLOC_ARENA_MAX" not in os.environ:
        mallopt(_M_ARENA_MAX, arenas)
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        mallopt(_M_MMAP_THRESHOLD, FIXED_THRESHOLD)
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        mallopt(_M_TRIM_THRESHOLD, FIXED_THRESHOLD)


@dataclass
class StartedWorker:
    """A worker process (adapters/worker) and the daemon's end of its socket, started
    before the daemon has built its desk: the worker imports its modules (about 0.4 s of
    a core) on the second core while the daemon imports its own, instead of afterwards.
    It waits for its "init" message; if the daemon exits first, it sees the end of stream
    and exits too."""

    sock: socket.socket
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        """Close the daemon's end (a worker never given its "init" exits) and reap it."""
        self.sock.close()
        reap(self.process)


def reap(process: subprocess.Popen[bytes]) -> None:
    """Wait for a worker whose socket is closed (it exits at the end of stream); one that
    has not after 15 s is killed."""
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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
