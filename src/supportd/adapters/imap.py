"""IMAP mail source over imapclient: UID-incremental, PEEK only, bounded batches, IDLE."""

from __future__ import annotations

import contextlib
import imaplib
import logging
import re
import select
import socket
import ssl
import threading
import time
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import imapclient
from imapclient import IMAPClient
from imapclient import exceptions as imap_exc
from imapclient.response_parser import parse_fetch_response

from supportd.adapters.tls import tls_context
from supportd.config import ImapSettings
from supportd.domain.mail import FetchedMail
from supportd.errors import LoginError, MailboxError
from supportd.services.ports import ArchiveJournal

log = logging.getLogger(__name__)

_NETWORK_ERRORS = (imaplib.IMAP4.error, OSError, socket.timeout, ssl.SSLError, EOFError)
SIZE_CHUNK = 1000  # UIDs per RFC822.SIZE request when planning batches
IDLE_SLICE = 1.0  # seconds between stop checks while idling
# imapclient's idle_check returns [] at once, again and again, on a closed connection; this
# many early empty returns in a row mean the peer is gone even when no EOF can be seen.
EARLY_EMPTY_LIMIT = 5
# TCP keepalive: a peer host that vanished without a FIN is noticed within about 2 minutes.
KEEPALIVE = {"TCP_KEEPIDLE": 60, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 5}


def sequence_set(uids: Sequence[int]) -> str:
    """Compact IMAP sequence set for sorted UIDs: 1:5,7,9:12 (keeps command lines short)."""
    parts: list[str] = []
    start = prev = uids[0]
    for uid in uids[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        parts.append(f"{start}:{prev}" if prev != start else str(start))
        start = prev = uid
    parts.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(parts)


_FETCH_HEAD = re.compile(rb"\d+ \((.*)BODY\[\] \{(\d+)\}", re.DOTALL)
_FETCH_ITEM = re.compile(rb'\s*(?:UID (\d+)|INTERNALDATE "([^"]*)")\s*')
_INTERNALDATE = re.compile(
    rb" ?(\d{1,2})-([A-Z][a-z]{2})-(\d{4}) (\d\d):(\d\d):(\d\d) ([-+])(\d\d)(\d\d)"
)
_MONTHS = {
    m.encode(): n
    for n, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


def internaldate(value: bytes) -> datetime | None:
    """An INTERNALDATE (RFC 3501: ` 7-Dec-2026 06:00:00 +0600`) as an aware time; None if
    it is not one."""
    m = _INTERNALDATE.fullmatch(value)
    if m is None or m[2] not in _MONTHS:
        return None
    offset = timedelta(hours=int(m[8]), minutes=int(m[9]))
    try:
        return datetime(
            int(m[3]),
            _MONTHS[m[2]],
            int(m[1]),
            int(m[4]),
            int(m[5]),
            int(m[6]),
            tzinfo=timezone(-offset if m[7] == b"-" else offset),
        )
    except ValueError:  # 31-Feb, 25:00: not a time
        return None


def _quick_items(data: list[Any]) -> dict[int, tuple[bytes, datetime | None]] | None:
    """UID FETCH (BODY.PEEK[] INTERNALDATE) responses in the shape servers send them, each
    `N (UID u INTERNALDATE "d" BODY[] {n}` + literal + `)` (UID and INTERNALDATE in any
    order, on either side of the literal); None for anything else (unsolicited FLAGS, a
    NIL body, another item), which imapclient's parser then reads."""
    found: dict[int, tuple[bytes, datetime | None]] = {}
    if len(data) % 2:
        return None
    for head, tail in zip(data[::2], data[1::2], strict=True):
        if not (isinstance(head, tuple) and len(head) == 2 and isinstance(tail, bytes)):
            return None
        match = _FETCH_HEAD.fullmatch(head[0])
        literal = head[1]
        if match is None or not isinstance(literal, bytes) or len(literal) != int(match[2]):
            return None
        if not tail.endswith(b")"):
            return None
        items = match[1] + b" " + tail[:-1]
        uid: int | None = None
        when: datetime | None = None
        at = 0
        while at < len(items):  # each match takes at least an item: it moves on
            item = _FETCH_ITEM.match(items, at)
            if item is None:
                return None
            at = item.end()
            if item[1] is not None:
                if uid is not None:
                    return None
                uid = int(item[1])
            else:
                if when is not None:
                    return None
                when = internaldate(item[2])
                if when is None:
                    return None
        if uid is None or when is None or uid in found:
            return None
        found[uid] = (literal, when)
    return found


def fetch_items(data: list[Any]) -> dict[int, tuple[bytes, datetime | None]]:
    """UID -> (the message's bytes, its INTERNALDATE) from imaplib's UID FETCH data."""
    quick = _quick_items(data)
    if quick is not None:
        return quick
    parsed = parse_fetch_response(data, False, True)
    found: dict[int, tuple[bytes, datetime | None]] = {}
    for uid, item in parsed.items():
        raw = item.get(b"BODY[]")
        when = item.get(b"INTERNALDATE")
        found[uid] = (
            raw if isinstance(raw, bytes) else b"",
            when if isinstance(when, datetime) else None,
        )
    return found


_SIZE_LINE = re.compile(rb"\d+ \((?:UID (\d+) RFC822\.SIZE (\d+)|RFC822\.SIZE (\d+) UID (\d+))\)")


def fetch_sizes(data: list[Any]) -> dict[int, int]:
    """UID -> RFC822.SIZE from imaplib's UID FETCH (RFC822.SIZE) data: each line read by one
    expression (imapclient's parser took 29 us a mail, issue 9), any other shape by
    imapclient's."""
    found: dict[int, int] = {}
    for line in data:
        match = _SIZE_LINE.fullmatch(line) if isinstance(line, bytes) else None
        if match is None:
            return {
                uid: int(item.get(b"RFC822.SIZE", 0))
                for uid, item in parse_fetch_response(data, False, True).items()
            }
        if match[1] is not None:
            found[int(match[1])] = int(match[2])
        else:
            found[int(match[4])] = int(match[3])
    return found


def _as_utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.now(UTC)  # server sent no INTERNALDATE: the best we know is now


class ImapSource:
    """One folder of one IMAP account; reconnects lazily after errors (close() then open())."""

    def __init__(self, settings: ImapSettings) -> None:
        self.settings = settings
        self.client: IMAPClient | None = None
        self.uidvalidity = 0
        self.last_seen_uid = 0  # highest UID handed out by uids_after
        self.processed_folder = settings.processed_folder  # with the namespace prefix applied
        self._refused_archive = False
        self.watcher: IMAPClient | None = None  # a second session, no folder selected

    @property
    def key(self) -> str:
        s = self.settings
        return f"imap://{s.username}@{s.host}:{s.effective_port}/{s.folder}"

    def _where(self) -> str:
        s = self.settings
        return f"{s.host}:{s.effective_port} (user {s.username}, folder {s.folder})"

    def _error(self, what: str, exc: BaseException) -> MailboxError:
        self.close()
        return MailboxError(f"IMAP {what} failed at {self._where()}: {type(exc).__name__}: {exc}")

    def connect(self) -> IMAPClient:
        s = self.settings
        context = tls_context(s.ca_file, s.tls_verify)
        try:
            client = IMAPClient(
                s.host,
                port=s.effective_port,
                ssl=s.security == "tls",
                ssl_context=context,
                timeout=s.timeout,
            )
        except _NETWORK_ERRORS as exc:
            raise self._error("connect", exc) from exc
        client.normalise_times = False
        # imapclient turns imaplib's protocol trace on (debug = 5) and sends it to a logger
        # at DEBUG; imaplib then formats a repr of every response line and of every fetched
        # message before the logger drops it: 7 % of the daemon's CPU under a backlog
        # (bench/RESULTS.md, issue 9). Kept only when that logger is set to DEBUG.
        if not logging.getLogger("imapclient.imaplib").isEnabledFor(logging.DEBUG):
            client._imap.debug = 0
        _keepalive(client)
        try:
            if s.security == "starttls":
                client.starttls(context)
            client.login(s.username, s.password)
        except imap_exc.LoginError as exc:
            _quiet_close(client)
            detail = str(exc.args[0] if exc.args else exc)
            if detail[:2] in ("b'", 'b"'):  # imapclient passes the server's bytes as repr
                detail = detail[2:-1]
            raise LoginError(
                f"IMAP login refused at {s.host}:{s.effective_port} for user {s.username}: {detail}"
            ) from None
        except _NETWORK_ERRORS as exc:
            _quiet_close(client)
            raise self._error("login", exc) from exc
        return client

    def open(self) -> int:
        """Connect and select if needed; else prove the folder is still the one selected.

        Every call checks the folder with STATUS: a folder deleted (and perhaps recreated)
        under a live session is noticed even where the server keeps the session on the old
        folder and answers NOOP and SEARCH with nothing (Cyrus does).
        """
        if self.client is not None:
            try:
                self.client.noop()  # lets the session see mail that arrived since (SEARCH may not)
            except _NETWORK_ERRORS as exc:
                raise self._error("NOOP", exc) from exc
            current = self._status_uidvalidity()
            if current == self.uidvalidity:
                return self.uidvalidity
            log.warning(
                "%s: UIDVALIDITY of %r is now %d (was %d): the folder was recreated; "
                "selecting it again",
                self._where(),
                self.settings.folder,
                current,
                self.uidvalidity,
            )
            self.close()
        client = self.connect()
        try:
            info = client.select_folder(
                self.settings.folder, readonly=not self.settings.processed_folder
            )
        except _NETWORK_ERRORS as exc:
            _quiet_close(client)
            raise MailboxError(
                f"IMAP folder {self.settings.folder!r} cannot be selected at "
                f"{self.settings.host}:{self.settings.effective_port}: {exc}"
            ) from exc
        self.client = client
        self.uidvalidity = int(info.get(b"UIDVALIDITY", 0))
        self._refused_archive = False
        if self.settings.processed_folder:
            self.processed_folder = self.resolve_folder(self.settings.processed_folder)
            self._ensure_folder(self.processed_folder)
        return self.uidvalidity

    def _status_uidvalidity(self) -> int:
        """The folder's UIDVALIDITY as a second session, with no folder selected, sees it.

        The selected session's own STATUS is not enough: Dovecot (Maildir) answers it from
        that session's view of the old folder, so a folder deleted and recreated between
        two polls looked unchanged, and the new folder's mail, under UIDs the old one had
        used, was never fetched. Cyrus keeps a stale session the same way. The watcher
        stays logged in beside the main session (servers allow several per user).
        """
        self._client()
        try:
            status = self._watcher_status()
        except imap_exc.IMAPClientAbortError as exc:
            raise self._error("STATUS", exc) from exc
        except imaplib.IMAP4.error as exc:  # NO: the folder is gone
            self.close()
            raise MailboxError(
                f"IMAP folder {self.settings.folder!r} no longer exists at {self._where()}: "
                f"{exc} (it will be selected again once it is back)"
            ) from exc
        except _NETWORK_ERRORS as exc:
            raise self._error("STATUS", exc) from exc
        return int(status.get(b"UIDVALIDITY", 0))

    def _watcher_status(self) -> dict[bytes, Any]:
        """STATUS from the watcher; one that idled past the server's autologout (polling
        without IDLE, a long poll_interval) is logged in again once, before it counts."""
        fresh = self.watcher is None
        if self.watcher is None:
            self.watcher = self.connect()
        try:
            return dict(self.watcher.folder_status(self.settings.folder, [b"UIDVALIDITY"]))
        except (imap_exc.IMAPClientAbortError, OSError, EOFError):  # not a NO: that counts
            if fresh:
                raise
            _quiet_close(self.watcher)
            self.watcher = self.connect()
            return dict(self.watcher.folder_status(self.settings.folder, [b"UIDVALIDITY"]))

    def resolve_folder(self, name: str) -> str:
        """`name` under the server's personal namespace (Cyrus: "Processed" is INBOX.Processed).

        A name that already starts with the prefix, or INBOX itself, is kept as written.
        """
        client = self._client()
        if not client.has_capability("NAMESPACE"):
            return name
        try:
            personal = client.namespace().personal
        except _NETWORK_ERRORS as exc:
            raise self._error("NAMESPACE", exc) from exc
        if not personal:
            return name
        prefix = personal[0][0]
        prefix = prefix.decode() if isinstance(prefix, bytes) else str(prefix or "")
        if not prefix or name.upper() == "INBOX" or name.startswith(prefix):
            return name
        return prefix + name

    def _ensure_folder(self, folder: str) -> None:
        assert self.client is not None
        try:
            if not self.client.folder_exists(folder):
                self.client.create_folder(folder)
        except _NETWORK_ERRORS as exc:
            raise self._error(f"create folder {folder!r}", exc) from exc

    def _client(self) -> IMAPClient:
        if self.client is None:
            raise MailboxError(f"IMAP not connected to {self._where()}")
        return self.client

    def uids_after(self, last_uid: int) -> Sequence[int]:
        try:
            found = self._client().search(["UID", f"{last_uid + 1}:*"])
        except _NETWORK_ERRORS as exc:
            raise self._error("SEARCH", exc) from exc
        # Kept while the backlog drains: 8 bytes a UID in an array, not 36 as a list of
        # ints (issue 9: the daemon's peak grew 4.5 MiB from 10,000 to 50,000 mails).
        new = array("Q", sorted(uid for uid in found if uid > last_uid))
        self.last_seen_uid = new[-1] if new else last_uid
        return new

    def fetch(self, uids: Sequence[int]) -> Iterator[list[FetchedMail]]:
        """Batches of at most batch_size messages and about batch_bytes bytes."""
        for start in range(0, len(uids), SIZE_CHUNK):
            chunk = list(uids[start : start + SIZE_CHUNK])
            for plan in self._plan(chunk):
                yield self._fetch_batch(plan)

    def _uid_fetch(self, uids: list[int], items: str) -> list[Any]:
        """imaplib's own UID FETCH, its data as imaplib gives it: fetch_items() and
        fetch_sizes() read it, imapclient's parser only responses of another shape (issue
        9: it took 62 of the FETCH's 80 us a mail). A NO or BAD raises IMAP4.error."""
        typ, data = self._client()._imap.uid("FETCH", sequence_set(uids), items)
        if typ != "OK":
            raise imaplib.IMAP4.error(f"{typ} {data!r}"[:500])
        return data  # type: ignore[no-any-return]

    def _plan(self, uids: list[int]) -> Iterator[list[int]]:
        try:
            # imapclient's parser raises ProtocolError (an IMAP4.error) on what it cannot read
            sizes = fetch_sizes(self._uid_fetch(uids, "(RFC822.SIZE)"))
        except _NETWORK_ERRORS as exc:
            raise self._error("FETCH RFC822.SIZE", exc) from exc
        batch: list[int] = []
        total = 0
        for uid in uids:
            if uid not in sizes:  # expunged meanwhile
                continue
            size = sizes[uid]
            if batch and (
                len(batch) >= self.settings.batch_size or total + size > self.settings.batch_bytes
            ):
                yield batch
                batch, total = [], 0
            batch.append(uid)
            total += size
        if batch:
            yield batch

    def _fetch_batch(self, uids: list[int]) -> list[FetchedMail]:
        try:
            # A response no parser can read fails as the FETCH would (ProtocolError).
            found = fetch_items(self._uid_fetch(uids, "(BODY.PEEK[] INTERNALDATE)"))
        except _NETWORK_ERRORS as exc:
            raise self._error(f"FETCH UIDs {uids[0]}-{uids[-1]}", exc) from exc
        batch = []
        for uid in uids:
            item = found.get(uid)
            if item is None:
                continue
            raw, when = item
            batch.append(FetchedMail(uid, _as_utc(when), raw))
        return batch

    def archive_method(self) -> str:
        """How processed mail leaves the folder here: MOVE, COPY+UID EXPUNGE, or refused."""
        client = self._client()
        if client.has_capability("MOVE"):
            return "MOVE"
        if client.has_capability("UIDPLUS"):
            return "COPY, STORE \\Deleted, UID EXPUNGE"
        return ""

    def archive(self, up_to_uid: int, journal: ArchiveJournal) -> int:
        """Move committed messages (UID <= up_to_uid) to imap.processed_folder, once each.

        Without MOVE: COPY, STORE \\Deleted, UID EXPUNGE, with the copy recorded in
        `journal` first; after a crash in between, messages whose copy is already in the
        processed folder are not copied again. Without UIDPLUS as well, a plain EXPUNGE would
        also remove other clients' \\Deleted mail: refused (logged once, mail left in place).
        """
        if not self.settings.processed_folder:
            return 0
        folder = self.processed_folder
        client = self._client()
        try:
            uids = [u for u in client.search(["UID", f"1:{up_to_uid}"]) if u <= up_to_uid]
            if not uids:
                return 0
            if client.has_capability("MOVE"):
                client.move(sequence_set(uids), folder)
                return len(uids)
            if not client.has_capability("UIDPLUS"):
                if not self._refused_archive:
                    log.error(
                        "%s offers neither MOVE nor UIDPLUS: not moving mail to %r, because "
                        "a plain EXPUNGE would also remove other clients' \\Deleted mail "
                        "(leave imap.processed_folder empty to silence this)",
                        self._where(),
                        folder,
                    )
                    self._refused_archive = True
                return 0
            self._copy_and_expunge(uids, folder, journal)
        except _NETWORK_ERRORS as exc:
            raise self._error(f"move to {folder!r}", exc) from exc
        return len(uids)

    def _copy_and_expunge(self, uids: list[int], folder: str, journal: ArchiveJournal) -> None:
        client = self._client()
        to_copy = uids
        pending, dest_uidnext = journal.pending()
        if pending:
            done = self._already_copied([u for u in uids if u <= pending], folder, dest_uidnext)
            if done:
                log.warning(
                    "%s: %d message(s) were copied to %r before an interruption; "
                    "not copying them again",
                    self._where(),
                    len(done),
                    folder,
                )
            to_copy = [u for u in uids if u not in done]
        status = client.folder_status(folder, [b"UIDNEXT"])
        journal.begin(uids[-1], int(status.get(b"UIDNEXT", 1)))
        if to_copy:
            client.copy(sequence_set(to_copy), folder)
        client.add_flags(sequence_set(uids), [imapclient.DELETED], silent=True)
        client.uid_expunge(sequence_set(uids))
        journal.clear()

    def _already_copied(self, uids: list[int], folder: str, dest_uidnext: int) -> set[int]:
        """Which of `uids` already have their copy in `folder` (at or above dest_uidnext).

        COPY keeps the bytes and the INTERNALDATE: size, INTERNALDATE and Message-ID
        recognise a copy. Two FETCHes, whatever the number of messages.
        """
        if not uids:
            return set()
        client = self._client()
        fields = ["RFC822.SIZE", "INTERNALDATE", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]
        wanted = {uid: _fingerprint(item) for uid, item in client.fetch(uids, fields).items()}
        client.select_folder(folder, readonly=True)
        try:
            candidates = [
                u for u in client.search(["UID", f"{max(dest_uidnext, 1)}:*"]) if u >= dest_uidnext
            ]
            copies = (
                Counter(_fingerprint(item) for item in client.fetch(candidates, fields).values())
                if candidates
                else Counter()
            )
        finally:
            info = client.select_folder(self.settings.folder, readonly=False)
        if int(info.get(b"UIDVALIDITY", 0)) != self.uidvalidity:
            raise MailboxError(f"UIDVALIDITY of {self.settings.folder!r} changed during a move")
        found: set[int] = set()
        for uid, fingerprint in wanted.items():
            if copies[fingerprint] > 0:
                copies[fingerprint] -= 1
                found.add(uid)
        return found

    def supports_idle(self) -> bool:
        return bool(
            self.settings.idle and self.client is not None and self.client.has_capability("IDLE")
        )

    def wait(self, timeout: float, wake: threading.Event) -> None:
        """IDLE until the server reports mail, `wake` is set, or `timeout` passes.

        Every way the connection can end is noticed: EOF (a server restart), `* BYE`, and a
        peer that says nothing at all (IDLE ends after imap.idle_timeout; the DONE must be
        answered within imap.timeout). Each raises MailboxError, and the runner reconnects
        with its backoff: never a busy loop.
        """
        if not self.supports_idle():
            wake.wait(timeout)
            return
        client = self._client()
        deadline = time.monotonic() + min(timeout, self.settings.idle_timeout)
        try:
            # Mail that arrived after the last SEARCH was announced (if at all) while we were
            # busy, not in IDLE: look before idling, or it would wait for the next poll. The
            # NOOP first: Dovecot's SEARCH answers from the session's view, which only a
            # sync (NOOP) brings up to date; without it the last mails of a burst waited.
            client.noop()
            if self.uids_after(self.last_seen_uid):
                return
            client.idle()
            self._idle_until(client, deadline, wake)
            client.idle_done()
        except _NETWORK_ERRORS as exc:
            raise self._error("IDLE", exc) from exc

    def _idle_until(self, client: IMAPClient, deadline: float, wake: threading.Event) -> None:
        early_empty = 0
        while not wake.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            window = min(IDLE_SLICE, remaining)
            started = time.monotonic()
            responses = client.idle_check(timeout=window)
            for response in responses:
                if response and response[0] == b"BYE":
                    text = b" ".join(r for r in response[1:] if isinstance(r, bytes))
                    raise EOFError(f"server said BYE: {text.decode(errors='replace')}")
            if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                return
            if responses or time.monotonic() - started >= window / 2:
                early_empty = 0
                continue
            # Nothing, and sooner than asked: imapclient swallows EOF this way.
            early_empty += 1
            if _peer_closed(client) or early_empty >= EARLY_EMPTY_LIMIT:
                raise EOFError("connection closed by the server during IDLE")

    def close(self) -> None:
        if self.client is not None:
            _quiet_close(self.client)
            self.client = None
        if self.watcher is not None:
            _quiet_close(self.watcher)
            self.watcher = None


def _keepalive(client: IMAPClient) -> None:
    with contextlib.suppress(OSError, AttributeError):
        sock = client.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in KEEPALIVE.items():
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _peer_closed(client: IMAPClient) -> bool:
    """True when the peer's FIN is what is waiting on the socket (the TCP stream has ended)."""
    try:
        sock = client.socket()
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        # Below any TLS layer: an empty peek is the end of the TCP stream.
        return socket.socket.recv(sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):
        return True


def _fingerprint(item: dict[bytes, Any]) -> tuple[int, str, str]:
    header = item.get(b"BODY[HEADER.FIELDS (MESSAGE-ID)]", b"")
    when = item.get(b"INTERNALDATE")
    return (
        int(item.get(b"RFC822.SIZE", 0)),
        when.isoformat() if isinstance(when, datetime) else "",
        _message_id(header if isinstance(header, bytes) else b""),
    )


def _message_id(header: bytes) -> str:
    _, _, value = header.decode("ascii", errors="replace").partition(":")
    value = " ".join(value.split())
    return value if value.startswith("<") and value.endswith(">") else ""


def _quiet_close(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:
        with contextlib.suppress(Exception):
            client.shutdown()
