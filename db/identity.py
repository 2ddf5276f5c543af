"""Each database records which profile it is, so no connection string can make dev or test write into prod.

A URL can be spelled many ways (`localhost` or `127.0.0.1`, a Unix socket, `?connect_timeout=5`, a DNS alias, a
pooler in front): comparing URLs cannot tell two spellings of one database apart. The database itself can: one row
(`database_identity`) names its profile and a random id, written once when the database is created or adopted, and
read back by every connection.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import func, inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from db.models import DatabaseIdentity, Run, Score

TABLE = DatabaseIdentity.__tablename__


@dataclass(frozen=True)
class Identity:
    profile: str
    database_id: str
    created_at: datetime | None = None
    adopted: bool = False

    def to_json(self) -> dict:
        return {"profile": self.profile, "database_id": self.database_id, "adopted": self.adopted,
                "created_at": self.created_at.isoformat() if self.created_at else None}


def read(conn: Connection) -> Identity | None:
    """The recorded identity, or None when this database records none (new, or older than the record)."""
    if not inspect(conn).has_table(TABLE):
        return None
    row = conn.execute(select(DatabaseIdentity.profile, DatabaseIdentity.database_id, DatabaseIdentity.created_at,
                              DatabaseIdentity.adopted).where(DatabaseIdentity.id == 1)).first()
    return Identity(row[0], row[1], row[2], bool(row[3])) if row else None


def read_raw(dbapi_connection) -> tuple[str, str] | None:  # noqa: ANN001 - a DBAPI connection (psycopg2, sqlite3)
    """(profile, database id) read on a raw driver connection, as a pool's connect event has it."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"SELECT profile, database_id FROM {TABLE} WHERE id = 1")
        row = cursor.fetchone()
    finally:
        cursor.close()
    return (row[0], row[1]) if row else None


def recorded_data(conn: Connection) -> int:
    """How many runs and scores an older version left here (0 for a new database)."""
    names = set(inspect(conn).get_table_names())
    return sum(conn.execute(select(func.count()).select_from(model)).scalar_one()
               for model in (Run, Score) if model.__tablename__ in names)


def record(conn: Connection, profile: str, adopted: bool = False) -> Identity:
    """Write the identity once (the caller commits); a concurrent writer that came first wins and is returned."""
    found = read(conn)
    if found is not None:
        return found
    identity = Identity(profile, str(uuid.uuid4()), datetime.now(timezone.utc), adopted)
    try:
        with conn.begin_nested():
            conn.execute(DatabaseIdentity.__table__.insert().values(
                id=1, profile=identity.profile, database_id=identity.database_id, created_at=identity.created_at,
                adopted=identity.adopted))
    except IntegrityError:  # two first connections at once: one row, the other's
        found = read(conn)
        assert found is not None
        return found
    return identity
