"""Alembic migrations, run programmatically on a profile's engine (`score-plugins db ...`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(_config(engine), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    command.downgrade(_config(engine), revision)


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head() -> str | None:
    return ScriptDirectory.from_config(_config(None)).get_current_head()  # type: ignore[arg-type]


def is_current(engine: Engine) -> bool:
    return current(engine) == head()


def known_revisions() -> list[str]:
    """Every revision this version knows, oldest first."""
    script = ScriptDirectory.from_config(_config(None))  # type: ignore[arg-type]
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def check_revision(revision: str) -> None:
    """A revision the user typed: `base`, `head` or a known id; anything else is bad input, the known ones listed."""
    from pipeline.errors import BadInput

    known = known_revisions()
    if revision not in ("base", "head", *known):
        raise BadInput(f"unknown revision {revision!r}: known are base, {', '.join(known)} and head")
