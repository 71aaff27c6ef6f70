"""Parsing on the second core: a one-worker process pool that parses batch k while the
main process stores batch k-1 and fetches batch k+1. With one worker, the outbox's SMTP
lanes run there too while a backlog drains (adapters/sendhost).

A crashed worker costs nothing but time: the batch is parsed in-process instead and a
fresh worker is started for the next one; the daemon's own sender sends what it left.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from queue import Empty

from supportd.adapters import mailparse
from supportd.adapters.modelfile import classifier, overrides_key
from supportd.adapters.sendhost import WAKE, SenderChannel, SenderSpec, start_sender
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


def _start_worker(parent: int, sender: SenderChannel | None) -> None:
    """Pool initializer: tie the worker's life to the daemon's; start its sender."""
    _die_with_parent(parent)
    if sender is not None:
        start_sender(sender)


def _ready() -> bool:
    return True


def _die_with_parent(parent: int) -> None:
    """The worker exits when the daemon that started it dies."""
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


class _Job:
    """A batch the worker parses; calling it waits (or parses here if the worker died)."""

    def __init__(self, pool: ParsePool, batch: list[bytes], future: Future[Parsed] | None):
        self.pool = pool
        self.batch = batch
        self.future = future

    def done(self) -> bool:
        return self.future is None or self.future.done()

    def __call__(self) -> Parsed:
        if self.future is not None:
            try:
                return self.future.result()
            except BrokenProcessPool:
                log.warning("parse worker died; parsing this batch in-process")
                self.pool._reset()
        return parse_serial(self.batch, self.pool.rules, self.pool.model)


class ParsePool:
    """parse_async(raws) returns a callable that waits for the parsed batch."""

    def __init__(
        self,
        workers: int = 1,
        rules: RuleOverrides | None = None,
        model: str = "",
        sender: SenderSpec | None = None,
    ) -> None:
        self.model = model
        self.workers = workers
        self.rules = rules
        self._pool: ProcessPoolExecutor | None = None
        # spawn: the daemon has threads (scheduler) and sockets that must not be forked
        self._context = multiprocessing.get_context("spawn")
        # One sender at most (SQLite's feed hands rows out in one process): one worker only.
        self.sender = SenderChannel(sender, self._context) if sender and workers == 1 else None
        self._drains = 0

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=self._context,
                initializer=_start_worker,
                initargs=(os.getpid(), self.sender),
            )
        return self._pool

    def _alive(self, timeout: float = 30.0) -> bool:
        """Whether a worker answers (started, initialised, its sender thread running)."""
        try:
            return bool(self._executor().submit(_ready).result(timeout))
        except FutureTimeout:
            return True  # busy parsing a large batch: alive
        except (BrokenProcessPool, RuntimeError):
            self._reset()
            return False

    def background(
        self,
        allowed: Callable[[], bool],
        fallback: Callable[[], AbstractContextManager[Callable[[], None]]],
    ) -> AbstractContextManager[Callable[[], None]]:
        """Send while the caller ingests: yields wake() to call after each commit. The
        worker's sender when there is one, else (or when the worker is gone) `fallback`."""
        if self.sender is None or not self._alive():
            return fallback()
        return self._remote(self.sender, allowed)

    @contextmanager
    def _remote(
        self, channel: SenderChannel, allowed: Callable[[], bool]
    ) -> Iterator[Callable[[], None]]:
        def wake() -> None:
            if allowed():
                channel.allowed.set()
            else:
                channel.allowed.clear()  # the lanes stop after the row in flight
            channel.commands.put(WAKE)

        wake()  # what is already due goes out too
        try:
            yield wake
        finally:
            if not allowed():
                channel.allowed.clear()
            self._drains += 1
            started = time.monotonic()
            self._drain(channel, self._drains)
            waited = time.monotonic() - started
            # Every cycle of the daemon ends here: a line only when the wait was noticeable.
            log.log(
                logging.INFO if waited >= 0.5 else logging.DEBUG,
                "outbox: the worker's sender finished %.1f s after the drain",
                waited,
            )
            channel.allowed.clear()

    def _drain(self, channel: SenderChannel, seq: int) -> None:
        """Wait until the worker has sent everything due (or is gone)."""
        channel.commands.put(("drain", seq))
        while True:
            try:
                if channel.results.get(timeout=5.0) >= seq:
                    return
            except Empty:
                if not self._alive():
                    log.warning("the worker's sender is gone; the daemon sends what is left")
                    return
                # A worker that died holding the request was replaced: ask the new one.
                channel.commands.put(("drain", seq))

    def parse_async(self, raws: Sequence[bytes]) -> _Job:
        batch = list(raws)
        try:
            future: Future[Parsed] | None = self._executor().submit(
                parse_serial, batch, self.rules, self.model
            )
        except (BrokenProcessPool, RuntimeError):
            self._reset()
            future = None
        return _Job(self, batch, future)

    def _reset(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self.sender is not None:  # never wait at exit on a pipe nobody reads
            for channel_queue in (self.sender.commands, self.sender.results):
                channel_queue.close()
                channel_queue.cancel_join_thread()
