"""UTCDateTime: the text SQLite holds is SQLAlchemy's own DATETIME text, whatever the zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    Table,
    create_engine,
    insert,
    select,
    text,
)
from sqlalchemy.exc import StatementError

from supportd.adapters.db.outbox import sqlite_time
from supportd.adapters.db.tables import UTCDateTime

_md = MetaData()
_t = Table(
    "t",
    _md,
    Column("id", Integer, primary_key=True),
    Column("utc", UTCDateTime),
    Column("plain", DateTime),
)
_engine = create_engine("sqlite://")
_md.create_all(_engine)


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=6)), timezone(-timedelta(hours=11, minutes=30))]
        ),
    )
)
def test_sqlite_text_is_sqlalchemys_datetime_text(value: datetime) -> None:
    with _engine.begin() as conn:
        conn.execute(_t.delete())
        conn.execute(
            insert(_t), {"utc": value, "plain": value.astimezone(UTC).replace(tzinfo=None)}
        )
        stored, expected = conn.execute(text("SELECT utc, plain FROM t")).one()
        assert stored == expected
        assert conn.execute(select(_t.c.utc)).scalar_one() == value  # aware, same instant


@given(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)))
def test_a_remembered_time_text_is_its_instants_in_any_zone(moment: datetime) -> None:
    """sqlite_time remembers recent texts by the aware time, whose equality is the instant's:
    the same instant in another zone gets the same (UTC) text, another instant its own."""
    utc = moment.replace(tzinfo=UTC)
    expected = moment.isoformat(" ", "microseconds")
    for zone in (timezone(timedelta(hours=6)), UTC, timezone(-timedelta(hours=11, minutes=30))):
        assert sqlite_time(utc.astimezone(zone)) == expected
    later = utc + timedelta(microseconds=1)
    assert sqlite_time(later) == (moment + timedelta(microseconds=1)).isoformat(" ", "microseconds")


def test_the_remembered_texts_are_bounded() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    kept = sqlite_time.cache_info().maxsize
    assert kept is not None
    for n in range(3 * kept):
        sqlite_time(start + timedelta(seconds=n))
    assert sqlite_time.cache_info().currsize <= kept


def test_a_naive_datetime_is_refused() -> None:
    with _engine.begin() as conn, pytest.raises(StatementError, match="naive datetime"):
        conn.execute(insert(_t), {"utc": datetime(2026, 12, 7, 10, 0)})


def test_every_orm_class_declares_exactly_its_tables_columns() -> None:
    from supportd.adapters.db import models

    classes = [c for c in models.Base.registry.mappers]
    assert {m.local_table.name for m in classes} == set(models.Base.metadata.tables)
    for mapper in classes:
        declared = set(mapper.class_.__annotations__)
        assert declared == set(mapper.local_table.columns.keys()), mapper.class_.__name__
