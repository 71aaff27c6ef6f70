"""Messages between the daemon and its worker: length-prefixed pickles over a socketpair.

Not multiprocessing's queues: they, and its spawn start, need its resource tracker, a third
process of 12 MiB for the semaphores they hold (issue 9's memory budget is 150 MB for the
whole desk). A socketpair needs nothing: when either end dies the other reads EOF.
Only the daemon and the worker it started hold the two ends, so unpickling trusts no one
new.
"""

from __future__ import annotations

import pickle
import socket
import struct
import threading
from contextlib import suppress
from typing import Any

_HEAD = struct.Struct("!Q")


class Closed(EOFError):
    """The other end is gone (exited, killed, or closed its end)."""


class Wire:
    """One end: send() from any thread, recv() from one."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = sock.makefile("rb")
        self._lock = threading.Lock()

    def send(self, message: Any) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            with self._lock:
                self.sock.sendall(_HEAD.pack(len(data)))
                self.sock.sendall(data)
        except OSError as exc:
            raise Closed(str(exc)) from exc

    def recv(self) -> Any:
        try:
            head = self._reader.read(_HEAD.size)
            if len(head) < _HEAD.size:
                raise Closed("end of stream")
            (size,) = _HEAD.unpack(head)
            data = self._reader.read(size)
        except (OSError, ValueError) as exc:  # ValueError: the file was closed meanwhile
            raise Closed(str(exc)) from exc
        if len(data) < size:
            raise Closed("end of stream inside a message")
        return pickle.loads(data)

    def close(self) -> None:
        with suppress(OSError):  # already gone
            self.sock.shutdown(socket.SHUT_RDWR)
        self._reader.close()
        self.sock.close()
