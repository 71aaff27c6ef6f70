"""Running the real desk against the private servers, in-process."""

from __future__ import annotations

from typing import Any

from imapclient import IMAPClient
from sqlalchemy import Engine, func, select

from supportd.adapters.db import schema
from supportd.adapters.db.models import MessageRow
from supportd.bootstrap import Desk, build_desk, build_engine
from supportd.config import Settings, settings_from_dict
from supportd.entrypoints.daemon import Runner
from supportd.services.ingest import IngestStats
from tests.conftest import desk_config
from tests.support.dovecot import Account, Dovecot

OPEN_DESKS: list[Desk] = []


def make_desk(db_url: str, dovecot: Dovecot, account: Account, **overrides: Any) -> Desk:
    """A migrated desk on `db_url`; disposed after the test by the conftest fixture."""
    settings: Settings = settings_from_dict(desk_config(db_url, account, dovecot.port, **overrides))
    engine = build_engine(settings)
    schema.upgrade(engine)
    desk = build_desk(settings, engine=engine)
    OPEN_DESKS.append(desk)
    return desk


def close_desks() -> None:
    while OPEN_DESKS:
        OPEN_DESKS.pop().close()


def run_once(desk: Desk) -> IngestStats:
    return Runner(desk).run_once()


def imap(dovecot: Dovecot, account: Account) -> IMAPClient:
    client = IMAPClient("127.0.0.1", port=dovecot.port, ssl=False, timeout=30)
    client.login(account.username, account.password)
    return client


def append(dovecot: Dovecot, account: Account, *messages: bytes, folder: str = "INBOX") -> None:
    with imap(dovecot, account) as client:
        for raw in messages:
            client.append(folder, raw)


def count(engine: Engine, model: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def incoming(engine: Engine) -> int:
    """Messages stored from the mailbox (outgoing copies on tickets not counted)."""
    with engine.connect() as conn:
        query = select(func.count()).select_from(MessageRow).where(MessageRow.direction == "in")
        return int(conn.execute(query).scalar_one())
