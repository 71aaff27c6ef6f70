"""A fault-injecting TCP proxy between an IMAP client (the daemon) and the private Dovecot.

Threads only, every thread a daemon thread, every socket on 127.0.0.1. Each client
connection is a session with its own upstream connection and two pump threads
(client -> server and server -> client). Faults:

- ``close_all()`` / ``bye_and_close()``: end every current connection with a FIN to the
  client (optionally after an untagged ``* BYE``), as a server restart would.
- ``stall()`` / ``resume()``: stop forwarding in both directions, for current connections
  *and* for connections accepted while stalled (they do not even get the greeting); the
  client sees silence, neither data nor FIN. ``resume()`` forwards everything held back.
- ``refuse(True)``: new connections are accepted and immediately closed (server down).
- ``on_command(pattern, callback, when=...)``: run ``callback()`` when the client sends a
  matching command, before forwarding it (``when="command"``) or after the server's tagged
  completion arrived but before it is forwarded to the client (``when="response"``).
- ``stale()``: the current sessions behave like Cyrus IMAP after the selected folder was
  deleted and recreated by someone else: the session keeps answering as if the old, empty
  folder were still selected, while STATUS (and the other ``passthrough`` commands) go to a
  fresh side connection and show the real server state.

Client input is parsed line by line including literals (``{n}`` and LITERAL+ ``{n+}``), so a
literal's content is never taken for a command. Server output is parsed the same way; only
the tag of each response matters.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

LOOPBACK = "127.0.0.1"
POLL_MS = 200  # how often blocked pumps look at their flags
DRAIN_SECONDS = 1.0  # after a FIN, read (and drop) what the client still sends, then close
SIDE_TIMEOUT = 10.0  # stale-mode side connection: connect and response timeout
BOUNDARY_WAIT = 2.0  # injected lines wait this long for the server stream to reach a boundary
LOG_LIMIT = 2000

DEFAULT_BYE = b"* BYE Server shutting down\r\n"
DEFAULT_PASSTHROUGH = rb"^(STATUS|LOGOUT|CAPABILITY)\b"

_LITERAL_END = re.compile(rb"\{(\d+)(\+?)\}\r?\n\Z")
_SYNC_LITERAL_END = re.compile(rb"\{(\d+)\}(\r?\n)\Z")


# --------------------------------------------------------------------------- parsing


@dataclass
class Piece:
    """A piece of an IMAP stream: a whole line (ending in LF) or a chunk of literal data."""

    kind: Literal["line", "literal"]
    data: bytes
    first: bool = False  # a line that begins a command / response
    last: bool = False  # a line that ends it (no literal follows)
    sync: bool = False  # the line ends with a synchronizing literal announcement {n}

    def nonsync(self) -> bytes:
        """The piece with a synchronizing literal announcement turned into LITERAL+."""
        if not self.sync:
            return self.data
        return _SYNC_LITERAL_END.sub(rb"{\1+}\2", self.data)


class Splitter:
    """Splits an IMAP byte stream into lines and literal data, tracking command boundaries."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._literal = 0
        self._in_unit = False

    @property
    def at_boundary(self) -> bool:
        return not self._in_unit and not self._buf

    def feed(self, data: bytes) -> list[Piece]:
        self._buf += data
        out: list[Piece] = []
        while self._buf:
            if self._literal:
                chunk = bytes(self._buf[: self._literal])
                del self._buf[: len(chunk)]
                self._literal -= len(chunk)
                out.append(Piece("literal", chunk))
                continue
            end = self._buf.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buf[: end + 1])
            del self._buf[: end + 1]
            match = _LITERAL_END.search(line)
            out.append(
                Piece(
                    "line",
                    line,
                    first=not self._in_unit,
                    last=match is None,
                    sync=bool(match and not match.group(2)),
                )
            )
            self._in_unit = match is not None
            self._literal = int(match.group(1)) if match else 0
        return out


def split_command(line: bytes) -> tuple[bytes, bytes]:
    """(tag, text after the tag without the line ending) of a command's first line."""
    tag, _, text = line.rstrip(b"\r\n").partition(b" ")
    return tag, text


def verb_of(text: bytes) -> bytes:
    """b"UID FETCH" for b"UID FETCH 1:* (FLAGS)", b"NOOP" for b"noop"."""
    words = text.split(None, 2)
    if not words:
        return b""
    if words[0].upper() == b"UID" and len(words) > 1:
        return b"UID " + words[1].upper()
    return words[0].upper()


# --------------------------------------------------------------------------- hooks


@dataclass(eq=False)
class Hook:
    """A command hook; ``calls`` counts finished callbacks, ``wait()`` waits for the first."""

    pattern: re.Pattern[bytes]
    callback: Callable[[], object]
    when: Literal["command", "response"]
    once: bool = True
    calls: int = 0
    errors: list[BaseException] = field(default_factory=list)
    called: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float) -> bool:
        return self.called.wait(timeout)


class _SideError(Exception):
    pass


# --------------------------------------------------------------------------- proxy


class FaultProxy:
    """Listens on 127.0.0.1:``port`` and forwards to ``upstream_host:upstream_port``.

    The listening socket is bound in the constructor (so ``port`` is known at once): always
    ``stop()`` it, or use it as a context manager. ``log`` holds what happened (client command
    lines with LOGIN arguments hidden, faults, hook calls, dropped lines) for failure messages.
    """

    def __init__(self, upstream_port: int, upstream_host: str = LOOPBACK) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.log: list[str] = []
        self.errors: list[BaseException] = []  # exceptions raised by hook callbacks
        self.accepted = 0  # every accepted connection, refused ones included
        self.refused = 0
        self.side_connections = 0
        self._lock = threading.Lock()
        self._accepted_cond = threading.Condition(self._lock)
        self._stall_cond = threading.Condition()
        self._stalled = False
        self._refusing = False
        self._stopping = threading.Event()
        self._hooks: list[Hook] = []
        self._sessions: list[_Session] = []  # current (not yet ended) sessions
        self._all_sessions: list[_Session] = []  # not yet closed, for stop()
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self._started = False

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> FaultProxy:
        if self._started:
            return self
        self._started = True
        self._listener.listen(64)
        self._listener.settimeout(POLL_MS / 1000)
        self._spawn(self._accept_loop, "faultproxy-accept")
        self._log(f"listening on {LOOPBACK}:{self.port} -> {self.upstream[0]}:{self.upstream[1]}")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every socket and join the threads (each at most until ``timeout``)."""
        self._stopping.set()
        with self._stall_cond:
            self._stall_cond.notify_all()
        with self._lock:
            sessions = list(self._all_sessions)
        for session in sessions:
            session.end("proxy stopped")
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            self._log(f"threads still alive after stop: {alive}")
        self._listener.close()
        for session in sessions:
            session.close_sockets()
        if self._started:
            self._log("stopped")

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- observation

    @property
    def connections(self) -> int:
        """Client connections currently open (not ended by a fault or either side)."""
        with self._lock:
            return len(self._sessions)

    def wait_for_connections(self, n: int, timeout: float) -> bool:
        """True once at least ``n`` connections were accepted in total (refused ones count)."""
        with self._accepted_cond:
            return self._accepted_cond.wait_for(lambda: self.accepted >= n, timeout)

    def log_text(self) -> str:
        with self._lock:
            return "\n".join(self.log)

    def _log(self, message: str) -> None:
        with self._lock:
            self.log.append(f"{time.monotonic():.3f} {message}")
            if len(self.log) > LOG_LIMIT:
                del self.log[: len(self.log) - LOG_LIMIT]

    # ----------------------------------------------------------------- faults

    def close_all(self) -> int:
        """End every current connection with a FIN to the client; returns how many."""
        sessions = self._take_sessions()
        for session in sessions:
            session.end("close_all")
        self._log(f"close_all: {len(sessions)} connection(s)")
        return len(sessions)

    def bye_and_close(self, text: bytes = DEFAULT_BYE) -> int:
        """Send ``text`` (an untagged line) to every current client, then end as close_all."""
        sessions = self._take_sessions()
        for session in sessions:
            session.end("bye_and_close", farewell=text)
        self._log(f"bye_and_close: {len(sessions)} connection(s)")
        return len(sessions)

    def stall(self) -> None:
        """Forward nothing in either direction (also on connections accepted meanwhile)."""
        with self._stall_cond:
            self._stalled = True
        self._log("stall")

    def resume(self) -> None:
        with self._stall_cond:
            self._stalled = False
            self._stall_cond.notify_all()
        self._log("resume")

    @property
    def stalled(self) -> bool:
        return self._stalled

    def refuse(self, flag: bool = True) -> None:
        """While True, new connections are accepted and closed at once (existing ones stay)."""
        with self._lock:
            self._refusing = flag
        self._log(f"refuse({flag})")

    def stale(self, passthrough: bytes = DEFAULT_PASSTHROUGH) -> int:
        """Make the current sessions stale (see the module doc); returns how many.

        Connections accepted later are normal. ``passthrough`` is a case-insensitive regex on
        the command text after the tag; matching commands go to a side connection logged in
        with the LOGIN command this client connection sent earlier.
        """
        pattern = re.compile(passthrough, re.IGNORECASE)
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.go_stale(pattern)
        self._log(f"stale: {len(sessions)} connection(s)")
        return len(sessions)

    def on_command(
        self,
        pattern: bytes,
        callback: Callable[[], object],
        when: Literal["command", "response"] = "response",
        once: bool = True,
    ) -> Hook:
        """Call ``callback()`` for client commands whose text after the tag matches ``pattern``.

        ``when="command"``: before the command is forwarded. ``when="response"``: after the
        server's tagged completion of that command arrived, before it is forwarded to the
        client. Only the command's first line (up to a literal) is matched. With ``once`` the
        hook is used up by its first matching command.
        """
        if when not in ("command", "response"):
            raise ValueError(f"when must be 'command' or 'response', not {when!r}")
        hook = Hook(re.compile(pattern, re.IGNORECASE), callback, when, once)
        with self._lock:
            self._hooks.append(hook)
        return hook

    def clear_hooks(self) -> None:
        with self._lock:
            self._hooks.clear()

    # ----------------------------------------------------------------- internals

    def _take_sessions(self) -> list[_Session]:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        return sessions

    def _forget(self, session: _Session) -> None:
        with self._lock:
            if session in self._sessions:
                self._sessions.remove(session)

    def _closed(self, session: _Session) -> None:
        with self._lock:
            if session in self._all_sessions:
                self._all_sessions.remove(session)

    def _spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()
        return thread

    def _wait_unstalled(self, session: _Session) -> bool:
        """Block while stalled; False when the session or the proxy is ending meanwhile."""
        with self._stall_cond:
            while self._stalled and not session.ending and not self._stopping.is_set():
                self._stall_cond.wait(POLL_MS / 1000)
        return not session.ending and not self._stopping.is_set()

    def _match_hooks(self, text: bytes) -> list[Hook]:
        with self._lock:
            matched = [hook for hook in self._hooks if hook.pattern.search(text)]
            for hook in matched:
                if hook.once:
                    self._hooks.remove(hook)
        return matched

    def _fire(self, hook: Hook, context: str) -> None:
        self._log(f"hook {hook.pattern.pattern!r} ({hook.when}) fires: {context}")
        try:
            hook.callback()
        except BaseException as exc:  # reported, never kills a pump thread
            hook.errors.append(exc)
            with self._lock:
                self.errors.append(exc)
            self._log(f"hook callback raised: {''.join(traceback.format_exception(exc))}")
        finally:
            hook.calls += 1
            hook.called.set()

    def _accept_loop(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    conn, peer = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError as exc:
                    if not self._stopping.is_set():
                        self._log(f"accept failed: {exc!r}")
                    return
                conn.setblocking(True)
                with self._accepted_cond:
                    self.accepted += 1
                    number = self.accepted
                    refusing = self._refusing
                    if refusing:
                        self.refused += 1
                    self._accepted_cond.notify_all()
                if refusing or self._stopping.is_set():
                    self._log(f"#{number} from {peer[1]}: refused")
                    _fin_close(conn)
                    continue
                self._connect(conn, number, peer[1])
        except BaseException as exc:  # never an unhandled thread exception
            self._log(f"accept loop died: {exc!r}")

    def _connect(self, conn: socket.socket, number: int, peer_port: int) -> None:
        try:
            source = (LOOPBACK, 0) if self.upstream[0] == LOOPBACK else None
            upstream = socket.create_connection(self.upstream, timeout=5, source_address=source)
            upstream.settimeout(None)
        except OSError as exc:
            self._log(f"#{number} from {peer_port}: upstream connect failed: {exc!r}")
            _fin_close(conn)
            return
        for sock in (conn, upstream):  # forward each write at once, as a direct link would
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        session = _Session(self, number, conn, upstream)
        with self._lock:
            self._sessions.append(session)
            self._all_sessions.append(session)
        self._log(f"#{number} from {peer_port}: connected")
        session.start()


def _loggable(verb: bytes, text: bytes) -> str:
    if verb in (b"LOGIN", b"AUTHENTICATE"):
        return verb.decode() + " ..."
    return text[:100].decode(errors="replace")


def _fin_close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
    sock.close()


def _shutdown(sock: socket.socket | None, how: int) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(how)


@dataclass
class _Command:
    """The client command being received: how it is handled and what was collected."""

    mode: Literal["forward", "stale", "done"]
    tag: bytes = b""
    text: bytes = b""
    record: bool = False  # LOGIN: keep its bytes for the stale side connection
    chunks: list[bytes] = field(default_factory=list)


class _Session:
    """One client connection, its upstream connection and its two pump threads."""

    def __init__(
        self, proxy: FaultProxy, number: int, client: socket.socket, upstream: socket.socket
    ) -> None:
        self.proxy = proxy
        self.number = number
        self.client = client
        self.upstream = upstream
        self.side: socket.socket | None = None
        self.side_splitter = Splitter()
        self.lock = threading.Lock()  # protocol state below
        self.pending: dict[bytes, bytes] = {}  # tag -> verb of commands forwarded upstream
        self.response_hooks: dict[bytes, list[Hook]] = {}
        self.idle_tag: bytes | None = None  # client is in IDLE: its next line is DONE
        self.auth_tag: bytes | None = None  # client lines are AUTHENTICATE data meanwhile
        self.login: bytes | None = None
        self.stale: re.Pattern[bytes] | None = None  # passthrough pattern while stale
        # Writes to the client, and where the server -> client stream stands.
        self.send = threading.Condition()
        self.server_in_unit = False
        self.server_dropping = False
        self.dropped = 0
        self._ending = threading.Event()
        self._drain_until = 0.0
        self._exited = 0
        self._closed = False

    @property
    def ending(self) -> bool:
        return self._ending.is_set()

    def log(self, message: str) -> None:
        self.proxy._log(f"#{self.number}: {message}")

    def start(self) -> None:
        self.proxy._spawn(self._client_pump, f"faultproxy-{self.number}-c2s")
        self.proxy._spawn(self._server_pump, f"faultproxy-{self.number}-s2c")

    def go_stale(self, passthrough: re.Pattern[bytes]) -> None:
        with self.lock:
            self.stale = passthrough

    # ----------------------------------------------------------------- ending

    def end(self, reason: str, farewell: bytes | None = None) -> None:
        """FIN to the client (after ``farewell``), drop upstream; idempotent."""
        with self.lock:
            if self._ending.is_set():
                return
            self._drain_until = time.monotonic() + DRAIN_SECONDS
            self._ending.set()
        self.proxy._forget(self)
        self.log(f"ending: {reason}")
        locked = self.send.acquire(timeout=BOUNDARY_WAIT)
        try:
            if farewell is not None:
                if locked:
                    self.send.wait_for(lambda: not self.server_in_unit, BOUNDARY_WAIT)
                try:
                    self.client.sendall(farewell)
                    self.log(f"sent {farewell!r}")
                except OSError as exc:
                    self.log(f"farewell not sent: {exc!r}")
            how = socket.SHUT_RDWR if self.proxy._stopping.is_set() else socket.SHUT_WR
            _shutdown(self.client, how)
        finally:
            if locked:
                self.send.release()
        _shutdown(self.upstream, socket.SHUT_RDWR)
        _shutdown(self.side, socket.SHUT_RDWR)
        with self.proxy._stall_cond:
            self.proxy._stall_cond.notify_all()

    def _pump_done(self) -> None:
        with self.lock:
            self._exited += 1
            last = self._exited == 2
        if last:
            self.close_sockets()

    def close_sockets(self) -> None:
        with self.lock:
            if self._closed:
                return
            self._closed = True
        for sock in (self.client, self.upstream, self.side):
            if sock is not None:
                sock.close()
        self.proxy._closed(self)

    # ----------------------------------------------------------------- writing

    def write_client(self, data: bytes) -> None:
        """Send a whole line (or lines) of our own to the client, between server responses."""
        with self.send:
            self.send.wait_for(lambda: not self.server_in_unit or self.ending, BOUNDARY_WAIT)
            self.client.sendall(data)

    # ----------------------------------------------------------------- client -> server

    def _client_pump(self) -> None:
        splitter = Splitter()
        command: _Command | None = None
        poller = select.poll()
        poller.register(self.client, select.POLLIN)
        try:
            while not self.proxy._stopping.is_set():
                if self.ending and time.monotonic() > self._drain_until:
                    break
                if not poller.poll(POLL_MS):
                    continue
                data = self.client.recv(65536)
                if not data:
                    self.log("client closed")
                    break
                if self.ending:
                    continue  # draining after our FIN
                for piece in splitter.feed(data):
                    if not self.proxy._wait_unstalled(self):
                        break
                    if piece.first or command is None:
                        command = self._begin_command(piece)
                    self._client_piece(command, piece)
        except OSError as exc:
            if not self.ending:
                self.log(f"client side error: {exc!r}")
        except BaseException as exc:
            self.log(f"client pump died: {''.join(traceback.format_exception(exc))}")
        finally:
            self.end("client side finished")
            self._pump_done()

    def _begin_command(self, piece: Piece) -> _Command:
        tag, text = split_command(piece.data)
        with self.lock:
            idle_tag, self.idle_tag = self.idle_tag, None
            in_auth = self.auth_tag is not None and self.auth_tag in self.pending
            stale = self.stale
            if idle_tag is not None and stale is not None:
                self.pending.pop(idle_tag, None)
        if idle_tag is not None:  # the line is DONE
            if stale is not None:
                return _Command("done", idle_tag)
            return _Command("forward")
        if in_auth:
            return _Command("forward")
        if stale is not None:
            return _Command("stale", tag, text)
        verb = verb_of(text)
        self.log(f"C: {tag.decode(errors='replace')} {_loggable(verb, text)}")
        hooks = self.proxy._match_hooks(text)
        with self.lock:
            self.pending[tag] = verb
            responses = [hook for hook in hooks if hook.when == "response"]
            if responses:
                self.response_hooks.setdefault(tag, []).extend(responses)
            if verb == b"IDLE":
                self.idle_tag = tag
            elif verb == b"AUTHENTICATE":
                self.auth_tag = tag
        for hook in hooks:
            if hook.when == "command":
                self.proxy._fire(hook, f"#{self.number} before forwarding {tag!r} {text!r}")
        return _Command("forward", tag, text, record=verb == b"LOGIN")

    def _client_piece(self, command: _Command, piece: Piece) -> None:
        if command.mode == "forward":
            if command.record:
                command.chunks.append(piece.nonsync())
                if piece.last:
                    self.login = b"".join(command.chunks)
            self.upstream.sendall(piece.data)
            return
        command.chunks.append(piece.nonsync())
        if piece.sync:
            self.write_client(b"+ Ready for literal data\r\n")
        if not (piece.kind == "line" and piece.last):
            return
        if command.mode == "done":
            self._finish_stale(command.tag, b" OK Idle completed\r\n")
        else:
            self._answer_stale(command)

    # ----------------------------------------------------------------- stale mode

    def _finish_stale(self, tag: bytes, completion: bytes, before: bytes = b"") -> None:
        with self.lock:
            hooks = self.response_hooks.pop(tag, [])
        for hook in hooks:
            self.proxy._fire(hook, f"#{self.number} before (stale) completion of {tag!r}")
        self.write_client(before + tag + completion)

    def _answer_stale(self, command: _Command) -> None:
        tag, text = command.tag, command.text
        verb = verb_of(text)
        hooks = self.proxy._match_hooks(text)
        with self.lock:
            passthrough = self.stale
            responses = [hook for hook in hooks if hook.when == "response"]
            if responses:
                self.response_hooks.setdefault(tag, []).extend(responses)
        for hook in hooks:
            if hook.when == "command":
                self.proxy._fire(hook, f"#{self.number} stale command {tag!r} {text!r}")
        self.log(f"C (stale): {tag.decode(errors='replace')} {_loggable(verb, text)}")
        if passthrough is not None and passthrough.search(text):
            self._passthrough(tag, verb, b"".join(command.chunks))
        elif verb == b"IDLE":
            with self.lock:
                self.idle_tag = tag
            self.write_client(b"+ idling\r\n")
        elif verb in (b"SEARCH", b"UID SEARCH"):
            self._finish_stale(tag, b" OK Completed\r\n", before=b"* SEARCH\r\n")
        else:  # NOOP, CHECK, FETCH, UID FETCH and anything else
            self._finish_stale(tag, b" OK Completed\r\n")

    def _passthrough(self, tag: bytes, verb: bytes, raw: bytes) -> None:
        try:
            side = self._side_connection()
            side.sendall(raw)
            self._read_side(tag, relay=True)
        except (OSError, _SideError) as exc:
            self.log(f"stale passthrough of {tag!r} failed: {exc!r}")
            self._drop_side()
            self._finish_stale(tag, b" NO [UNAVAILABLE] fault proxy: passthrough failed\r\n")
            return
        if verb == b"LOGOUT":
            self._drop_side()

    def _side_connection(self) -> socket.socket:
        if self.side is not None:
            return self.side
        if self.login is None:
            raise _SideError("no LOGIN recorded on this connection")
        source = (LOOPBACK, 0) if self.proxy.upstream[0] == LOOPBACK else None
        side = socket.create_connection(
            self.proxy.upstream, timeout=SIDE_TIMEOUT, source_address=source
        )
        self.side, self.side_splitter = side, Splitter()
        with self.proxy._lock:
            self.proxy.side_connections += 1
        if self.ending:
            raise _SideError("session ending")
        self._read_side(b"*", relay=False)  # greeting
        login_tag, _ = split_command(self.login)
        side.sendall(self.login)
        completion = self._read_side(login_tag, relay=False)
        if split_command(completion)[1][:3].upper() != b"OK ":
            raise _SideError(f"side LOGIN failed: {completion!r}")
        self.log("stale side connection logged in")
        return side

    def _drop_side(self) -> None:
        side, self.side = self.side, None
        if side is not None:
            _shutdown(side, socket.SHUT_RDWR)
            side.close()

    def _read_side(self, tag: bytes, relay: bool) -> bytes:
        """Read side responses up to the first one tagged ``tag``; relay them if asked."""
        assert self.side is not None
        done = False
        tagged = b""
        while True:
            data = self.side.recv(65536)
            if not data:
                raise _SideError("side connection closed")
            for piece in self.side_splitter.feed(data):
                if done:
                    continue  # nothing should follow the completion; ignore it
                if piece.first and piece.data.startswith(tag + b" "):
                    tagged = piece.data
                    if relay:
                        with self.lock:
                            hooks = self.response_hooks.pop(tag, [])
                        for hook in hooks:
                            self.proxy._fire(hook, f"#{self.number} before passthrough {tag!r}")
                if relay:
                    self.write_client(piece.data)
                if tagged and piece.kind == "line" and piece.last:
                    done = True
            if done:
                return tagged

    # ----------------------------------------------------------------- server -> client

    def _server_pump(self) -> None:
        splitter = Splitter()
        poller = select.poll()
        poller.register(self.upstream, select.POLLIN)
        try:
            while not self.ending and not self.proxy._stopping.is_set():
                if not poller.poll(POLL_MS):
                    continue
                data = self.upstream.recv(65536)
                if not data:
                    self.log("server closed")
                    break
                for piece in splitter.feed(data):
                    if not self.proxy._wait_unstalled(self):
                        break
                    self._server_piece(piece)
        except OSError as exc:
            if not self.ending:
                self.log(f"server side error: {exc!r}")
        except BaseException as exc:
            self.log(f"server pump died: {''.join(traceback.format_exception(exc))}")
        finally:
            self.end("server side finished")
            self._pump_done()

    def _server_piece(self, piece: Piece) -> None:
        if piece.first:
            tag = piece.data.split(b" ", 1)[0]
            hooks: list[Hook] = []
            with self.lock:
                tagged = tag not in (b"*", b"+") and tag in self.pending
                if tagged:
                    self.pending.pop(tag)
                    hooks = self.response_hooks.pop(tag, [])
                    if self.idle_tag == tag:
                        self.idle_tag = None
                    if self.auth_tag == tag:
                        self.auth_tag = None
                busy = any(verb != b"IDLE" for verb in self.pending.values())
                self.server_dropping = self.stale is not None and not tagged and not busy
            for hook in hooks:
                self.proxy._fire(hook, f"#{self.number} before forwarding {piece.data!r}")
        if self.server_dropping:
            self.dropped += 1
            if piece.first:
                self.log(f"stale: dropped server line {piece.data[:60]!r}")
            return
        with self.send:
            self.client.sendall(piece.data)
            self.server_in_unit = not (piece.kind == "line" and piece.last)
            self.send.notify_all()
