"""Schema migrations with alembic, run from the installed package or the source tree."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from supportd.errors import SchemaError


def migrations_dir() -> Path:
    """The alembic scripts: inside the wheel, or ../migrations in a source checkout."""
    packaged = Path(str(files("supportd"))) / "migrations"
    if (packaged / "env.py").is_file():
        return packaged
    source = Path(__file__).resolve().parents[4] / "migrations"
    if (source / "env.py").is_file():
        return source
    raise SchemaError("alembic migrations not found in the package or the source tree")


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(alembic_config(engine), revision)


def require_current(engine: Engine) -> None:
    """Refuse to run on a database that is not at the newest schema."""
    current, head = current_revision(engine), head_revision(engine)
    if current != head:
        state = "empty (never migrated)" if current is None else f"at revision {current}"
        raise SchemaError(
            f"database {engine.url.render_as_string(hide_password=True)} is {state}, "
            f"this supportd needs {head}: run `supportd migrate`"
        )
