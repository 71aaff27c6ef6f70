"""One owner per mailbox: fencing, the unique delivery key, standby, takeover, exit 75.

Several processes on one database and one mailbox (a second daemon, an operator's
`run --once`, a standby): every message stored once, every thread on one ticket.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError

from supportd.adapters.db.engine import make_engine
from supportd.adapters.db.models import (
    DuplicateDelivery,
    MailboxState,
    MessageRow,
    OutboxItem,
    Ticket,
)
from supportd.domain.mail import FetchedMail
from supportd.errors import FencedError
from tests.conftest import desk_config, write_toml
from tests.integration.test_crash import conversation
from tests.support.desk import append, count, incoming, make_desk
from tests.support.dovecot import Account, Dovecot
from tests.support.mail import make_mail
from tests.support.smtp import Sink


def wait_for(condition: Callable[[], bool], timeout: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SUPPORTD_")}


class Daemon:
    """`supportd run` in a subprocess with its log in a file."""

    def __init__(self, config: Path, name: str) -> None:
        self.log = config.parent / f"{name}.log"
        self._out = self.log.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supportd", "--config", str(config), "run"],
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=self._out,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._out.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self._out.closed:
            self._out.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def owner_pid(engine: Engine) -> int | None:
    with engine.connect() as conn:
        owner = conn.execute(select(MailboxState.owner)).scalar()
    found = re.search(r"pid (\d+)", owner or "")
    return int(found.group(1)) if found else None


def epoch(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(MailboxState.owner_epoch)).scalar() or 0)


def test_an_owner_that_lost_the_mailbox_cannot_commit(
    db_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    old = make_desk(db_url, dovecot, account, support__autoreply=False)
    new = make_desk(db_url, dovecot, account, support__autoreply=False)
    source_old, source_new = old.make_source(), new.make_source()
    assert old.ingestor.claim(source_old.key, "old owner") == 1
    assert new.ingestor.claim(source_new.key, "new owner") == 2  # took over meanwhile
    for n in range(5):
        dovecot.deliver(account, make_mail(message_id=f"<f{n}@x.example>", subject=f"f{n}"))
    try:
        with pytest.raises(FencedError, match="another process took the mailbox over"):
            old.ingestor.drain(source_old)
        assert incoming(old.engine) == 0  # the fenced batch was rolled back whole
        assert new.ingestor.drain(source_new).stored == 5
        append(dovecot, account, make_mail(message_id="<g@x.example>", subject="g"))
        with pytest.raises(FencedError):  # and it stays fenced
            old.ingestor.drain(source_old)
    finally:
        source_old.close()
        source_new.close()
    assert incoming(new.engine) == 5  # the new owner takes the last mail on its next poll


def test_the_database_refuses_a_second_copy_of_a_delivery(
    db_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    desk = make_desk(db_url, dovecot, account, support__autoreply=False)
    source = desk.make_source()
    dovecot.deliver(account, make_mail())
    desk.ingestor.drain(source)
    source.close()
    with desk.engine.connect() as conn:
        row = dict(
            conn.execute(select(MessageRow).where(MessageRow.direction == "in")).mappings().one()
        )
        row.pop("id")
        with pytest.raises(IntegrityError):
            conn.execute(insert(MessageRow), row)


def test_a_copy_stored_meanwhile_by_another_writer_becomes_a_duplicate(
    db_url: str, dovecot: Dovecot, account: Account, smtp: Sink
) -> None:
    """The race the unique key settles: the lookup saw nothing, the insert collides."""
    desk = make_desk(db_url, dovecot, account, support__autoreply=False)
    source = desk.make_source()
    dovecot.deliver(account, make_mail())
    desk.ingestor.drain(source)
    source.close()
    with desk.engine.connect() as conn:
        raw = conn.execute(select(MessageRow.raw).where(MessageRow.direction == "in")).scalar_one()
    real = desk.ingestor.uow
    blind = {"left": 2}  # the bulk try and the first single try do not see the copy

    class Blind:
        def __init__(self, store: Any) -> None:
            self._store = store

        def __getattr__(self, name: str) -> Any:
            return getattr(self._store, name)

        def find_deliveries(self, mailbox: str, keys: Any) -> dict[str, int]:
            if blind["left"] > 0:
                blind["left"] -= 1
                return {}
            return dict(self._store.find_deliveries(mailbox, keys))

    from contextlib import contextmanager

    @contextmanager
    def blind_uow(durable: bool = True) -> Any:
        with real(durable=durable) as store:
            yield Blind(store)

    desk.ingestor.uow = blind_uow
    fetched = FetchedMail(99, datetime(2026, 11, 29, 6, 0, tzinfo=UTC), raw)
    stats = desk.ingestor.ingest_batch(source.key, source.uidvalidity, [fetched])
    assert (stats.stored, stats.duplicates, stats.quarantined) == (0, 1, 0)
    assert incoming(desk.engine) == 1
    assert count(desk.engine, DuplicateDelivery) == 1


@pytest.fixture
def config(db_url: str, dovecot: Dovecot, account: Account, smtp: Sink, tmp_path: Path) -> Path:
    make_desk(db_url, dovecot, account)  # migrates
    return write_toml(
        tmp_path / "supportd.toml",
        desk_config(
            db_url,
            account,
            dovecot.port,
            imap__batch_size=20,
            imap__poll_interval=0.3,
            ha__takeover_seconds=6,
        ),
    )


def test_run_once_beside_a_daemon_exits_75_naming_it_and_a_second_daemon_stands_by(
    db_url: str, dovecot: Dovecot, account: Account, config: Path
) -> None:
    engine = make_engine(db_url)
    first = Daemon(config, "first")
    second: Daemon | None = None
    try:
        dovecot.deliver(account, make_mail(message_id="<a@x.example>", subject="a"))
        assert wait_for(lambda: incoming(engine) == 1, 30) is not None, first.text()
        before = (incoming(engine), epoch(engine))

        once = subprocess.run(
            [sys.executable, "-m", "supportd", "--config", str(config), "run", "--once"],
            env=env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert once.returncode == 75, once.stderr
        [line] = once.stderr.strip().splitlines()
        assert f"pid {first.pid}" in line and "not touching it" in line
        assert (incoming(engine), epoch(engine)) == before  # touched nothing

        check = subprocess.run(
            [sys.executable, "-m", "supportd", "--config", str(config), "check"],
            env=env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert f"served by host {os.uname().nodename} pid {first.pid}" in check.stdout

        second = Daemon(config, "second")
        assert wait_for(lambda: "waiting as a standby" in second.text(), 20), second.text()
        assert f"pid {first.pid}" in second.text()
        dovecot.deliver(account, make_mail(message_id="<b@x.example>", subject="b"))
        assert wait_for(lambda: incoming(engine) == 2, 30) is not None
        assert owner_pid(engine) == first.pid

        first.kill()
        killed = time.monotonic()
        took = wait_for(lambda: owner_pid(engine) == second.pid, 30)
        assert took is not None, second.text()
        print(f"takeover after kill -9 of the owner: {took:.2f} s")
        assert took <= 6  # ha.takeover_seconds
        dovecot.deliver(account, make_mail(message_id="<c@x.example>", subject="c"))
        assert wait_for(lambda: incoming(engine) == 3, 30) is not None, second.text()
        print(f"mail after the takeover stored {time.monotonic() - killed:.2f} s after the kill")
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert "this process owns the mailbox" in second.text()
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Ticket)).scalar_one() == 3
    engine.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_two_daemons_on_postgresql_with_kills_store_each_message_once(
    pg_url: str, dovecot: Dovecot, account: Account, smtp: Sink, tmp_path: Path
) -> None:
    seed = int(os.environ.get("SUPPORTD_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"two-daemon test seed {seed}")
    make_desk(pg_url, dovecot, account)  # migrates
    config = write_toml(
        tmp_path / "supportd.toml",
        desk_config(
            pg_url,
            account,
            dovecot.port,
            imap__batch_size=25,
            imap__idle=False,
            imap__poll_interval=0.2,
            ha__takeover_seconds=6,
        ),
    )
    mails: list[bytes] = []
    roots = 0
    while len(mails) < 1500:
        batch = conversation(roots)
        roots += 1
        mails.extend(batch)
        for raw in batch:
            dovecot.deliver(account, raw)
    engine = make_engine(pg_url)
    daemons = {"a": Daemon(config, "a"), "b": Daemon(config, "b")}
    kills = 0
    takeovers: list[float] = []
    try:
        for round_no in range(6):
            time.sleep(rng.uniform(0.5, 1.5))
            owner = owner_pid(engine)
            # Kill the owner most of the time (a takeover), sometimes the standby.
            name = next(
                (n for n, d in daemons.items() if (d.pid == owner) == (round_no % 3 != 2)), "a"
            )
            victim = daemons[name]
            was_owner = victim.pid == owner
            before = epoch(engine)
            victim.kill()
            kills += 1
            if was_owner:
                took = wait_for(lambda e=before: epoch(engine) > e, 30)  # type: ignore[misc]
                assert took is not None, daemons["a"].text() + daemons["b"].text()
                takeovers.append(took)
            daemons[name] = Daemon(config, name)
        done = wait_for(lambda: incoming(engine) >= len(mails) and _outbox_idle(engine), 120)
        assert done is not None, f"seed {seed}: {incoming(engine)} of {len(mails)} stored"
    finally:
        for daemon in daemons.values():
            daemon.stop()
    print(f"takeover after kill -9 of the owner: {[f'{t:.2f}' for t in takeovers]} s")
    with engine.connect() as conn:
        inbound = select(func.count()).where(MessageRow.direction == "in")
        total = conn.execute(inbound.select_from(MessageRow)).scalar_one()
        distinct = conn.execute(
            select(func.count(func.distinct(MessageRow.message_id))).where(
                MessageRow.direction == "in"
            )
        ).scalar_one()
        tickets = conn.execute(select(func.count()).select_from(Ticket)).scalar_one()
        outbox = Counter(conn.execute(select(OutboxItem.kind, OutboxItem.status)).all())
    engine.dispose()
    assert total == distinct == len(mails), f"seed {seed}"
    assert tickets == roots, f"seed {seed}: {tickets} tickets for {roots} conversations"
    # One acknowledgement per ticket, one notification per customer message, all sent.
    assert outbox == {("auto_reply", "sent"): roots, ("notification", "sent"): len(mails)}
    acks = Counter(r.recipients[0] for r in smtp.received if r.recipients != ["agent@desk.example"])
    assert set(acks) == {f"user{n}@customer.example" for n in range(roots)}
    repeated = sum(n - 1 for n in acks.values())
    print(f"acknowledgements sent twice: {repeated} (kills: {kills})")
    # At most the rows in flight at each kill: one per SMTP connection (smtp.connections).
    assert repeated <= kills * 4


def _outbox_idle(engine: Engine) -> bool:
    with engine.connect() as conn:
        return not conn.execute(
            select(func.count()).where(OutboxItem.status == "pending").select_from(OutboxItem)
        ).scalar_one()


def test_sqlite_lock_file_names_its_owner(sqlite_url: str, tmp_path: Path) -> None:
    from supportd.adapters.db.ownership import FileLock

    path = tmp_path / "supportd.db.lock"
    first, second = FileLock(path, "host h pid 1"), FileLock(path, "host h pid 2")
    assert first.try_acquire() and first.alive()
    assert not second.try_acquire()
    assert second.owner() == "host h pid 1"
    first.release()
    assert second.owner() == "" and second.try_acquire()
    path.unlink()  # someone removed the file: the lock no longer protects anything
    assert not second.alive()
    second.release()
