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


def insert_many(session: Session, table: Any, rows: list[dict], *, conflict: list[str] | None = None,
                update: list[str] | None = None) -> int:
    """INSERT ... ON CONFLICT for many rows in a few round trips; returns how many rows were written.

    The RETURNING clause is what makes SQLAlchemy batch the rows into multi-row VALUES
    statements ("insertmanyvalues"): without it, an INSERT with ON CONFLICT falls back to
    the driver's executemany, which for psycopg2 is one round trip per row.
    `conflict`: the unique columns; `update`: columns to overwrite on conflict (else do nothing).
    """
    if not rows:
        return 0
    stmt = insert_for(session, table)
    if update:
        stmt = stmt.on_conflict_do_update(index_elements=conflict, set_={c: getattr(stmt.excluded, c) for c in update})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=conflict)
    primary_key = list(table.__table__.primary_key.columns)[0]
    result = session.connection().execute(stmt.returning(primary_key), rows)
    return len(result.all())


def copy_new_rows(session: Session, table: Any, rows: list[dict], conflict: list[str]) -> int:
    """Postgres only: the rows not yet in `table` (by its unique `conflict` columns), written with COPY into a
    temporary table and one INSERT ... SELECT ... ON CONFLICT DO NOTHING, in the session's transaction; returns
    how many were new. Several times faster than multi-row VALUES for thousands of rows, and as idempotent."""
    if not rows:
        return 0
    import csv
    import io
    import secrets

    columns = list(rows[0])
    null = f"NULL-{secrets.token_hex(16)}"  # unquoted, it means NULL; no value can know it in advance
    name = table.__tablename__
    staging = f"staging_{name}"
    cur = session.connection().connection.dbapi_connection.cursor()
    try:
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS "
                    f"SELECT {', '.join(columns)} FROM {name} WITH NO DATA")
        cur.execute(f"TRUNCATE {staging}")  # an earlier batch of the same transaction
        buffer = io.StringIO()
        csv.writer(buffer).writerows([null if row[c] is None else row[c] for c in columns] for row in rows)
        buffer.seek(0)
        cur.copy_expert(f"COPY {staging} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, NULL '{null}')", buffer)
        cur.execute(f"INSERT INTO {name} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM {staging} "
                    f"ON CONFLICT ({', '.join(conflict)}) DO NOTHING")
        return cur.rowcount
    finally:
        cur.close()
