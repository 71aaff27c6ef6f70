"""The one place that knows every concrete class: Settings in, a wired desk out."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine

from supportd.adapters import mailparse
from supportd.adapters.db import schema
from supportd.adapters.db.engine import make_engine
from supportd.adapters.db.store import unit_of_work
from supportd.adapters.imap import ImapSource
from supportd.config import Settings
from supportd.domain.mail import ParsedMail
from supportd.services.ingest import DeskIdentity, Ingestor


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_serial(raws: Sequence[bytes]) -> list[ParsedMail | BaseException]:
    """Parse each message; a failure is returned in its place, never raised."""
    results: list[ParsedMail | BaseException] = []
    for raw in raws:
        try:
            results.append(mailparse.parse(raw))
        except Exception as exc:
            results.append(exc)
    return results


@dataclass
class Desk:
    settings: Settings
    engine: Engine
    ingestor: Ingestor

    def make_source(self) -> ImapSource:
        return ImapSource(self.settings.imap)

    def close(self) -> None:
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
    ingestor = Ingestor(unit_of_work(engine), desk_identity, parse_serial, utcnow)
    return Desk(settings=settings, engine=engine, ingestor=ingestor)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
