"""The worker process: `python -m supportd.adapters.worker FD`, started by adapters/parsepool.

It parses the batches the daemon sends and, with a sender spec, runs the outbox's lanes
(adapters/sendhost). It speaks over the socket FD (adapters/wire) and lives only as long as
the daemon: PDEATHSIG on Linux, a parent poll elsewhere, and an end of stream on the socket.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from typing import Any

from supportd.adapters.parsepool import parse_serial
from supportd.adapters.process import tune_malloc
from supportd.adapters.sendhost import SenderHost
from supportd.adapters.wire import Closed, Wire

log = logging.getLogger(__name__)
STOP_TIMEOUT = 10.0  # seconds the lanes get to finish their rows when the daemon closes


def _die_with_parent(parent: int) -> None:
    """The worker exits when the daemon that started it dies."""
    # After a kill -9 of the daemon outside systemd, a worker blocked on its socket would
    # notice the end of stream too, but a busy one only later: PDEATHSIG ends it at once.
    # It fires when the *thread* that started the worker exits; the daemon starts it from
    # its main thread. The ppid poll covers non-Linux.
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


def _parse_jobs(
    jobs: queue.Queue[tuple[int, list[bytes]]],
    wire: Wire,
    init: Any,
    sender: SenderHost | None,
) -> None:
    while True:
        job, raws = jobs.get()
        try:
            parsed = parse_serial(raws, init["rules"], init["model"])
            # With the batch, how far behind this process's lanes are (ParseShare).
            wire.send(("parsed", job, parsed, sender.lag() if sender is not None else 0.0))
        except Closed:
            return
        except Exception:  # (a model file that cannot be read, a result that cannot be
            # pickled): a worker that cannot parse must not leave the daemon waiting for
            # an answer. It exits; the daemon sees the end of stream and parses itself.
            log.exception("supportd worker: cannot parse a batch; exiting")
            os._exit(1)


def serve(wire: Wire) -> None:
    kind, init = wire.recv()
    if kind != "init":
        raise SystemExit(f"supportd worker: expected init, got {kind!r}")
    _die_with_parent(init["parent"])
    # systemd's stop signals the whole cgroup: the worker waits for the daemon instead,
    # which stops after its batch and closes its end; then the lanes finish their rows.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tune_malloc()  # before the lanes' threads
    logging.basicConfig(level=init["log_level"], format=init["log_format"])
    sender = None
    if init["sender"] is not None:
        sender = SenderHost(init["sender"], lambda seq: wire.send(("drained", seq)))
    jobs: queue.Queue[tuple[int, list[bytes]]] = queue.Queue()
    threading.Thread(
        target=_parse_jobs, args=(jobs, wire, init, sender), name="parse", daemon=True
    ).start()
    wire.send(("ready", os.getpid()))
    while True:  # control messages are handled at once, even while a batch is parsed
        try:
            message = wire.recv()
        except Closed:
            break
        kind = message[0]
        if kind == "parse":
            jobs.put((message[1], message[2]))
        elif sender is not None and kind == "wake":
            sender.wake(message[1])
        elif sender is not None and kind == "allow":
            sender.allow(message[1])
        elif sender is not None and kind == "drain":
            sender.drain(message[1])
    if sender is not None:  # the daemon closed its end (or died): finish the rows in flight
        sender.stop(STOP_TIMEOUT)


def main() -> None:
    wire = Wire(socket.socket(fileno=int(sys.argv[1])))
    code = 1
    try:
        serve(wire)
        code = 0
    except Closed:
        pass  # the daemon went away before saying anything
    except Exception:
        log.exception("supportd worker failed")
    finally:
        os._exit(code)  # daemon threads (lanes, parsing) end here, without teardown


if __name__ == "__main__":
    main()
