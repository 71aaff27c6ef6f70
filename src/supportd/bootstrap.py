"""The one place that knows every concrete class: Settings in, a wired desk out."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine

from supportd.adapters.db import schema
from supportd.adapters.db.engine import make_engine
from supportd.adapters.db.store import unit_of_work
from supportd.adapters.imap import ImapSource
from supportd.adapters.parsepool import ParsePool, parse_serial
from supportd.config import Settings
from supportd.services.ingest import DeskIdentity, Ingestor


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Desk:
    settings: Settings
    engine: Engine
    ingestor: Ingestor
    parse_pool: ParsePool | None = None

    def make_source(self) -> ImapSource:
        return ImapSource(self.settings.imap)

    def close(self) -> None:
        if self.parse_pool is not None:
            self.parse_pool.close()
        self.engine.dispose()


def build_engine(settings: Settings) -> Engine:
    return make_engine(settings.database.url, echo=settings.database.echo)


def build_desk(
    settings: Settings, *, engine: Engine | None = None, check_schema: bool = True
) -> Desk:
    engine = engine or build_engine(settings)
    if check_schema:
        schema.require_current(engine)
    desk_identity = DeskIdentity(
        product=settings.support.product,
        address=settings.support.address,
        agents=frozenset(settings.support.agents),
    )
    workers = settings.imap.parse_workers
    if workers is None:
        workers = 1 if (os.cpu_count() or 1) > 1 else 0
    pool = ParsePool(workers) if workers > 0 else None
    ingestor = Ingestor(
        unit_of_work(engine),
        desk_identity,
        parse_serial,
        utcnow,
        parse_async=pool.parse_async if pool else None,
    )
    return Desk(settings=settings, engine=engine, ingestor=ingestor, parse_pool=pool)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
