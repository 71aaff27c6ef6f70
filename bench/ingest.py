"""Ingestion benchmark: N messages in a private Dovecot, timed through `supportd run --once`.

    .venv/bin/python bench/ingest.py [-n 10000] [--postgres] [--compare] [--repeat K]

Acknowledgements and notifications (one agent) are on and go to an SMTP sink on loopback
(bench/sink.py, a separate process); the run counts only when every outbox row was sent
before `run --once` exited. Prints messages per second and the peak RSS of all supportd
processes together. `--compare` also runs the sequential pipeline of issue 9 in the same
run (imapclient FETCH and compat32 parsing of the same mails, then as many small messages
as supportd sent, one by one over one SMTP connection) and prints the ratio. `--repeat K`
runs K times on the same seeded mailbox (a fresh database each time; with --compare each run
is followed by the pipeline) and prints every figure and the median: this machine's speed
moves by ±10 % within minutes, so one run proves little.
Needs root and Dovecot, like the integration tests. Not a test: no assertions.
"""

from __future__ import annotations

import argparse
import email
import itertools
import os
import random
import resource
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import ClassVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from imapclient import IMAPClient  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from tests.conftest import PG_ADMIN_URL, desk_config, write_toml  # noqa: E402
from tests.support.dovecot import Dovecot  # noqa: E402
from tests.support.mail import make_mail  # noqa: E402

WORDS = [
    "install",
    "configure",
    "plugin",
    "invoice",
    "payroll",
    "employee",
    "leave",
    "report",
    "error",
    "page",
    "blank",
    "database",
    "module",
    "update",
    "version",
    "license",
    "export",
    "import",
    "settings",
    "permission",
    "role",
    "dashboard",
    "customer",
    "vendor",
    "account",
    "ledger",
    "attendance",
    "please",
    "help",
    "thanks",
    "regards",
]


def body_of(rng: random.Random, size: int) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(WORDS)
        words.append(word)
        length += len(word) + 1
        if len(words) % 14 == 0:
            words.append("\n")
    return " ".join(words)


def backlog(n: int, rng: random.Random) -> list[bytes]:
    """The bench's `n` customer mails: 500 customers, 2-50 KB of text, 30 % follow-ups."""
    mails: list[bytes] = []
    roots: list[str] = []
    author: dict[str, int] = {}  # Message-ID -> the customer who wrote it
    for i in range(n):
        size = min(50_000, 2_000 + int(rng.expovariate(1 / 6_000)))
        headers: dict[str, str] = {}
        subject = f"Question {i} about {rng.choice(WORDS)}"
        customer = i % 500
        if roots and rng.random() < 0.3:
            parent = rng.choice(roots)
            headers = {"In_Reply_To": parent, "References": parent}
            subject = "Re: " + subject
            # A follow-up comes from whoever wrote what it answers: a reply by another
            # customer is a new ticket now (a Message-ID links only the same people).
            customer = author[parent]
        mid = f"<b{i}.{uuid.uuid4().hex[:8]}@customer.example>"
        author[mid] = customer
        mails.append(
            make_mail(
                sender=f"Customer {customer} <customer{customer}@example.com>",
                subject=subject,
                body=body_of(rng, size),
                message_id=mid,
                **headers,
            )
        )
        roots.append(mid)
    return mails


def seed(dovecot: Dovecot, n: int, rng: random.Random) -> tuple[object, int]:
    account = dovecot.add_user()
    total = 0
    start = time.time() - n
    for i, raw in enumerate(backlog(n, rng)):
        total += len(raw)
        dovecot.deliver(account, raw, when=start + i)
    # Let Dovecot index the folder once, as a long-running server would have.
    with IMAPClient("127.0.0.1", port=dovecot.port, ssl=False) as client:
        client.login(account.username, account.password)
        client.select_folder("INBOX", readonly=True)
        client.fetch(client.search(["ALL"]), ["RFC822.SIZE"])
    return account, total


def tree_rss_kib(pid: int, cpu: dict[int, tuple[str, float, int]] | None = None) -> int:
    """Resident memory of a process and its children, from /proc (KiB); with `cpu`, also
    records each process's name, CPU seconds and peak resident memory (KiB) so far."""
    total = 0
    pids: list[tuple[int, bytes]] = [(pid, b"")]
    tick = os.sysconf("SC_CLK_TCK")
    while pids:
        current, parent_cmdline = pids.pop()
        try:
            cmdline = Path(f"/proc/{current}/cmdline").read_bytes()
            if cmdline == parent_cmdline:
                # Forked, not yet exec'd (Popen's vfork): its RSS is its parent's memory, not
                # more of it. Summed, it once counted the daemon twice (167 MiB for 148).
                continue
            status = Path(f"/proc/{current}/status").read_text()
            fields = {
                line.split(":")[0]: line.split()[1]
                for line in status.splitlines()
                if line.startswith(("VmRSS:", "VmHWM:"))
            }
            total += int(fields["VmRSS"])
            if cpu is not None:
                stat = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
                args = cmdline.split(b"\0")
                name = " ".join(a.decode()[-40:] for a in args[1:4])
                cpu[current] = (name, (int(stat[11]) + int(stat[12])) / tick, int(fields["VmHWM"]))
            for task in Path(f"/proc/{current}/task").iterdir():
                pids.extend((int(c), cmdline) for c in (task / "children").read_text().split())
        except (OSError, StopIteration, ValueError, KeyError):  # a process that just ended
            continue
    return total


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy so far (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    """bench/sink.py in its own process."""

    started: ClassVar[list[subprocess.Popen[str]]] = []  # killed when the bench ends, however

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.countfile = work / f"sink-{self.port}.count"
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "sink.py"), str(self.port), str(self.countfile)],
            stdout=subprocess.PIPE,
            text=True,
        )
        Sink.started.append(self.proc)
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "ready"

    def stop(self) -> tuple[int, int]:
        self.proc.terminate()
        self.proc.wait(10)
        count, size = self.countfile.read_text().split()
        return int(count), int(size)


def sequential(dovecot: Dovecot, account: object, n: int, sends: int, work: Path) -> float:
    """Issue 9's yardstick: FETCH and parse with imapclient and compat32, then send `sends`
    small messages one after the other over one SMTP connection. Returns seconds."""
    sink = Sink(work)
    small = (
        b"From: support@desk.example\r\nTo: customer@example.com\r\n"
        b"Subject: Re: your question [Desk #1]\r\nMessage-ID: <x@desk.example>\r\n"
        b"Auto-Submitted: auto-replied\r\n\r\n" + b"Thank you for writing to us.\r\n" * 20
    )
    started = time.monotonic()
    with IMAPClient("127.0.0.1", port=dovecot.port, ssl=False) as client:
        client.login(account.username, account.password)  # type: ignore[attr-defined]
        client.select_folder("INBOX", readonly=True)
        uids = client.search(["ALL"])
        parsed = 0
        for i in range(0, len(uids), 200):
            fetched = client.fetch(uids[i : i + 200], ["BODY.PEEK[]", "INTERNALDATE"])
            for data in fetched.values():
                email.message_from_bytes(data[b"BODY[]"])
                parsed += 1
    assert parsed == n, parsed
    with smtplib.SMTP("127.0.0.1", sink.port) as smtp:
        for _ in range(sends):
            smtp.sendmail("support@desk.example", ["customer@example.com"], small)
    elapsed = time.monotonic() - started
    sent, _ = sink.stop()
    assert sent == sends, (sent, sends)
    return elapsed


def measure(
    args: argparse.Namespace, dovecot: Dovecot, account: object, work: Path
) -> tuple[float, float | None]:
    """One `supportd run --once` on a fresh database, and with --compare the sequential
    pipeline right after it. Returns (messages per second, ratio or None)."""
    work.mkdir()
    pg_name = None
    try:
        ratio: float | None = None
        if args.postgres:
            pg_name = f"supportd_bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{pg_name}"'))
            db_url = admin.url.set(database=pg_name).render_as_string(hide_password=False)
        else:
            db_url = f"sqlite:///{work / 'bench.db'}"
        config = write_toml(
            work / "supportd.toml",
            desk_config(
                db_url,
                account,
                dovecot.port,
                **({"imap__batch_size": args.batch_size} if args.batch_size else {}),
                **({"smtp__connections": args.smtp_connections} if args.smtp_connections else {}),
                support__autoreply=not args.no_acks,
                **(
                    {"imap__parse_workers": args.parse_workers}
                    if args.parse_workers is not None
                    else {}
                ),
            ),
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTD_")}
        sink = Sink(work)
        env["SUPPORTD_SMTP__PORT"] = str(sink.port)
        cmd = [sys.executable, "-m", "supportd", "--config", str(config)]
        subprocess.run([*cmd, "migrate"], check=True, env=env, capture_output=True)
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            cmd = [
                sys.executable,
                "-m",
                "cProfile",
                "-o",
                str(args.profile / "main.prof"),
                "-m",
                "supportd",
                "--config",
                str(config),
            ]
        if args.spy:
            spy = [str(Path(sys.executable).with_name("py-spy")), "record", "-f", "raw"]
            mode = "--idle" if args.spy_idle else "--gil"
            cmd = [*spy, "-r", "250", mode, "--subprocesses", "-o", str(args.spy), "--", *cmd]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        proc = subprocess.Popen(
            [*cmd, "run", "--once"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        peak_tree = 0
        per_process: dict[int, tuple[str, float, int]] = {}
        machine_before = busy_seconds()
        timeline: list[tuple[float, float, dict[int, float]]] = []
        while proc.poll() is None:
            peak_tree = max(peak_tree, tree_rss_kib(proc.pid, per_process))
            if args.timeline and (
                not timeline or time.monotonic() - started - timeline[-1][0] >= 0.5
            ):
                cpu_now = {pid: seconds for pid, (_, seconds, _) in per_process.items()}
                timeline.append((time.monotonic() - started, busy_seconds(), cpu_now))
            time.sleep(0.05)
        machine_busy = busy_seconds() - machine_before
        elapsed = time.monotonic() - started
        stdout, stderr = proc.communicate()
        result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        if result.returncode != 0:
            print(result.stderr)
            raise SystemExit(1)
        for line in result.stderr.splitlines():
            if "outbox" in line:
                print("daemon:", line.split(": ", 1)[-1])
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        sent, sent_bytes = sink.stop()
        counted = create_engine(db_url)
        with counted.connect() as conn:
            states = dict(
                conn.execute(text("SELECT status, count(*) FROM outbox GROUP BY status")).all()
            )
        counted.dispose()
        unsent = sum(v for k, v in states.items() if k != "sent")
        print(
            f"SMTP sink received {sent} messages ({sent_bytes / max(sent, 1) / 1024:.1f} KiB "
            f"average); outbox {states}"
            + ("" if not unsent and sent == states.get("sent", 0) else "  <-- NOT ALL SENT")
        )
        peak_kib = usage.ru_maxrss
        cpu = (usage.ru_utime - before.ru_utime) + (usage.ru_stime - before.ru_stime)
        print(result.stdout.strip())
        cycle = float(result.stdout.strip().rsplit(" in ", 1)[1].split()[0])
        print(
            f"the cycle itself (connect, drain, outbox; no process start): "
            f"{args.n / cycle:.0f} msg/s"
        )
        backend = "PostgreSQL" if args.postgres else "SQLite"
        print(
            f"{backend}: {args.n} messages in {elapsed:.2f} s = {args.n / elapsed:.0f} msg/s "
            f"(process start and migrations check included)"
        )
        print(
            f"CPU time of supportd and its parse worker: {cpu:.1f} s in {elapsed:.1f} s wall "
            f"({cpu / elapsed:.2f} of the 2 cores; Dovecot uses the rest)"
        )
        for pid, (name, seconds, hwm) in sorted(per_process.items()):
            print(f"  CPU {seconds:5.1f} s  peak RSS {hwm / 1024:5.1f} MiB  pid {pid} {name}")
        print(
            f"machine busy {machine_busy:.1f} CPU-s of {2 * elapsed:.1f} "
            f"(supportd {cpu:.1f}; the rest is Dovecot, the SMTP sink, this script)"
        )
        print(
            f"peak RSS: largest single process {peak_kib / 1024:.0f} MiB; "
            f"supportd with its parse worker together {peak_tree / 1024:.1f} MiB "
            f"(the budget: 150 MB = 143.05 MiB)"
        )
        for (t0, busy0, cpu0), (t1, busy1, cpu1) in itertools.pairwise(timeline):
            each = "  ".join(
                f"{pid}: {(cpu1[pid] - cpu0.get(pid, 0.0)) / (t1 - t0):4.2f}"
                for pid in sorted(cpu1)
            )
            print(
                f"  {t0:5.1f}-{t1:5.1f} s  machine {(busy1 - busy0) / (t1 - t0):4.2f} cores  {each}"
            )
        if not args.postgres:
            print(f"database size: {(work / 'bench.db').stat().st_size / 1e6:.0f} MB")
        if args.compare:
            before = busy_seconds()
            seconds = sequential(dovecot, account, args.n, sent, work)
            busy = busy_seconds() - before
            print(
                f"sequential pipeline (imapclient + compat32, then {sent} small messages over "
                f"one SMTP connection): {seconds:.2f} s = {args.n / seconds:.0f} msg/s"
            )
            # What the yardstick itself keeps busy: its own process, Dovecot and the sink.
            print(
                f"  machine busy {busy:.1f} CPU-s in {seconds:.1f} s "
                f"({busy / seconds:.2f} of {os.cpu_count()} cores)"
            )
            print(f"ratio supportd / sequential: {seconds / elapsed:.2f}")
            ratio = seconds / elapsed
        return args.n / elapsed, ratio
    finally:
        if pg_name:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{pg_name}"'))
            admin.dispose()
        shutil.rmtree(work, ignore_errors=True)  # a SQLite run leaves 0.4 GB per 10,000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--batch-size", type=int, help="imap.batch_size (default: the desk's)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--smtp-connections", type=int, help="smtp.connections (default: the desk's)"
    )
    parser.add_argument("--parse-workers", type=int, default=None)
    parser.add_argument(
        "--no-acks", action="store_true", help="support.autoreply = false (ingestion alone)"
    )
    parser.add_argument("--compare", action="store_true", help="also run the sequential pipeline")
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="print, for each half second of the run, how busy the machine and each process was",
    )
    parser.add_argument("--profile", type=Path, help="write cProfile output of the main process")
    parser.add_argument(
        "--spy", type=Path, help="sample every thread with py-spy into this collapsed-stack file"
    )
    parser.add_argument(
        "--spy-idle",
        action="store_true",
        help="with --spy: sample waiting threads too (where the main thread waits)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs on the same seeded mailbox, each on a fresh database (with --compare, "
        "each followed by the sequential pipeline); prints every figure and the median",
    )
    args = parser.parse_args()

    dovecot = Dovecot()
    dovecot.start()
    work = Path(tempfile.mkdtemp(prefix="supportd-bench-"))
    try:
        t0 = time.monotonic()
        account, total = seed(dovecot, args.n, random.Random(args.seed))
        print(
            f"seeded {args.n} messages, {total / args.n / 1024:.1f} KiB average, "
            f"in {time.monotonic() - t0:.1f} s"
        )
        # The mailbox is left as it was (BODY.PEEK, no archive folder): each run reads the
        # same mail into a database of its own.
        figures = []
        for index in range(args.repeat):
            if args.repeat > 1:
                print(f"\n== run {index + 1} of {args.repeat}")
            figures.append(measure(args, dovecot, account, work / f"run{index + 1}"))
        if args.repeat > 1:
            rates = sorted(rate for rate, _ in figures)
            print(
                f"\nmsg/s over {args.repeat} runs: {', '.join(f'{r:.0f}' for r in rates)}; "
                f"median {statistics.median(rates):.0f}"
            )
            ratios = sorted(r for _, r in figures if r is not None)
            if ratios:
                print(
                    f"ratio over {args.repeat} runs: {', '.join(f'{r:.2f}' for r in ratios)}; "
                    f"median {statistics.median(ratios):.2f}"
                )
    finally:
        for sink_process in Sink.started:
            if sink_process.poll() is None:
                sink_process.kill()
        dovecot.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
