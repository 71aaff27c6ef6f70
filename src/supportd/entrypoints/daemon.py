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
from sqlalchemy.exc import DBAPIError

from supportd.bootstrap import Desk
from supportd.errors import FencedError, LoginError, MailboxError, NotOwnerError
from supportd.services.ingest import IngestStats

log = logging.getLogger(__name__)
PERIODIC_SECONDS = 15
STANDBY_POLL = 1.0  # seconds between a standby's attempts to take the mailbox
BURST_LIMIT = 1000  # run --once: iterations at most (mail arriving faster never ends it)


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
        # One owner per mailbox: only the holder of this lock fetches and sends.
        self.lock = desk.make_lock(self.source.key)
        self.owner = False
        self._lost = threading.Event()
        # One iteration does everything: fetch and ingest, the escalation scan, the outbox
        # (in that order, so what a cycle queues goes out in the same cycle). Timers only
        # wake the loop: outbox retries and the scan run on the loop's own thread.
        self.timers: list[tuple[str, float]] = [
            ("outbox", PERIODIC_SECONDS),
            ("escalation", desk.settings.sla.scan_interval),
        ]

    def may_send(self) -> bool:
        return self.owner and not self._lost.is_set() and not self.stop.is_set()

    def periodic(self) -> None:
        """The scan and the outbox, each failure logged (one bad job never stops the loop)."""
        jobs: list[tuple[str, Callable[[], object]]] = []
        if self.desk.escalator is not None:
            jobs.append(("escalation scan", self.desk.escalator.scan))
        jobs.append(("outbox", self.desk.outbox.send_due))
        for name, job in jobs:
            if not self.may_send():
                return
            try:
                job()
            except Exception:
                log.exception("%s failed", name)

    def iteration(self) -> IngestStats:
        """One cycle of the loop: fetch and ingest all waiting mail, scan, send.

        While the mail is ingested, the outbox sends what each committed batch queued (a
        backlog's acknowledgements go out as it drains, not after).
        """
        ingestor = self.desk.ingestor
        with self.desk.sending(self.may_send) as wake:
            ingestor.on_commit = wake
            try:
                stats = ingestor.drain(self.source, self.stop)
            finally:
                ingestor.on_commit = lambda: None
        self.periodic()
        if stats.stored or stats.quarantined or stats.duplicates:
            log.info(
                "stored %d, duplicates %d, quarantined %d, new tickets %d",
                stats.stored,
                stats.duplicates,
                stats.quarantined,
                stats.new_tickets,
            )
        return stats

    def acquire(self) -> bool:
        """Take the mailbox if nobody holds it; start a new fencing epoch."""
        if not self.lock.try_acquire():
            return False
        try:
            epoch = self.desk.ingestor.claim(self.source.key, self.lock.who)
        except Exception:
            self.lock.release()
            raise
        self._lost.clear()
        self.owner = True
        log.info("%s: this process owns the mailbox (epoch %d)", self.source.key, epoch)
        return True

    def release(self, why: str = "") -> None:
        if why:
            log.error(
                "%s: %s; stopped fetching and sending, waiting as a standby",
                self.source.key,
                why,
            )
        self.owner = False
        self.source.close()
        self.lock.release()

    def heartbeat(self) -> None:
        """Scheduler job: notice a lost lock connection even while the loop idles."""
        if self.owner and not self._lost.is_set() and not self.lock.alive():
            self._lost.set()
            self.wake.set()

    def run_once(self) -> IngestStats:
        """The loop in burst mode: iterations until a cycle finds no new mail, then exit.

        Raises NotOwnerError, touching nothing, when another process owns the mailbox.
        """
        if not self.acquire():
            holder = self.lock.owner() or "another process"
            raise NotOwnerError(f"{self.source.key} is owned by {holder}; not touching it")
        total = IngestStats()
        self.desk.outbox.allowed = self.may_send
        try:
            for _ in range(BURST_LIMIT):
                stats = self.iteration()
                total.add(stats)
                if self.stop.is_set() or not (
                    stats.stored or stats.duplicates or stats.quarantined
                ):
                    break
            return total
        finally:
            self.release()
            self.desk.outbox.allowed = lambda: True

    def _standby(self, announced: bool) -> bool:
        """One standby step: try to take the mailbox, else wait a little. True when owner."""
        try:
            if self.acquire():
                return True
            if not announced:
                holder = self.lock.owner() or "another process"
                log.warning(
                    "%s is owned by %s; waiting as a standby (taking over within %s s of its end)",
                    self.source.key,
                    holder,
                    f"{self.desk.settings.ha.takeover_seconds:g}",
                )
                self.notifier.notify(f"STATUS=standby: mailbox owned by {holder}"[:200])
        except Exception as exc:  # database down: keep trying, say why
            log.error("cannot take the mailbox lock: %s: %s", type(exc).__name__, exc)
        self.notifier.notify("WATCHDOG=1")
        self.stop.wait(min(STANDBY_POLL, self.desk.settings.ha.takeover_seconds / 4))
        return False

    def request_stop(self, *_: object) -> None:
        self.stop.set()
        self.wake.set()

    def _bounded_stop(self) -> None:
        """After SIGTERM: the message and outbox item in flight get daemon.stop_timeout."""
        limit = self.desk.settings.daemon.stop_timeout

        def give_up() -> None:
            log.error("still busy %s s after the stop signal; exiting now", f"{limit:g}")
            logging.shutdown()
            os._exit(0)

        timer = threading.Timer(limit, give_up)
        timer.daemon = True
        timer.start()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: finishing the batch in flight, then stopping", signum)
            self.request_stop()
            self._bounded_stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _watchdog_interval(self) -> float | None:
        usec = os.environ.get("WATCHDOG_USEC")
        return int(usec) / 2_000_000 if usec and usec.isdigit() else None

    def run_forever(self) -> None:
        settings = self.desk.settings.imap
        # Imported here: run --once needs no timers (70 ms of its start-up).
        from apscheduler.schedulers.background import BackgroundScheduler

        # Its INFO lines are two per timer run ("Running job", "executed successfully"):
        # 17,000 a day in the journal for the heartbeat alone. Its warnings still show.
        if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
            logging.getLogger("apscheduler").setLevel(logging.WARNING)
        scheduler = BackgroundScheduler(timezone=UTC)
        scheduler.add_job(self.wake.set, "interval", seconds=settings.poll_interval, id="poll")
        for name, every in self.timers:
            scheduler.add_job(self.wake.set, "interval", seconds=every, id=name, coalesce=True)
        beat = max(1.0, self.desk.settings.ha.takeover_seconds / 3)
        scheduler.add_job(self.heartbeat, "interval", seconds=beat, id="heartbeat", coalesce=True)
        scheduler.start()
        self.notifier.notify("READY=1")
        watchdog = self._watchdog_interval()
        first_backoff = min(1.0, settings.max_backoff)
        backoff = first_backoff
        announced = False
        self.desk.outbox.allowed = self.may_send  # a standby or a fenced owner sends nothing
        try:
            while not self.stop.is_set():
                if self._lost.is_set() and self.owner:
                    self.release("the mailbox lock is lost")
                if not self.owner:
                    if not self._standby(announced):
                        announced = True
                    continue
                announced = False
                started = time.monotonic()
                try:
                    self.wake.clear()
                    stats = self.iteration()
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
                except FencedError as exc:
                    self.release(str(exc))
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
            self.release()
            self.desk.outbox.allowed = lambda: True
        log.info("stopped")
