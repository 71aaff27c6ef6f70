"""The runner: one iteration, periodic work, a stop check, a wait (IDLE or poll), backoff.

SIGTERM stops fetching; the batch in flight commits (batches are bounded) and the
process exits 0. Restarting is systemd's job.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC
from types import FrameType

import sdnotify
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import DBAPIError

from supportd.bootstrap import Desk
from supportd.errors import LoginError, MailboxError
from supportd.services.ingest import IngestStats

log = logging.getLogger(__name__)
PERIODIC_SECONDS = 15


class _Notifier:
    """sd_notify through the sdnotify package, only when systemd gave us a socket."""

    def __init__(self) -> None:
        self._systemd: sdnotify.SystemdNotifier | None = None

    def notify(self, state: str) -> None:
        if not os.environ.get("NOTIFY_SOCKET"):
            return
        if self._systemd is None:
            self._systemd = sdnotify.SystemdNotifier()
        self._systemd.notify(state)

    def close(self) -> None:
        if self._systemd is not None:
            self._systemd.socket.close()
            self._systemd = None


class Runner:
    def __init__(self, desk: Desk) -> None:
        self.desk = desk
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.notifier = _Notifier()
        self.source = desk.make_source()
        # Periodic work besides polling: the outbox retries (and later the escalation scan).
        self.periodic: list[tuple[str, Callable[[], object]]] = [("outbox", desk.outbox.send_due)]

    def run_periodic(self) -> None:
        for name, job in self.periodic:
            try:
                job()
            except Exception:
                log.exception("periodic job %s failed", name)

    def run_once(self) -> IngestStats:
        """Drain all waiting mail, run the periodic work once (the outbox too), disconnect."""
        try:
            stats = self.desk.ingestor.drain(self.source, self.stop)
            self.run_periodic()
            return stats
        finally:
            self.source.close()

    def request_stop(self, *_: object) -> None:
        self.stop.set()
        self.wake.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: finishing the batch in flight, then stopping", signum)
            self.request_stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _watchdog_interval(self) -> float | None:
        usec = os.environ.get("WATCHDOG_USEC")
        return int(usec) / 2_000_000 if usec and usec.isdigit() else None

    def run_forever(self) -> None:
        settings = self.desk.settings.imap
        scheduler = BackgroundScheduler(timezone=UTC)
        scheduler.add_job(self.wake.set, "interval", seconds=settings.poll_interval, id="poll")
        for name, job in self.periodic:
            scheduler.add_job(
                job, "interval", seconds=PERIODIC_SECONDS, id=name, max_instances=1, coalesce=True
            )
        scheduler.start()
        self.notifier.notify("READY=1")
        watchdog = self._watchdog_interval()
        first_backoff = min(1.0, settings.max_backoff)
        backoff = first_backoff
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    self.wake.clear()
                    stats = self.desk.ingestor.drain(self.source, self.stop)
                    if stats.stored:  # acknowledgements go out right away, not at the next tick
                        self.run_periodic()
                    if stats.stored or stats.quarantined or stats.duplicates:
                        log.info(
                            "stored %d, duplicates %d, quarantined %d, new tickets %d",
                            stats.stored,
                            stats.duplicates,
                            stats.quarantined,
                            stats.new_tickets,
                        )
                    backoff = first_backoff
                    self.notifier.notify("WATCHDOG=1")
                    self.notifier.notify(f"STATUS=idle; last cycle stored {stats.stored}")
                    if self.stop.is_set():
                        break
                    wait = settings.poll_interval
                    if watchdog:
                        wait = min(wait, watchdog)
                    # Polling: the snooze subtracts the iteration's own time; IDLE waits whole.
                    if not self.source.supports_idle():
                        wait = max(0.0, wait - (time.monotonic() - started))
                    self.source.wait(wait, self.wake)
                except (MailboxError, DBAPIError) as exc:
                    if isinstance(exc, LoginError):
                        log.error("%s (retrying in %.1f s)", exc, backoff)
                    else:
                        log.error("%s (reconnecting in %.1f s)", exc, backoff)
                    self.notifier.notify(f"STATUS=retrying: {str(exc)[:200]}")
                    self.source.close()
                    self.stop.wait(backoff)
                    backoff = min(backoff * 2, settings.max_backoff)
        finally:
            self.notifier.notify("STOPPING=1")
            self.notifier.close()
            scheduler.shutdown(wait=True)
            self.source.close()
        log.info("stopped")
