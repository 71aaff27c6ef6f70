"""Ingestion benchmark: N messages in a private Dovecot, timed through `supportd run --once`.

    .venv/bin/python bench/ingest.py [-n 10000] [--postgres] [--batch-size 200]

Prints messages per second and the peak RSS of the supportd process (and of its children,
if any). Needs root and Dovecot, like the integration tests. Not a test: no assertions.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

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


def seed(dovecot: Dovecot, n: int, rng: random.Random) -> tuple[object, int]:
    account = dovecot.add_user()
    total = 0
    roots: list[str] = []
    start = time.time() - n
    for i in range(n):
        size = min(50_000, 2_000 + int(rng.expovariate(1 / 6_000)))
        headers: dict[str, str] = {}
        subject = f"Question {i} about {rng.choice(WORDS)}"
        if roots and rng.random() < 0.3:
            parent = rng.choice(roots)
            headers = {"In_Reply_To": parent, "References": parent}
            subject = "Re: " + subject
        mid = f"<b{i}.{uuid.uuid4().hex[:8]}@customer.example>"
        raw = make_mail(
            sender=f"Customer {i % 500} <customer{i % 500}@example.com>",
            subject=subject,
            body=body_of(rng, size),
            message_id=mid,
            **headers,
        )
        roots.append(mid)
        total += len(raw)
        dovecot.deliver(account, raw, when=start + i)
    # Let Dovecot index the folder once, as a long-running server would have.
    with IMAPClient("127.0.0.1", port=dovecot.port, ssl=False) as client:
        client.login(account.username, account.password)
        client.select_folder("INBOX", readonly=True)
        client.fetch(client.search(["ALL"]), ["RFC822.SIZE"])
    return account, total


def tree_rss_kib(pid: int) -> int:
    """Resident memory of a process and its children, from /proc (KiB)."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(
                next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
            )
            for task in Path(f"/proc/{current}/task").iterdir():
                pids.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, StopIteration, ValueError):
            continue
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--parse-workers", type=int, default=None)
    parser.add_argument(
        "--no-acks", action="store_true", help="support.autoreply = false (ingestion alone)"
    )
    args = parser.parse_args()

    dovecot = Dovecot()
    dovecot.start()
    work = Path(tempfile.mkdtemp(prefix="supportd-bench-"))
    pg_name = None
    try:
        t0 = time.monotonic()
        account, total = seed(dovecot, args.n, random.Random(args.seed))
        print(
            f"seeded {args.n} messages, {total / args.n / 1024:.1f} KiB average, "
            f"in {time.monotonic() - t0:.1f} s"
        )
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
                imap__batch_size=args.batch_size,  # type: ignore[arg-type]
                support__autoreply=not args.no_acks,
                **(
                    {"imap__parse_workers": args.parse_workers}
                    if args.parse_workers is not None
                    else {}
                ),
            ),
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTD_")}
        cmd = [sys.executable, "-m", "supportd", "--config", str(config)]
        subprocess.run([*cmd, "migrate"], check=True, env=env, capture_output=True)
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
        while proc.poll() is None:
            peak_tree = max(peak_tree, tree_rss_kib(proc.pid))
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        stdout, stderr = proc.communicate()
        result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        if result.returncode != 0:
            print(result.stderr)
            raise SystemExit(1)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
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
        print(
            f"peak RSS: largest single process {peak_kib / 1024:.0f} MiB; "
            f"supportd with its parse worker together {peak_tree / 1024:.0f} MiB"
        )
        if not args.postgres:
            print(f"database size: {(work / 'bench.db').stat().st_size / 1e6:.0f} MB")
    finally:
        dovecot.cleanup()
        if pg_name:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{pg_name}"'))
            admin.dispose()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
