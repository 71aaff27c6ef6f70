"""The escalation scan and `supportd sla` on a desk of a million tickets.

    .venv/bin/python bench/sla.py [--tickets 1000000] [--open 100000] [--postgres]

Fills a database with N tickets of which M are open with a running response clock (their
next events spread over the coming week), then prints:
1. one scan with nothing due (median of 20), the indexed query on next_event_at;
2. the cost per due ticket: 1,000 tickets made due at once, scanned (each evaluated, its
   level raised and an escalation mail composed and queued);
3. `supportd sla`'s query and evaluation for the 200 most urgent, and for all M.
Not a test: it asserts nothing. Needs PostgreSQL on 127.0.0.1:5432 for --postgres.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from tests.conftest import PG_ADMIN_URL  # noqa: E402

from supportd.adapters.db import schema  # noqa: E402
from supportd.adapters.db.views import sla_rows  # noqa: E402
from supportd.bootstrap import build_desk, build_engine, build_sla  # noqa: E402
from supportd.config import settings_from_dict  # noqa: E402

NOW = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)  # Sunday noon in Dhaka: support is open
logging.getLogger("supportd").setLevel(logging.ERROR)  # one line per escalation otherwise


def fill(engine: object, total: int, open_: int) -> None:
    """N tickets in one statement (generate_series / a recursive CTE): closed ones first."""
    started = NOW - timedelta(hours=2)
    with engine.begin() as conn:  # type: ignore[attr-defined]
        if conn.dialect.name == "postgresql":
            series = "SELECT g AS n FROM generate_series(1, :total) AS g"
            ts = "CAST(:started AS timestamp)"
        else:
            series = (
                "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < :total)"
                " SELECT n FROM s"
            )
            ts = ":started"
        conn.execute(
            text(
                "INSERT INTO tickets (number, subject, requester, requester_name, status, "
                "category, created_at, updated_at, escalation_level, message_count, "
                "clock_started_at, clock_first, clock_paused, next_event_at, "
                "next_response_due) "
                f"SELECT n, 'Subject ' || n, 'c' || n || '@customer.example', '', "
                f"CASE WHEN n > :closed THEN 'open' ELSE 'closed' END, 'usage', {ts}, {ts}, 0, 1, "
                f"CASE WHEN n > :closed THEN {ts} END, TRUE, 0, "
                f"CASE WHEN n > :closed THEN {ts} END, "
                f"CASE WHEN n > :closed THEN {ts} END FROM ({series}) AS t"
            ),
            {
                "total": total,
                "closed": total - open_,
                "started": started.replace(tzinfo=None),
            },
        )
        # Spread the open tickets' next events over the coming week (none due now).
        conn.execute(
            text(
                "UPDATE tickets SET next_event_at = :base + (number % 10080) * :minute, "
                "next_response_due = :base + (number % 10080) * :minute WHERE status = 'open'"
            )
            if conn.dialect.name == "postgresql"
            else text(
                "UPDATE tickets SET next_event_at = datetime(:base, '+' || (number % 10080) "
                "|| ' minutes'), next_response_due = datetime(:base, '+' || (number % 10080) "
                "|| ' minutes') WHERE status = 'open'"
            ),
            {
                "base": (NOW + timedelta(minutes=1)).replace(tzinfo=None)
                if conn.dialect.name == "postgresql"
                else (NOW + timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S"),
                "minute": timedelta(minutes=1),
            },
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--open", type=int, default=100_000)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="supportd-sla-"))
    pg_name = None
    admin = None
    if args.postgres:
        pg_name = f"supportd_sla_{uuid.uuid4().hex[:8]}"
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{pg_name}"'))
        url = admin.url.set(database=pg_name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{work / 'sla.db'}"
    settings = settings_from_dict(
        {
            "database": {"url": url},
            "imap": {"host": "127.0.0.1", "username": "x", "password": "x"},
            "support": {
                "address": "support@desk.example",
                "escalation": ["lead@desk.example"],
                "secret_key": "bench-secret-key-0123456789",
            },
        }
    )
    try:
        engine = build_engine(settings)
        schema.upgrade(engine)
        t0 = time.monotonic()
        fill(engine, args.tickets, args.open)
        if args.postgres:  # a live database has statistics (autovacuum); a fresh bulk load not
            with engine.connect() as conn:
                conn.execute(text("COMMIT"))
                conn.execute(text("ANALYZE tickets"))
        backend = "PostgreSQL" if args.postgres else "SQLite"
        print(
            f"{backend}: {args.tickets:,} tickets, {args.open:,} open, "
            f"filled in {time.monotonic() - t0:.1f} s"
        )
        desk = build_desk(settings, engine=engine)
        escalator = desk.escalator
        assert escalator is not None
        escalator.clock = lambda: NOW
        samples = []
        for _ in range(20):
            started = time.perf_counter()
            stats = escalator.scan()
            samples.append(time.perf_counter() - started)
            assert stats.examined == 0
        print(
            f"scan with nothing due: median {statistics.median(samples) * 1000:.2f} ms, "
            f"max {max(samples) * 1000:.2f} ms (20 scans)"
        )

        due = 1000
        with engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE tickets SET next_event_at = :t, clock_started_at = :old "
                    "WHERE number > :first AND number <= :last"
                ),
                {
                    "t": (NOW - timedelta(minutes=1)).replace(tzinfo=None),
                    "old": (NOW - timedelta(days=10)).replace(tzinfo=None),
                    "first": args.tickets - due,
                    "last": args.tickets,
                },
            )
        started = time.perf_counter()
        stats = escalator.scan()
        elapsed = time.perf_counter() - started
        print(
            f"scan with {due} due: {elapsed * 1000:.0f} ms, {elapsed / due * 1000:.2f} ms per "
            f"due ticket (evaluated, level raised, escalation mail composed and queued; "
            f"{stats.breaches} breaches, {stats.warnings} warnings)"
        )

        policy = build_sla(settings, desk.ingestor.replies.calendar)  # type: ignore[union-attr]
        for limit in (200, None):
            started = time.perf_counter()
            rows = sla_rows(engine, policy, NOW, limit)
            elapsed = time.perf_counter() - started
            print(
                f"supportd sla, {'all' if limit is None else limit} most urgent "
                f"({len(rows):,} rows): {elapsed * 1000:.0f} ms"
            )
        desk.close()
    finally:
        if pg_name and admin is not None:
            with admin.connect() as conn:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
                    ),
                    {"n": pg_name},
                )
                conn.execute(text(f'DROP DATABASE IF EXISTS "{pg_name}"'))
            admin.dispose()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
