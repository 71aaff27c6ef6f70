"""Parsing on the second core: a worker process that parses batch k while the main
process stores batch k-1 and fetches batch k+1. With one worker, the outbox's SMTP lanes
run there too while a backlog drains (adapters/sendhost).

The worker is a plain subprocess (`python -m supportd.adapters.worker`) spoken to over a
socketpair (adapters/wire), not a multiprocessing pool: that needed multiprocessing's
resource tracker, a third process of 12 MiB (issue 9's memory budget).

A crashed worker costs nothing but time: the batch is parsed in-process instead and a
fresh worker is started for the next one; the daemon's own sender sends what it left.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import replace
from typing import Any

from supportd.adapters import mailparse
from supportd.adapters.modelfile import classifier, overrides_key
from supportd.adapters.process import StartedWorker, reap, start_worker
from supportd.adapters.sendhost import SenderSpec
from supportd.adapters.wire import Closed, Wire
from supportd.domain.mail import ParsedMail
from supportd.domain.robots import automatic_reason

log = logging.getLogger(__name__)

Parsed = list[ParsedMail | BaseException]
RuleOverrides = Mapping[str, Sequence[str]]


# Lanes this far behind the queue (the age of the row they took last, in seconds) make the
# daemon parse a larger share of a backlog (services/ingest.ParseShare): on PostgreSQL the
# worker's lanes fell 2-5 s behind the drain while the daemon had CPU to spare (issue 9).
SENDER_BEHIND = 0.5


class ParseFailure(Exception):
    """Why a message could not be parsed (picklable, unlike some library exceptions)."""


class WorkerGone(Exception):
    """The worker process died (or was closed) before it answered."""


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
            # Only a new ticket takes a category. Robots need none, and a reply (threading
            # headers) usually continues a ticket: where it opens one after all, filing
            # classifies it then (issue 9: the classifier was 7 % of a backlog's CPU).
            skip = robot or mail.in_reply_to or mail.references
            category = "" if skip else decide(mail.subject, mail.text)
            mail = replace(mail, automatic=robot, category=category)
            results.append(mail)
        except Exception as exc:
            results.append(ParseFailure(f"{type(exc).__name__}: {exc}"))
    return results


class _Worker:
    """One worker process and its end of the wire, as the daemon sees them."""

    def __init__(self, init: dict[str, Any], started: StartedWorker | None = None) -> None:
        started = started or start_worker()
        self.process = started.process
        self.wire = Wire(started.sock)
        self._cond = threading.Condition()
        self._jobs: dict[int, Future[Parsed]] = {}
        self._ids = itertools.count(1)
        self.pid = self.process.pid
        self.ready = False
        self.dead = False
        self.drained = 0
        self.lag = 0.0  # how far behind its lanes were at its last parsed batch (seconds)
        try:
            self.wire.send(("init", init))
        except Closed as exc:  # it died at once: reap it, and say so as a dead worker does
            self.process.kill()
            self.process.wait()
            self.wire.close()
            raise WorkerGone(f"the parse worker died at start: {exc}") from exc
        threading.Thread(target=self._read, name="worker-wire", daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                message = self.wire.recv()
                with self._cond:
                    kind = message[0]
                    if kind == "parsed":
                        self.lag = message[3] if len(message) > 3 else 0.0
                        future = self._jobs.pop(message[1], None)
                        if future is not None:
                            future.set_result(message[2])
                    elif kind == "drained":
                        self.drained = max(self.drained, message[1])
                    elif kind == "ready":
                        self.ready = True
                    self._cond.notify_all()
        except Closed:
            pass
        except Exception:  # a message that cannot be read: the worker is of no more use
            log.exception("parse worker: unreadable message")
        with self._cond:
            self.dead = True
            jobs, self._jobs = self._jobs, {}
            self._cond.notify_all()
        for future in jobs.values():
            future.set_exception(WorkerGone("the parse worker died"))

    @property
    def load(self) -> int:
        return len(self._jobs)

    def parse(self, batch: list[bytes]) -> Future[Parsed]:
        future: Future[Parsed] = Future()
        with self._cond:
            if self.dead:
                raise WorkerGone("the parse worker died")
            job = next(self._ids)
            self._jobs[job] = future
        self.send(("parse", job, batch))  # a dead worker's reader fails the future
        return future

    def send(self, message: tuple[Any, ...]) -> None:
        with suppress(Closed):  # the reader sees the end of stream too: the worker is dead
            self.wire.send(message)

    def wait(self, until: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until `until()` or the worker's death; False only on a timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: until() or self.dead, timeout)

    def stop(self, kill: bool = False) -> None:
        """Close our end (the worker lets its lanes finish their rows and exits) and reap."""
        if kill:
            self.process.kill()
        self.wire.close()
        reap(self.process)


class _Job:
    """A batch the worker parses; calling it waits (or parses here if the worker died)."""

    def __init__(
        self,
        pool: ParsePool,
        batch: list[bytes],
        future: Future[Parsed] | None,
        worker: _Worker | None = None,
    ):
        self.pool = pool
        self.batch = batch
        self.future = future
        self.worker = worker

    def done(self) -> bool:
        return self.future is None or self.future.done()

    def behind(self) -> bool:
        """Whether the worker's lanes were more than SENDER_BEHIND seconds behind the
        queue when it answered: it has too much to do, the daemon should parse more."""
        return self.worker is not None and self.worker.lag > SENDER_BEHIND

    def __call__(self) -> Parsed:
        if self.future is not None:
            try:
                return self.future.result()
            except WorkerGone:
                log.warning("parse worker died; parsing this batch in-process")
                # Only the dead one goes: with batches parsed ahead, its successor may
                # already hold the next batch (and the outbox's lanes).
                self.pool._drop_dead()
        return parse_serial(self.batch, self.pool.rules, self.pool.model)


class ParsePool:
    """parse_async(raws) returns a job: call it to wait for the parsed batch."""

    def __init__(
        self,
        workers: int = 1,
        rules: RuleOverrides | None = None,
        model: str = "",
        sender: SenderSpec | None = None,
        started: StartedWorker | None = None,
    ) -> None:
        """`started`: the first worker, when the daemon started it early (adapters/process)."""
        self.model = model
        self.workers = max(1, workers)
        self.rules = rules
        # One sender at most (SQLite's feed hands rows out in one process): one worker only.
        self.sender = sender if sender and workers == 1 else None
        self._procs: list[_Worker] = []
        self._drains = 0
        self._started = started

    def _init(self) -> dict[str, Any]:
        root = logging.getLogger()
        formatter = root.handlers[0].formatter if root.handlers else None
        return {
            "parent": os.getpid(),
            "rules": self.rules,
            "model": self.model,
            "sender": self.sender,
            "log_level": root.getEffectiveLevel(),
            "log_format": formatter._fmt if formatter is not None else None,
        }

    def _worker(self) -> _Worker:
        """The live worker with the fewest batches in hand; dead ones are replaced."""
        self._drop_dead()
        while len(self._procs) < self.workers:
            started, self._started = self._started, None
            self._procs.append(_Worker(self._init(), started))
        return min(self._procs, key=lambda w: w.load)

    def _drop_dead(self) -> None:
        """Dead workers out of the pool, reaped; the live ones keep working."""
        for gone in [w for w in self._procs if w.dead]:
            self._procs.remove(gone)
            gone.stop()

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._procs if not w.dead]

    def _alive(self, timeout: float = 30.0) -> bool:
        """Whether a worker answers (started, initialised, its sender thread running)."""
        try:
            worker = self._worker()
        except (OSError, WorkerGone):
            return False
        worker.wait(lambda: worker.ready, timeout)  # still starting after that: alive
        if worker.dead:
            self._reset()
            return False
        return True

    def background(
        self,
        allowed: Callable[[], bool],
        fallback: Callable[[], AbstractContextManager[Callable[[], None]]],
    ) -> AbstractContextManager[Callable[[], None]]:
        """Send while the caller ingests: yields wake() to call after each commit. The
        worker's sender when there is one, else (or when the worker is gone) `fallback`."""
        if self.sender is None or not self._alive():
            return fallback()
        return self._remote(self._procs[0], allowed)

    @contextmanager
    def _remote(self, worker: _Worker, allowed: Callable[[], bool]) -> Iterator[Callable[[], None]]:
        def wake() -> None:
            worker.send(("wake", allowed()))  # not allowed: the lanes stop after their row

        wake()  # what is already due goes out too
        try:
            yield wake
        finally:
            if not allowed():
                worker.send(("allow", False))
            self._drains += 1
            started = time.monotonic()
            self._drain(worker, self._drains, allowed)
            waited = time.monotonic() - started
            # Every cycle of the daemon ends here: a line only when the wait was noticeable.
            log.log(
                logging.INFO if waited >= 0.5 else logging.DEBUG,
                "outbox: the worker's sender finished %.1f s after the drain",
                waited,
            )
            worker.send(("allow", False))

    def _drain(self, worker: _Worker, seq: int, allowed: Callable[[], bool]) -> None:
        """Wait until the worker has sent everything due (or is gone). Each second it is
        told again whether it may send: ownership lost meanwhile stops its lanes."""
        worker.send(("drain", seq))
        while not worker.wait(lambda: worker.drained >= seq, timeout=1.0):
            worker.send(("allow", allowed()))
        if worker.dead:
            log.warning("the worker's sender is gone; the daemon sends what is left")

    def parse_async(self, raws: Sequence[bytes]) -> _Job:
        batch = list(raws)
        worker: _Worker | None = None
        future: Future[Parsed] | None = None
        try:
            worker = self._worker()
            future = worker.parse(batch)
        except (WorkerGone, OSError):
            self._reset()
            worker = None
        return _Job(self, batch, future, worker)

    def _reset(self) -> None:
        procs, self._procs = self._procs, []
        for worker in procs:
            worker.stop(kill=not worker.dead)

    def close(self) -> None:
        if self._started is not None:  # started early and never used
            self._started.stop()
            self._started = None
        procs, self._procs = self._procs, []
        for worker in procs:
            worker.stop()
