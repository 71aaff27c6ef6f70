"""Every migration walks down to nothing and back up, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import insert, inspect, text

from supportd.adapters.db import schema, tables
from supportd.adapters.db.engine import make_engine
from supportd.adapters.db.models import Base
from supportd.errors import SchemaError


def test_walk_every_revision_down_and_up(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        script = ScriptDirectory.from_config(schema.alembic_config(engine))
        revisions = [r.revision for r in script.walk_revisions("base", "heads")]
        revisions.reverse()  # oldest first
        for revision in revisions:
            schema.upgrade(engine, revision)
            assert schema.current_revision(engine) == revision
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        for revision in reversed(revisions):
            schema.downgrade(engine, f"{revision}-1" if revision != revisions[0] else "base")
        assert schema.current_revision(engine) is None
        assert not set(Base.metadata.tables) & set(inspect(engine).get_table_names())
        schema.upgrade(engine)
        assert schema.current_revision(engine) == schema.head_revision(engine)
    finally:
        engine.dispose()


def test_models_match_the_migrations(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(db_url)
    try:
        schema.upgrade(engine)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": False})
            assert compare_metadata(ctx, Base.metadata) == []
    finally:
        engine.dispose()


def test_unmigrated_database_is_refused(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    with pytest.raises(SchemaError, match="supportd migrate"):
        schema.require_current(engine)
    engine.dispose()


def test_schema_head_constant_matches_the_migrations(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    assert schema.head_revision(engine) == schema.HEAD
    engine.dispose()


def test_postgresql_compresses_stored_mail_with_lz4(pg_url: str) -> None:
    """pglz cost the server as much CPU as supportd (issue 9); 0008 sets lz4, its downgrade
    sets pglz back."""
    engine = make_engine(pg_url)
    query = text(
        "SELECT attname, attcompression FROM pg_attribute WHERE attrelid = 'messages'::regclass"
        " AND attname IN ('raw', 'text') ORDER BY attname"
    )
    try:
        schema.upgrade(engine)
        with engine.connect() as conn:
            assert list(conn.execute(query)) == [("raw", "l"), ("text", "l")]
        schema.downgrade(engine, "0007")
        with engine.connect() as conn:
            assert list(conn.execute(query)) == [("raw", "p"), ("text", "p")]
    finally:
        engine.dispose()


def test_the_outbox_claim_reads_its_row_from_the_index_without_sorting(pg_url: str) -> None:
    """A batch's rows share one next_attempt_at, and the claim (ORDER BY next_attempt_at,
    id LIMIT n FOR UPDATE SKIP LOCKED) sorted all of them for every mail sent (issue 9). The
    journal of sent rows it skips is looked up by key, not read whole."""
    from supportd.adapters.db.outbox import _PG_CLAIM
    from tests.support.outbox import queue_rows

    engine = make_engine(pg_url)
    try:
        schema.upgrade(engine)
        queue_rows(engine, 50, datetime.now(UTC) - timedelta(seconds=1))
        with engine.connect() as conn:
            conn.execute(text("SET enable_seqscan = off"))  # a tiny table: use the index
            plan = "\n".join(
                conn.execute(
                    text("EXPLAIN " + _PG_CLAIM.replace("?", ":now", 1).replace("?", ":n")),
                    {"now": datetime.now(UTC), "n": 8},
                ).scalars()
            )
        assert "ix_outbox_due" in plan and "Sort" not in plan, plan
        assert "pk_outbox_sent" in plan, plan
    finally:
        engine.dispose()


def test_downgrading_past_the_journal_of_sent_rows_keeps_them_sent(db_url: str) -> None:
    """A row a crash left journaled (0010) was sent: without the journal it must not be due."""
    from tests.support.outbox import queue_rows

    engine = make_engine(db_url)
    try:
        schema.upgrade(engine)
        sent, waiting = queue_rows(engine, 2, datetime(2026, 3, 1, tzinfo=UTC))
        with engine.begin() as conn:
            conn.execute(
                insert(tables.outbox_sent).values(id=sent, at=datetime(2026, 3, 1, 9, tzinfo=UTC))
            )
        schema.downgrade(engine, "0009")
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, status FROM outbox ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(sent, "sent"), (waiting, "pending")]
    finally:
        engine.dispose()


def test_downgrading_past_text_references_gives_each_row_its_text_back(db_url: str) -> None:
    """0011's notification rows name the message holding the customer's text; before it,
    each held its own copy, and a downgrade must give it back (the intent after a line
    break, as that release's renderer reads it)."""
    at = datetime(2026, 3, 1, 9, tzinfo=UTC)
    words = "The export is blank.\nSince Monday."
    engine = make_engine(db_url)
    try:
        schema.upgrade(engine)
        with engine.begin() as conn:
            number = conn.execute(
                insert(tables.tickets).values(
                    subject="Export",
                    requester="a@example.com",
                    requester_name="",
                    status="open",
                    category="other",
                    category_predicted="other",
                    created_at=at,
                    updated_at=at,
                    escalation_level=0,
                    message_count=1,
                )
            ).inserted_primary_key[0]
            common = {"ticket_number": number, "subject": "Export", "date": at, "created_at": at}
            source = conn.execute(
                insert(tables.messages).values(
                    direction="in", kind="customer", text=words, raw=b"x", **common
                )
            ).inserted_primary_key[0]
            conn.execute(
                insert(tables.messages).values(
                    direction="out",
                    kind="notification",
                    text="",
                    text_of=source,
                    raw=b"",
                    **common,
                )
            )
            conn.execute(
                insert(tables.outbox).values(
                    ticket_number=number,
                    kind="notification",
                    sender="desk@example.com",
                    recipients="agent@example.com",
                    raw=b"",
                    intent='{"kind": "notification"}',
                    text_of=source,
                    status="pending",
                    attempts=0,
                    next_attempt_at=at,
                    last_error="",
                    created_at=at,
                )
            )
        schema.downgrade(engine, "0010")
        with engine.connect() as conn:
            copy = conn.execute(text("SELECT text FROM messages WHERE kind = 'notification'"))
            intent = conn.execute(text("SELECT intent FROM outbox")).scalar_one()
            assert copy.scalar_one() == words
        assert intent == '{"kind": "notification"}\n' + words
    finally:
        engine.dispose()
