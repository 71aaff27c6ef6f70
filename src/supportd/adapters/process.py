"""Process-wide settings shared by the daemon and its worker process."""

from __future__ import annotations

import os
import sys


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
