"""kill -9 at random moments: afterwards every message is stored exactly once, every
acknowledgement went out, and only the rows in flight at a kill (one per SMTP connection)
went out twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from supportd.adapters.db import schema
from supportd.adapters.db.engine import make_engine
from supportd.adapters.db.models import MailboxState, MessageRow, OutboxItem, Ticket
from tests.conftest import desk_config, write_toml
from tests.support.dovecot import Account, Dovecot
from tests.support.mail import make_mail
from tests.support.smtp import Sink

pytestmark = pytest.mark.slow

ROUNDS = 8
CONNECTIONS = 4  # smtp.connections: rows in flight at once, so at most this many repeat
IN = MessageRow.direction == "in"
PER_ROUND = 80


def conversation(n: int) -> list[bytes]:
    """A question and up to two replies that thread by In-Reply-To."""
    root = f"<c{n}@customer.example>"
    mails = [
        make_mail(
            sender=f"user{n}@customer.example",
            subject=f"Question {n}",
            body=("detail " * 400),
            message_id=root,
        )
    ]
    for k in range(n % 3):
        mails.append(
            make_mail(
                sender=f"user{n}@customer.example",
                subject=f"Re: Question {n}",
                body="more " * 200,
                message_id=f"<c{n}r{k}@customer.example>",
                In_Reply_To=root,
                References=root,
            )
        )
    return mails


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    db_url: str, dovecot: Dovecot, account: Account, smtp: Sink, tmp_path: Path
) -> None:
    seed = int(os.environ.get("SUPPORTD_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"crash test seed {seed}")
    config = write_toml(
        tmp_path / "supportd.toml",
        desk_config(
            db_url,
            account,
            dovecot.port,
            imap__batch_size=15,
            imap__idle=False,
            imap__poll_interval=0.2,
            smtp__connections=CONNECTIONS,
        ),
    )
    engine = make_engine(db_url)
    schema.upgrade(engine)

    mails: list[bytes] = []
    roots = 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTD_")}
    progress = []
    for round_no in range(ROUNDS):
        while len(mails) < PER_ROUND * (round_no + 1):
            batch = conversation(roots)
            roots += 1
            for raw in batch:
                dovecot.deliver(account, raw)
            mails.extend(batch)
        proc = subprocess.Popen(
            [sys.executable, "-m", "supportd", "--config", str(config), "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(rng.uniform(0.4, 1.8))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()
        with engine.connect() as conn:
            progress.append(
                conn.execute(select(func.count()).select_from(MessageRow).where(IN)).scalar_one()
            )
    print(f"messages stored after each kill: {progress} of {len(mails)}")

    final = subprocess.run(
        [sys.executable, "-m", "supportd", "--config", str(config), "run", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert final.returncode == 0, final.stderr
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(MessageRow).where(IN)).scalar_one()
        distinct = conn.execute(
            select(func.count(func.distinct(MessageRow.message_id))).where(IN)
        ).scalar_one()
        uids = conn.execute(
            select(func.count(func.distinct(MessageRow.uid))).where(IN)
        ).scalar_one()
        tickets = conn.execute(select(func.count()).select_from(Ticket)).scalar_one()
        last_uid = conn.execute(select(MailboxState.last_uid)).scalar_one()
        per_ticket = conn.execute(select(func.sum(Ticket.message_count))).scalar_one()
        outbox = Counter(conn.execute(select(OutboxItem.kind, OutboxItem.status)).all())
    engine.dispose()
    assert total == distinct == uids == len(mails), f"seed {seed}"
    assert tickets == roots, f"seed {seed}: {tickets} tickets for {roots} conversations"
    assert per_ticket == len(mails)  # message_count counts the customer's mail
    assert last_uid == len(mails)
    # Acknowledgements and notifications: all sent, none lost, repeats only in flight.
    assert outbox == {("auto_reply", "sent"): roots, ("notification", "sent"): len(mails)}
    acks = Counter(r.recipients[0] for r in smtp.received if r.recipients != ["agent@desk.example"])
    assert set(acks) == {f"user{n}@customer.example" for n in range(roots)}, f"seed {seed}"
    notes = sum(1 for r in smtp.received if r.recipients == ["agent@desk.example"])
    repeated = sum(n - 1 for n in acks.values()) + notes - len(mails)
    print(f"mails sent twice: {repeated} over {ROUNDS} kills (bound {ROUNDS * CONNECTIONS})")
    assert notes >= len(mails)
    assert repeated <= ROUNDS * CONNECTIONS, f"seed {seed}"
