"""IMAP mail source over imapclient: UID-incremental, PEEK only, bounded batches, IDLE."""

from __future__ import annotations

import contextlib
import imaplib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from imapclient import IMAPClient
from imapclient import exceptions as imap_exc

from supportd.config import ImapSettings
from supportd.domain.mail import FetchedMail
from supportd.errors import LoginError, MailboxError

log = logging.getLogger(__name__)

_NETWORK_ERRORS = (imaplib.IMAP4.error, OSError, socket.timeout, ssl.SSLError, EOFError)
SIZE_CHUNK = 1000  # UIDs per RFC822.SIZE request when planning batches
IDLE_SLICE = 1.0  # seconds between stop checks while idling
IDLE_MAX = 25 * 60  # re-issue IDLE before the 29-minute server limit


def tls_context(ca_file: str, verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file or None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


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
        if self.client is None:
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
            if self.settings.processed_folder:
                self._ensure_folder(self.settings.processed_folder)
        else:
            try:
                self.client.noop()
            except _NETWORK_ERRORS as exc:
                raise self._error("NOOP", exc) from exc
        return self.uidvalidity

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

    def uids_after(self, last_uid: int) -> list[int]:
        try:
            found = self._client().search(["UID", f"{last_uid + 1}:*"])
        except _NETWORK_ERRORS as exc:
            raise self._error("SEARCH", exc) from exc
        new = sorted(uid for uid in found if uid > last_uid)
        self.last_seen_uid = new[-1] if new else last_uid
        return new

    def fetch(self, uids: Sequence[int]) -> Iterator[list[FetchedMail]]:
        """Batches of at most batch_size messages and about batch_bytes bytes."""
        for start in range(0, len(uids), SIZE_CHUNK):
            chunk = list(uids[start : start + SIZE_CHUNK])
            for plan in self._plan(chunk):
                yield self._fetch_batch(plan)

    def _plan(self, uids: list[int]) -> Iterator[list[int]]:
        try:
            sizes = self._client().fetch(uids, ["RFC822.SIZE"])
        except _NETWORK_ERRORS as exc:
            raise self._error("FETCH RFC822.SIZE", exc) from exc
        batch: list[int] = []
        total = 0
        for uid in uids:
            if uid not in sizes:  # expunged meanwhile
                continue
            size = int(sizes[uid].get(b"RFC822.SIZE", 0))
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
            data = self._client().fetch(uids, ["BODY.PEEK[]", "INTERNALDATE"])
        except _NETWORK_ERRORS as exc:
            raise self._error(f"FETCH UIDs {uids[0]}-{uids[-1]}", exc) from exc
        batch = []
        for uid in uids:
            item = data.get(uid)
            if item is None:
                continue
            raw = item.get(b"BODY[]")
            if not isinstance(raw, bytes):
                raw = b""
            batch.append(FetchedMail(uid, _as_utc(item.get(b"INTERNALDATE")), raw))
        return batch

    def archive(self, up_to_uid: int) -> int:
        """Move committed messages to imap.processed_folder (only after their commit)."""
        folder = self.settings.processed_folder
        if not folder:
            return 0
        client = self._client()
        try:
            uids = [u for u in client.search(["UID", f"1:{up_to_uid}"]) if u <= up_to_uid]
            if not uids:
                return 0
            if client.has_capability("MOVE"):
                client.move(sequence_set(uids), folder)
            else:
                client.copy(sequence_set(uids), folder)
                client.delete_messages(sequence_set(uids))
                if client.has_capability("UIDPLUS"):
                    client.uid_expunge(sequence_set(uids))
                else:
                    client.expunge()
        except _NETWORK_ERRORS as exc:
            raise self._error(f"move to {folder!r}", exc) from exc
        return len(uids)

    def supports_idle(self) -> bool:
        return bool(
            self.settings.idle and self.client is not None and self.client.has_capability("IDLE")
        )

    def wait(self, timeout: float, wake: threading.Event) -> None:
        """IDLE until the server reports mail, `wake` is set, or `timeout` passes."""
        if not self.supports_idle():
            wake.wait(timeout)
            return
        client = self._client()
        deadline = time.monotonic() + min(timeout, IDLE_MAX)
        try:
            # Mail that arrived after the last SEARCH was announced (if at all) while we were
            # busy, not in IDLE: look before idling, or it would wait for the next poll.
            if self.uids_after(self.last_seen_uid):
                return
            client.idle()
            try:
                while not wake.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    responses = client.idle_check(timeout=min(IDLE_SLICE, remaining))
                    if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                        break
            finally:
                client.idle_done()
        except _NETWORK_ERRORS as exc:
            raise self._error("IDLE", exc) from exc

    def close(self) -> None:
        if self.client is not None:
            _quiet_close(self.client)
            self.client = None


def _quiet_close(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:
        with contextlib.suppress(Exception):
            client.shutdown()
