"""Parsing on the second core: a one-worker process pool that parses batch k while the
main process stores batch k-1 and fetches batch k+1.

A crashed worker costs nothing but time: the batch is parsed in-process instead and a
fresh worker is started for the next one.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace

from supportd.adapters import mailparse
from supportd.adapters.modelfile import classifier, overrides_key
from supportd.domain.mail import ParsedMail
from supportd.domain.robots import automatic_reason

log = logging.getLogger(__name__)

Parsed = list[ParsedMail | BaseException]
RuleOverrides = Mapping[str, Sequence[str]]


class ParseFailure(Exception):
    """Why a message could not be parsed (picklable, unlike some library exceptions)."""


def parse_serial(
    raws: Sequence[bytes], rules: RuleOverrides | None = None, model: str = ""
) -> Parsed:
    """Parse and classify each message; a failure is returned in its place, never raised."""
    decide = classifier(overrides_key(rules), model)
    results: Parsed = []
    for raw in raws:
        try:
            mail = mailparse.parse(raw)
            robot = automatic_reason(mail)  # judged once, here, on the second core
            category = "" if robot else decide(mail.subject, mail.text)  # robots need none
            mail = replace(mail, automatic=robot, category=category)
            results.append(mail)
        except Exception as exc:
            results.append(ParseFailure(f"{type(exc).__name__}: {exc}"))
    return results


def _die_with_parent(parent: int) -> None:
    """Pool initializer: the worker exits when the daemon that started it dies."""
    # After a kill -9 of the daemon outside systemd, a worker would block forever on its
    # task queue (it holds the pipe's write end too), and the resource tracker lives as long
    # as the worker: orphans. PDEATHSIG fires when the *thread* that spawned the worker
    # exits, so submit from a long-lived thread; the ppid poll covers non-Linux.
    if sys.platform == "linux":
        try:
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


class ParsePool:
    """parse_async(raws) returns a callable that waits for the parsed batch."""

    def __init__(
        self, workers: int = 1, rules: RuleOverrides | None = None, model: str = ""
    ) -> None:
        self.model = model
        self.workers = workers
        self.rules = rules
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: the daemon has threads (scheduler) and sockets that must not be forked
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=context,
                initializer=_die_with_parent,
                initargs=(os.getpid(),),
            )
        return self._pool

    def parse_async(self, raws: Sequence[bytes]) -> Callable[[], Parsed]:
        batch = list(raws)
        try:
            future: Future[Parsed] | None = self._executor().submit(
                parse_serial, batch, self.rules, self.model
            )
        except (BrokenProcessPool, RuntimeError):
            self._reset()
            future = None

        def result() -> Parsed:
            if future is not None:
                try:
                    return future.result()
                except BrokenProcessPool:
                    log.warning("parse worker died; parsing this batch in-process")
                    self._reset()
            return parse_serial(batch, self.rules, self.model)

        return result

    def _reset(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
