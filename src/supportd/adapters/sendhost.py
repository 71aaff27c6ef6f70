"""The outbox's SMTP lanes in the worker process, while the daemon's main process ingests.

Why: profiling a 10,000-mail backlog (bench/ingest.py --spy) showed the main process as
the bottleneck. The lanes and their marks took 23 % of its GIL time. The worker process,
which only parses, left much of the second core idle. So the lanes now run in the worker,
on the outbox store that needs no SQLAlchemy (adapters/db/outbox), for 2.4 MiB more memory
there.

    daemon (main process)                    worker (adapters/parsepool)
    batch committed      --- "wake" ----->   sender thread: OutboxSender.send_due()
    drain finished       -- ("drain", n) ->  send_due() until nothing is due, then
                         <------ n -------   answers
    allowed (an Event) mirrors Runner.may_send; cleared, the lanes stop after their row.

Invariant 2 holds as in-process: each lane marks its row in its own commit right after the
server's 250, so a kill (of either process; the worker dies with the daemon) repeats at
most the row in flight on each connection. If the worker dies, its rows stay pending, and
the daemon's own sender (the periodic send_due after each cycle) sends them.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from supportd.adapters.db.outbox import OutboxConnections, OutboxDatabase
from supportd.adapters.process import limit_malloc_arenas
from supportd.adapters.smtp import SmtpTarget, SmtpTransport
from supportd.adapters.teammail import TeamMailSpec
from supportd.services.outbox import OutboxSender

log = logging.getLogger(__name__)

WAKE = "wake"


@dataclass(frozen=True)
class SenderSpec:
    """What the worker builds its sender from (plain values: it is pickled at spawn)."""

    database: OutboxDatabase
    smtp: SmtpTarget
    give_up_after: float  # seconds
    batch_size: int
    connections: int
    team_mail: TeamMailSpec  # writes deferred mail (notifications) when it is sent


class SenderChannel:
    """The queues between the daemon and the sender thread in its worker."""

    def __init__(self, spec: SenderSpec, context: Any) -> None:
        self.spec = spec
        self.commands = context.Queue()
        self.results = context.Queue()
        self.allowed = context.Event()
        root = logging.getLogger()
        self.log_level = root.getEffectiveLevel()
        formatter = root.handlers[0].formatter if root.handlers else None
        self.log_format = formatter._fmt if formatter is not None else None


def start_sender(channel: SenderChannel) -> None:
    """In the worker: log like the daemon, cap malloc arenas, start the sender thread."""
    limit_malloc_arenas()  # before the lanes' threads
    if channel.log_format is not None:
        logging.basicConfig(level=channel.log_level, format=channel.log_format)
    else:
        logging.basicConfig(level=channel.log_level)
    threading.Thread(target=_serve, args=(channel,), name="outbox", daemon=True).start()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _serve(channel: SenderChannel) -> None:
    spec = channel.spec
    sender = OutboxSender(
        OutboxConnections(spec.database).transaction,
        SmtpTransport(spec.smtp),
        _utcnow,
        give_up_after=timedelta(seconds=spec.give_up_after),
        batch_size=spec.batch_size,
        connections=spec.connections,
        render=spec.team_mail.build().render,
    )
    sender.allowed = channel.allowed.is_set
    while True:
        drains: list[int] = []
        command = channel.commands.get()
        while True:  # whatever queued meanwhile is served by the same send
            if command != WAKE:
                drains.append(command[1])
            try:
                command = channel.commands.get_nowait()
            except queue.Empty:
                break
        try:
            sender.send_due()
        except Exception:  # one bad round never stops the sender; the next one retries
            log.exception("outbox (worker) failed")
        for seq in drains:
            channel.results.put(seq)
