"""Schema migrations with alembic, run from the installed package or the source tree.

alembic itself is imported only to migrate (it costs ~11 MB of resident memory, and the
daemon only needs to know whether the schema is current).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

from supportd.errors import SchemaError

if TYPE_CHECKING:
    from alembic.config import Config

# The newest revision in migrations/versions; a test keeps the two in step.
HEAD = "0011"


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
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision(engine: Engine) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(engine), revision)


def require_current(engine: Engine) -> None:
    """Refuse to run on a database that is not at the newest schema."""
    current = current_revision(engine)
    if current != HEAD:
        state = "empty (never migrated)" if current is None else f"at revision {current}"
        raise SchemaError(
            f"database {engine.url.render_as_string(hide_password=True)} is {state}, "
            f"this supportd needs {HEAD}: run `supportd migrate`"
        )
