"""The fault-injecting proxy (tests/support/proxy.py) against the private Dovecot."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError

from tests.support.desk import append, imap
from tests.support.dovecot import Account, Dovecot
from tests.support.mail import make_mail
from tests.support.proxy import FaultProxy, Splitter

BROKEN = (IMAPClientAbortError, OSError)


@pytest.fixture
def proxy(dovecot: Dovecot) -> Iterator[FaultProxy]:
    with FaultProxy(dovecot.port) as running:
        yield running
    assert not [t.name for t in threading.enumerate() if t.name.startswith("faultproxy-")]


@pytest.fixture
def clients() -> Iterator[list[IMAPClient]]:
    """IMAP clients of the test, closed at teardown however the test ended."""
    opened: list[IMAPClient] = []
    yield opened
    for client in opened:
        with contextlib.suppress(Exception):
            client.shutdown()


@pytest.fixture
def raw_sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def connect(
    proxy: FaultProxy,
    account: Account,
    clients: list[IMAPClient],
    timeout: float = 10,
    folder: str | None = "INBOX",
) -> IMAPClient:
    client = IMAPClient("127.0.0.1", port=proxy.port, ssl=False, timeout=timeout)
    clients.append(client)
    client.login(account.username, account.password)
    if folder:
        client.select_folder(folder)
    return client


def raw_connect(proxy: FaultProxy, raw_sockets: list[socket.socket]) -> socket.socket:
    """A plain socket through the proxy, greeting read."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    raw_sockets.append(sock)
    assert read_line(sock).startswith(b"* OK")
    return sock


def read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_splitter_never_takes_literal_content_for_a_command() -> None:
    splitter = Splitter()
    stream = (
        b"a1 APPEND INBOX {14}\r\nb1 NOOP\r\nxxxxx\r\n"
        b"a2 SEARCH CHARSET UTF-8 BODY {9+}\r\nc1 NOOP\r\n"
        b" SUBJECT {0}\r\n\r\na3 NOOP\r\n"
    )
    pieces = [p for i in range(len(stream)) for p in splitter.feed(stream[i : i + 1])]
    starts = [p.data for p in pieces if p.first]
    assert starts == [
        b"a1 APPEND INBOX {14}\r\n",
        b"a2 SEARCH CHARSET UTF-8 BODY {9+}\r\n",
        b"a3 NOOP\r\n",
    ]
    assert b"".join(p.data for p in pieces) == stream
    lines = [p for p in pieces if p.kind == "line"]
    assert [p.sync for p in lines] == [True, False, False, True, False, False]
    assert [p.last for p in lines] == [False, True, False, False, True, True]
    assert lines[0].nonsync() == b"a1 APPEND INBOX {14+}\r\n"
    assert splitter.at_boundary


def test_login_select_search_append_and_literals_through_proxy(
    dovecot: Dovecot, account: Account, proxy: FaultProxy, clients: list[IMAPClient]
) -> None:
    append(dovecot, account, make_mail(message_id="<p1@x>"), make_mail(message_id="<p2@x>"))
    noops = proxy.on_command(rb"^NOOP", lambda: None, when="command", once=False)
    client = connect(proxy, account, clients)
    uids = client.search(["ALL"])
    assert len(uids) == 2, proxy.log_text()
    bodies = client.fetch(uids, ["BODY.PEEK[]"])
    assert b"<p2@x>" in bodies[uids[1]][b"BODY[]"]  # server literals come through whole
    # A synchronizing literal (APPEND) and a LITERAL+ one (8-bit search) whose content
    # looks like commands: neither is taken for a NOOP.
    tricky = make_mail(message_id="<p3@x>", body="line\r\nZ1 NOOP\r\nZ2 noop\r\n")
    client.append("INBOX", tricky)
    assert client.search(["BODY", "é\r\nZ3 NOOP"], charset="UTF-8") == []
    assert "BODY {11+}" in proxy.log_text()  # imapclient did use LITERAL+ here
    assert noops.calls == 0, proxy.log_text()
    client.noop()
    assert noops.calls == 1
    assert len(client.search(["ALL"])) == 3
    client.logout()
    assert proxy.accepted == 1 and proxy.wait_for_connections(1, 0.1)
    assert not proxy.wait_for_connections(2, 0.1)


def test_close_all_ends_a_blocked_idle_with_eof_and_new_connections_work(
    dovecot: Dovecot,
    account: Account,
    proxy: FaultProxy,
    clients: list[IMAPClient],
    raw_sockets: list[socket.socket],
) -> None:
    client = connect(proxy, account, clients)
    raw = raw_connect(proxy, raw_sockets)
    client.idle()
    timer = threading.Timer(0.3, proxy.close_all)
    timer.start()
    started = time.monotonic()
    responses = client.idle_check(timeout=10)  # returns on EOF
    elapsed = time.monotonic() - started
    timer.join()
    assert responses == [] and elapsed < 5, proxy.log_text()
    with pytest.raises(BROKEN, match="EOF"):
        client.idle_done()
    assert read_to_eof(raw) == b""  # a clean FIN, no reset
    assert proxy.connections == 0
    again = connect(proxy, account, clients)
    assert again.noop()
    assert proxy.accepted == 3


def test_close_all_also_ends_a_stalled_noop(
    dovecot: Dovecot, account: Account, proxy: FaultProxy, clients: list[IMAPClient]
) -> None:
    client = connect(proxy, account, clients)
    proxy.stall()
    outcome: list[BaseException] = []

    def noop() -> None:
        try:
            client.noop()
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=noop, daemon=True)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive()  # stalled: no answer
    assert proxy.close_all() == 1
    thread.join(5)
    assert not thread.is_alive() and len(outcome) == 1, proxy.log_text()
    assert isinstance(outcome[0], BROKEN) and "EOF" in str(outcome[0])
    proxy.resume()


def test_bye_and_close_delivers_the_bye_then_eof(
    dovecot: Dovecot,
    account: Account,
    proxy: FaultProxy,
    clients: list[IMAPClient],
    raw_sockets: list[socket.socket],
) -> None:
    client = connect(proxy, account, clients)
    raw = raw_connect(proxy, raw_sockets)
    client.idle()
    assert proxy.bye_and_close(b"* BYE going away\r\n") == 2
    responses = client.idle_check(timeout=5)
    assert [r[0] for r in responses] == [b"BYE"], proxy.log_text()
    assert read_to_eof(raw) == b"* BYE going away\r\n"
    assert proxy.connections == 0
    assert connect(proxy, account, clients).noop()


def test_stall_makes_a_client_time_out_and_resume_forwards_again(
    dovecot: Dovecot,
    account: Account,
    proxy: FaultProxy,
    clients: list[IMAPClient],
    raw_sockets: list[socket.socket],
) -> None:
    client = connect(proxy, account, clients, timeout=1)
    raw = raw_connect(proxy, raw_sockets)
    proxy.stall()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        client.noop()
    assert 0.8 < time.monotonic() - started < 5
    # Connections accepted while stalled are stalled too: not even a greeting.
    with pytest.raises(TimeoutError):
        IMAPClient("127.0.0.1", port=proxy.port, ssl=False, timeout=1)
    raw.sendall(b"r1 NOOP\r\n")
    raw.settimeout(0.5)
    with pytest.raises(TimeoutError):
        raw.recv(100)
    proxy.resume()
    raw.settimeout(5)
    assert read_line(raw).startswith(b"r1 OK"), proxy.log_text()  # held command forwarded
    assert connect(proxy, account, clients).noop()


def test_refuse_closes_new_connections_until_lifted(
    dovecot: Dovecot, account: Account, proxy: FaultProxy, clients: list[IMAPClient]
) -> None:
    proxy.refuse(True)
    with pytest.raises(BROKEN):
        IMAPClient("127.0.0.1", port=proxy.port, ssl=False, timeout=5)
    assert (proxy.accepted, proxy.refused) == (1, 1)
    proxy.refuse(False)
    assert connect(proxy, account, clients).noop()
    assert proxy.wait_for_connections(2, 1)


def test_uid_copy_hooks_run_around_the_server_side_copy(
    dovecot: Dovecot, account: Account, proxy: FaultProxy, clients: list[IMAPClient]
) -> None:
    append(dovecot, account, make_mail())
    with imap(dovecot, account) as direct:
        direct.create_folder("Archive")
    copy_returned = threading.Event()
    seen: dict[str, Any] = {}

    def archived() -> int:
        with imap(dovecot, account) as direct:
            direct.select_folder("Archive", readonly=True)
            return len(direct.search(["ALL"]))

    def before_command() -> None:
        seen["before"] = archived()

    def before_ok() -> None:
        seen["after"] = archived()
        seen["client_knew"] = copy_returned.is_set()
        time.sleep(0.3)

    proxy.on_command(rb"^UID COPY", before_command, when="command")
    hook = proxy.on_command(rb"^UID COPY", before_ok, when="response")
    client = connect(proxy, account, clients)
    uids = client.search(["ALL"])
    started = time.monotonic()
    client.copy(uids, "Archive")
    elapsed = time.monotonic() - started
    copy_returned.set()
    assert seen == {"before": 0, "after": 1, "client_knew": False}, proxy.log_text()
    assert elapsed >= 0.3 and hook.calls == 1 and not proxy.errors
    client.copy(uids, "Archive")  # hooks fire once
    assert hook.calls == 1 and archived() == 2


def test_stale_session_sees_the_old_folder_but_status_the_real_one(
    dovecot: Dovecot, account: Account, proxy: FaultProxy, clients: list[IMAPClient]
) -> None:
    with imap(dovecot, account) as direct:
        direct.create_folder("Support")
    append(dovecot, account, make_mail(message_id="<s1@x>"), folder="Support")
    client = connect(proxy, account, clients, folder=None)
    old_validity = client.select_folder("Support")[b"UIDVALIDITY"]
    assert len(client.search(["ALL"])) == 1
    append(dovecot, account, make_mail(message_id="<s2@x>"), folder="Support")
    assert (2, b"EXISTS") in client.noop()[1]  # not stale yet: news come through

    assert proxy.stale() == 1
    with imap(dovecot, account) as direct:  # someone deletes and recreates the folder
        direct.delete_folder("Support")
        direct.create_folder("Support")
    append(dovecot, account, make_mail(message_id="<s3@x>"), folder="Support")
    assert client.noop()[1] == [], proxy.log_text()
    assert client.search(["ALL"]) == []
    assert client.fetch([1, 2], ["FLAGS"]) == {}
    client.idle()
    assert client.idle_check(timeout=0.3) == []
    assert client.idle_done()[1] == []

    status = client.folder_status("Support", ["UIDVALIDITY", "MESSAGES"])
    assert status[b"MESSAGES"] == 1, proxy.log_text()
    assert status[b"UIDVALIDITY"] != old_validity
    assert client.folder_status("Support", ["MESSAGES"])[b"MESSAGES"] == 1
    assert proxy.side_connections == 1
    fresh = connect(proxy, account, clients, folder=None)  # new connections are not stale
    assert fresh.select_folder("Support")[b"UIDVALIDITY"] == status[b"UIDVALIDITY"]
    assert len(fresh.search(["ALL"])) == 1
    assert client.logout()  # passed through: the BYE comes from the side connection


def test_stop_closes_connections_and_the_listener(
    dovecot: Dovecot, account: Account, clients: list[IMAPClient]
) -> None:
    with FaultProxy(dovecot.port) as proxy:
        client = connect(proxy, account, clients)
        proxy.stall()
    with pytest.raises(BROKEN):
        client.noop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("faultproxy-")]


def test_stale_while_idling_hides_new_mail_and_ends_the_idle_itself(
    dovecot: Dovecot, account: Account, proxy: FaultProxy, clients: list[IMAPClient]
) -> None:
    client = connect(proxy, account, clients)
    client.idle()
    append(dovecot, account, make_mail(message_id="<i1@x>"))
    assert (1, b"EXISTS") in client.idle_check(timeout=5)  # not stale yet
    proxy.stale()
    append(dovecot, account, make_mail(message_id="<i2@x>"))
    deadline = time.monotonic() + 5  # Dovecot did announce it: the proxy dropped that
    while "dropped server line b'* 2 EXISTS" not in proxy.log_text():
        assert time.monotonic() < deadline, proxy.log_text()
        time.sleep(0.05)
    assert client.idle_check(timeout=0.2) == [], proxy.log_text()
    assert client.idle_done() == (b"Idle completed", [])
    assert client.search(["ALL"]) == []
    assert client.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 2
