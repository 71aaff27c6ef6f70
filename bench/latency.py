"""Acknowledgement latency and outbox throughput.

    .venv/bin/python bench/latency.py [-n 200] [--outbox 2000]

1. `supportd run` (IDLE) against a private Dovecot and an aiosmtpd sink: each of N mails
   is APPENDed to the INBOX, one every 100 ms, and timed until its acknowledgement reaches
   the sink. Prints p50, p90, p99 and max.
2. Relay: N tickets notified, then each agent's reply (Gmail-shaped, to the token address of
   the notification) is APPENDed, one every 100 ms, and timed until the relayed answer
   reaches the sink. Prints p50, p90, p99 and max.
3. The outbox alone: M acknowledgements queued while SMTP is unreachable, then sent over
   one connection per batch. Prints messages per second.
Not a test: it asserts nothing. Needs root and Dovecot, like the integration tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imapclient import IMAPClient  # noqa: E402
from tests.conftest import desk_config, write_toml  # noqa: E402
from tests.support.desk import make_desk, run_once  # noqa: E402
from tests.support.dovecot import Dovecot  # noqa: E402
from tests.support.mail import make_mail  # noqa: E402
from tests.support.smtp import SmtpServer  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency(dovecot: Dovecot, server: SmtpServer, n: int, work: Path) -> None:
    account = dovecot.add_user()
    arrived: dict[str, float] = {}
    done = threading.Event()

    def on_message(item: object) -> None:
        msg = item.message  # type: ignore[attr-defined]
        parent = msg["In-Reply-To"]
        if parent in sent_at:
            arrived[parent] = time.monotonic()
            if len(arrived) == n:
                done.set()

    server.sink.reset()
    server.sink.on_message = on_message
    sent_at: dict[str, float] = {}
    config = write_toml(
        work / "latency.toml",
        desk_config(
            f"sqlite:///{work / 'latency.db'}",
            account,
            dovecot.port,
            imap__idle=True,
            imap__poll_interval=300,
            support__autoreply_per_sender=1_000_000,
        ),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTD_")}
    cmd = [sys.executable, "-m", "supportd", "--config", str(config)]
    subprocess.run([*cmd, "migrate"], check=True, env=env, capture_output=True)
    daemon = subprocess.Popen(
        [*cmd, "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(3)  # start-up and the first (empty) cycle, then IDLE
        with IMAPClient("127.0.0.1", port=dovecot.port, ssl=False) as client:
            client.login(account.username, account.password)
            for i in range(n):
                mid = f"<lat{i}@customer.example>"
                raw = make_mail(
                    sender=f"c{i}@customer.example", subject=f"Question {i}", message_id=mid
                )
                sent_at[mid] = time.monotonic()
                client.append("INBOX", raw)
                time.sleep(0.1)
        done.wait(60)
    finally:
        daemon.terminate()
        daemon.wait(30)
    samples = [arrived[m] - sent_at[m] for m in sent_at if m in arrived]
    missing = [m for m in sent_at if m not in arrived]
    if missing:
        import sqlite3

        db = sqlite3.connect(work / "latency.db")
        for mid in missing[:5]:
            row = db.execute(
                "SELECT reply_decision, created_at FROM messages WHERE message_id = ?", (mid,)
            ).fetchone()
            print(f"  missing {mid}: stored as {row}")
        db.close()
    print(f"APPEND -> acknowledgement at the SMTP sink, IDLE, {len(samples)}/{n} mails:")
    print(
        f"  p50 {percentile(samples, 0.5) * 1000:.0f} ms, "
        f"p90 {percentile(samples, 0.9) * 1000:.0f} ms, "
        f"p99 {percentile(samples, 0.99) * 1000:.0f} ms, max {max(samples) * 1000:.0f} ms, "
        f"mean {statistics.mean(samples) * 1000:.0f} ms"
    )


def relay_latency(dovecot: Dovecot, server: SmtpServer, n: int, work: Path) -> None:
    from tests.support import clients

    account = dovecot.add_user()
    notifications: dict[str, object] = {}
    arrived: dict[str, float] = {}
    ready, done = threading.Event(), threading.Event()

    def on_message(item: object) -> None:
        msg = item.message  # type: ignore[attr-defined]
        if msg["Auto-Submitted"] == "auto-generated" and "agent@" in str(msg["To"]):
            notifications[str(msg["Subject"]).split("] ", 1)[1]] = msg
            if len(notifications) == n:
                ready.set()
        elif msg["Auto-Submitted"] is None and str(msg["In-Reply-To"]) in sent_at:
            arrived[str(msg["In-Reply-To"])] = time.monotonic()
            if len(arrived) == n:
                done.set()

    server.sink.reset()
    server.sink.on_message = on_message
    sent_at: dict[str, float] = {}
    config = write_toml(
        work / "relay.toml",
        desk_config(
            f"sqlite:///{work / 'relay.db'}",
            account,
            dovecot.port,
            imap__idle=True,
            imap__poll_interval=300,
            support__autoreply_per_sender=1_000_000,
        ),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTD_")}
    cmd = [sys.executable, "-m", "supportd", "--config", str(config)]
    subprocess.run([*cmd, "migrate"], check=True, env=env, capture_output=True)
    daemon = subprocess.Popen(
        [*cmd, "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with IMAPClient("127.0.0.1", port=dovecot.port, ssl=False) as client:
            client.login(account.username, account.password)
            for i in range(n):
                client.append(
                    "INBOX",
                    make_mail(
                        sender=f"r{i}@customer.example",
                        subject=f"Relay {i}",
                        message_id=f"<rq{i}@customer.example>",
                    ),
                )
            ready.wait(60)
            time.sleep(1)  # back in IDLE
            for i in range(n):
                note = notifications[f"Relay {i}"]
                reply = clients.gmail(
                    note,  # type: ignore[arg-type]
                    "agent@desk.example",
                    f"Hello, here is the answer to question {i}.",
                )
                token = str(note["Reply-To"])  # type: ignore[index]
                sent_at[f"<rq{i}@customer.example>"] = time.monotonic()
                client.append("INBOX", f"Delivered-To: {token}\r\n".encode() + reply)
                time.sleep(0.1)
        done.wait(60)
    finally:
        daemon.terminate()
        daemon.wait(30)
    samples = [arrived[m] - sent_at[m] for m in sent_at if m in arrived]
    print(f"agent reply APPEND -> relayed answer at the SMTP sink, IDLE, {len(samples)}/{n}:")
    print(
        f"  p50 {percentile(samples, 0.5) * 1000:.0f} ms, "
        f"p90 {percentile(samples, 0.9) * 1000:.0f} ms, "
        f"p99 {percentile(samples, 0.99) * 1000:.0f} ms, max {max(samples) * 1000:.0f} ms, "
        f"mean {statistics.mean(samples) * 1000:.0f} ms"
    )


def outbox(dovecot: Dovecot, server: SmtpServer, m: int, work: Path) -> None:
    account = dovecot.add_user()
    for i in range(m):
        dovecot.deliver(
            account,
            make_mail(
                sender=f"o{i}@customer.example",
                subject=f"Q {i}",
                message_id=f"<ob{i}@customer.example>",
            ),
        )
    desk = make_desk(
        f"sqlite:///{work / 'outbox.db'}",
        dovecot,
        account,
        smtp__port=1,
        support__autoreply_per_sender=1_000_000,
        smtp__batch_size=500,
    )
    run_once(desk)  # everything queued; SMTP unreachable
    desk.settings.smtp.port = server.port
    server.sink.reset()
    from datetime import UTC, datetime, timedelta

    desk.outbox.clock = lambda: datetime.now(UTC) + timedelta(hours=1)
    started = time.monotonic()
    stats = desk.outbox.send_due()
    elapsed = time.monotonic() - started
    desk.close()
    print(
        f"outbox: {stats.sent} acknowledgements in {elapsed:.2f} s = "
        f"{stats.sent / elapsed:.0f} msg/s "
        f"(500 per SMTP connection, each marked sent in its own commit)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--outbox", type=int, default=2000)
    args = parser.parse_args()
    dovecot = Dovecot()
    dovecot.start()
    server = SmtpServer()
    server.start()
    import tests.conftest as conftest

    conftest.SMTP_PORT["port"] = server.port
    work = Path(tempfile.mkdtemp(prefix="supportd-latency-"))
    try:
        latency(dovecot, server, args.n, work)
        relay_latency(dovecot, server, args.n, work)
        outbox(dovecot, server, args.outbox, work)
    finally:
        server.stop()
        dovecot.cleanup()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
