"""INSERT ... ON CONFLICT for the dialects we run on (Postgres and SQLite), in one place."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_for(session: Session, table: Any):
    """The dialect's own `insert`, which knows `on_conflict_do_nothing/_update`."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"no upsert for database dialect {name}")
