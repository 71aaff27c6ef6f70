"""The outbox's SMTP lanes in the worker process, while the daemon's main process ingests.

Why: profiling a 10,000-mail backlog (bench/ingest.py --spy) showed the main process as
the bottleneck. The lanes and their marks took 23 % of its GIL time. The worker process,
which only parses, left much of the second core idle. So the lanes now run in the worker,
on the outbox store that needs no SQLAlchemy (adapters/db/outbox), for 2.4 MiB more memory
there.

    daemon (main process)                     worker (adapters/worker)
    batch committed    -- ("wake", allowed) ->  sender thread: OutboxSender.send_due()
    drain finished     -- ("drain", n) ------>  send_due() until nothing is due, then
                       <-- ("drained", n) ----  answers
    ("allow", False): the lanes stop after the row in flight (Runner.may_send said no).

Invariant 2 holds as in-process: each lane marks its row in its own commit right after the
server's 250, so a kill (of either process; the worker dies with the daemon) repeats at
most the row in flight on each connection. If the worker dies, its rows stay pending, and
the daemon's own sender (the periodic send_due after each cycle) sends them.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from supportd.adapters.db.outbox import OutboxConnections, OutboxDatabase
from supportd.adapters.smtp import SmtpTarget, SmtpTransport
from supportd.adapters.teammail import TeamMailSpec
from supportd.services.outbox import OutboxSender

log = logging.getLogger(__name__)

WAKE = "wake"


@dataclass(frozen=True)
class SenderSpec:
    """What the worker builds its sender from (plain values: it is pickled to the worker)."""

    database: OutboxDatabase
    smtp: SmtpTarget
    give_up_after: float  # seconds
    batch_size: int
    connections: int
    team_mail: TeamMailSpec  # writes deferred mail (notifications) when it is sent


def _utcnow() -> datetime:
    return datetime.now(UTC)


class SenderHost:
    """In the worker: the sender thread, and what the daemon tells it."""

    def __init__(self, spec: SenderSpec, report: Callable[[int], None]) -> None:
        self.spec = spec
        self.report = report  # a drain request is answered
        self.allowed = threading.Event()
        self.idle = threading.Event()
        self.idle.set()
        self._commands: queue.Queue[str | int] = queue.Queue()
        self._sender: OutboxSender | None = None
        threading.Thread(target=self._serve, name="outbox", daemon=True).start()

    def wake(self, allowed: bool) -> None:
        self.allow(allowed)
        self._commands.put(WAKE)

    def allow(self, allowed: bool) -> None:
        if allowed:
            self.allowed.set()
        else:
            self.allowed.clear()  # the lanes stop after the row in flight

    def drain(self, seq: int) -> None:
        self._commands.put(seq)

    def lag(self) -> float:
        """Seconds the lanes are behind the queue (OutboxSender.lag; 0 between rounds)."""
        sender = self._sender
        return sender.lag if sender is not None else 0.0

    def stop(self, timeout: float) -> None:
        """Let the row in flight on each lane finish (and be marked), send nothing more."""
        self.allowed.clear()
        self.idle.wait(timeout)

    def _serve(self) -> None:
        spec = self.spec
        try:
            sender = OutboxSender(
                OutboxConnections(spec.database).transaction,
                SmtpTransport(spec.smtp),
                _utcnow,
                give_up_after=timedelta(seconds=spec.give_up_after),
                batch_size=spec.batch_size,
                connections=spec.connections,
                render=spec.team_mail.build().render,
            )
        except Exception:  # no sender here: the worker exits, the daemon sends itself
            log.exception("outbox (worker): cannot start the sender; exiting")
            os._exit(1)
        sender.allowed = self.allowed.is_set
        self._sender = sender
        while True:
            drains: list[int] = []
            command = self._commands.get()
            self.idle.clear()
            while True:  # whatever queued meanwhile is served by the same send
                if command != WAKE:
                    drains.append(int(command))
                try:
                    command = self._commands.get_nowait()
                except queue.Empty:
                    break
            try:
                sender.send_due()
            except Exception:  # one bad round never stops the sender; the next one retries
                log.exception("outbox (worker) failed")
            finally:
                self.idle.set()
            for seq in drains:
                self.report(seq)
