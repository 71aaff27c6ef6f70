"""What each stage of the desk costs a mail, alone: the figures to plan from.

    .venv/bin/python bench/stages.py [-n 3000] [--postgres] [--smtp-connections N]

bench/ingest.py times the whole `run --once`, two processes sharing two cores with Dovecot
and the SMTP sink; its figures move by ±10 % run to run with this machine's speed, and a
change worth 3 % hides in them. This runs each stage of the same backlog (bench/ingest.py's
mails, one agent, acknowledgements on) in one process, one after the other, and prints the
CPU time each took per mail (time.process_time: this process only; the sink is another):

- parse: parsepool.parse_serial (MIME, the robot verdict, the classifier), what the worker
  or the daemon does to each fetched mail;
- store: Ingestor.ingest_batch on parsed batches of 100 (threading, acknowledgements
  written, notifications queued, one commit a batch), the daemon's main thread;
- outbox: OutboxSender.send_due to bench/sink.py (rendering notifications, SMTP, marks),
  per mail and per mail sent;
- acknowledgement and notification: writing one, best of five passes over the mails
  that got one (Composer.acknowledgement, TeamComposer.render).

Compare two versions by running this for each, alternately, a few times. No network but
loopback and no Dovecot. Not a test: no assertions.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from tests.conftest import PG_ADMIN_URL, desk_config, write_toml  # noqa: E402

from bench.ingest import Sink, backlog  # noqa: E402
from supportd.adapters import compose  # noqa: E402
from supportd.adapters.parsepool import parse_serial  # noqa: E402
from supportd.bootstrap import build_desk  # noqa: E402
from supportd.config import load_settings  # noqa: E402
from supportd.domain.mail import FetchedMail  # noqa: E402

BATCH = 100


def cpu(work: Callable[[], object]) -> float:
    started = time.process_time()
    work()
    return time.process_time() - started


def best(calls: Sequence[tuple[Callable[..., object], tuple[Any, ...]]], passes: int = 5) -> float:
    """CPU seconds per call, the best of `passes` passes over all of `calls`."""

    def one_pass() -> None:
        for function, args in calls:
            function(*args)

    return min(cpu(one_pass) for _ in range(passes)) / max(1, len(calls))


def database(args: argparse.Namespace, work: Path) -> tuple[str, Callable[[], None]]:
    if not args.postgres:
        return f"sqlite:///{work / 'stages.db'}", lambda: None
    name = f"supportd_stages_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return admin.url.set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=3000)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--smtp-connections", type=int, help="smtp.connections (default 4)")
    args = parser.parse_args()
    n = args.n

    work = Path(tempfile.mkdtemp(prefix="supportd-stages-"))
    url, drop = database(args, work)
    sink = Sink(work)
    try:
        extra = {"smtp__connections": args.smtp_connections} if args.smtp_connections else {}
        config = write_toml(
            work / "supportd.toml",
            desk_config(url, None, 1, imap__parse_workers=0, smtp__port=sink.port, **extra),
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTD_")}
        migrate = [sys.executable, "-m", "supportd", "--config", str(config), "migrate"]
        subprocess.run(migrate, check=True, env=env, capture_output=True)
        for key in [k for k in os.environ if k.startswith("SUPPORTD_")]:
            del os.environ[key]
        settings = load_settings(config)
        desk = build_desk(settings)

        # What each acknowledgement and notification was written from, for the best-of pass.
        acks: list[tuple[Any, ...]] = []
        acknowledgement = compose.Composer.acknowledgement

        def keep(self: compose.Composer, ctx: Any, message_id: str) -> Any:
            acks.append((self, ctx, message_id))
            return acknowledgement(self, ctx, message_id)

        compose.Composer.acknowledgement = keep  # type: ignore[method-assign]

        raws = backlog(n, random.Random(args.seed))
        parse = partial(
            parse_serial,
            rules=settings.classification.rules,
            model=settings.classification.model,
        )
        parse(raws[:20])  # the classifier's model loaded, as in a running worker
        parsed: list[Any] = []
        parse_s = cpu(lambda: parsed.extend(parse(raws)))
        now = datetime.now(UTC)
        fetched = [FetchedMail(uid + 1, now, raw) for uid, raw in enumerate(raws)]

        def store() -> None:
            for start in range(0, n, BATCH):
                desk.ingestor.ingest_batch(
                    "INBOX", 1, fetched[start : start + BATCH], parsed[start : start + BATCH]
                )

        store_s = cpu(store)
        compose.Composer.acknowledgement = acknowledgement  # type: ignore[method-assign]
        assert desk.outbox_connections is not None
        with desk.outbox_connections.transaction() as queue:  # as the sender reads them
            due = queue.due(datetime.now(UTC), 10 * n)
        intents = [(mail.intent, mail.message_id) for mail in due if mail.intent is not None]
        outbox_s = cpu(desk.outbox.send_due)
        sent, size = sink.stop()
        render = desk.outbox.render
        assert render is not None
        ack_s = best([(acknowledgement, call) for call in acks])
        notification_s = best([(render, (intent, mid)) for intent, mid in intents])
        desk.close()
        db_size = (work / "stages.db").stat().st_size if not args.postgres else None
    finally:
        if sink.proc.poll() is None:
            sink.proc.kill()
        drop()
        shutil.rmtree(work, ignore_errors=True)

    us = 1e6
    kind = "PostgreSQL" if args.postgres else "SQLite"
    print(f"{n} mails, {kind}, {len(acks)} acknowledgements, {len(intents)} notifications")
    print(f"  parse          {parse_s / n * us:7.0f} us a mail")
    print(f"  store          {store_s / n * us:7.0f} us a mail (batches of {BATCH})")
    print(
        f"  outbox         {outbox_s / n * us:7.0f} us a mail, {outbox_s / max(1, sent) * us:.0f}"
        f" us a mail sent ({sent} sent, {size / max(1, sent) / 1024:.1f} KiB average)"
    )
    print(f"  in all         {(parse_s + store_s + outbox_s) / n * us:7.0f} us a mail")
    print(f"  acknowledgement {ack_s * us:6.0f} us to write one (best of 5)")
    print(f"  notification   {notification_s * us:7.0f} us to write one (best of 5)")
    if db_size is not None:
        print(f"  database       {db_size / 1e6:7.1f} MB")


if __name__ == "__main__":
    main()
