"""Alembic environment: the same Settings and engine the daemon uses."""

from __future__ import annotations

from alembic import context

from supportd.adapters.db.engine import make_engine
from supportd.adapters.db.models import Base

config = context.config
target_metadata = Base.metadata


def _engine():  # type: ignore[no-untyped-def]
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine
    from supportd.config import load_settings  # developer use: `alembic` on the command line

    settings = load_settings()
    return make_engine(settings.database.url)


def run_migrations_online() -> None:
    engine = _engine()
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `supportd migrate`")
run_migrations_online()
