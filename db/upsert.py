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


def copy_new_rows(session: Session, table: Any, columns: list[str], rows: list[tuple],
                  conflict: list[str]) -> list[int]:
    """Postgres only: write the rows not yet in `table` (by its unique `conflict` columns) with COPY, in the
    session's transaction; returns the positions of the rows not written (their key was already there).

    The CSV text is built once. It is first copied straight into the table under a savepoint: the unique index
    checks every row, exactly as in a plain COPY, and fresh results (the usual case) cost what COPY costs. If any
    key is already there (a re-ingest, a forced re-score, a concurrent ingest), that COPY is rolled back to the
    savepoint and the same text goes into a temporary table, then into the table with one INSERT ... SELECT ...
    ON CONFLICT DO NOTHING: as idempotent, a little slower."""
    if not rows:
        return []
    import csv
    import io
    import secrets

    import psycopg2.errors

    null = f"NULL-{secrets.token_hex(16)}"  # unquoted, it means NULL; no value can know it in advance
    buffer = io.StringIO()
    csv.writer(buffer).writerows([null if v is None else v for v in row] for row in rows)
    text = buffer.getvalue()
    name, listed = table.__tablename__, ", ".join(columns)
    options = f"WITH (FORMAT csv, NULL '{null}')"
    cur = session.connection().connection.dbapi_connection.cursor()
    try:
        cur.execute("SAVEPOINT copy_new_rows")
        try:
            cur.copy_expert(f"COPY {name} ({listed}) FROM STDIN {options}", io.StringIO(text))
        except psycopg2.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT copy_new_rows")
        else:
            cur.execute("RELEASE SAVEPOINT copy_new_rows")
            return []
        staging = f"staging_{name}"
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS "
                    f"SELECT {listed} FROM {name} WITH NO DATA")
        cur.execute(f"TRUNCATE {staging}")  # an earlier batch of the same transaction
        cur.copy_expert(f"COPY {staging} ({listed}) FROM STDIN {options}", io.StringIO(text))
        cur.execute(f"INSERT INTO {name} ({listed}) SELECT {listed} FROM {staging} "
                    f"ON CONFLICT ({', '.join(conflict)}) DO NOTHING RETURNING {', '.join(conflict)}")
        written = {tuple(row) for row in cur.fetchall()}
    finally:
        cur.close()
    where = [columns.index(c) for c in conflict]
    skipped = []
    for position, row in enumerate(rows):
        key = tuple(row[i] for i in where)
        if key in written:
            written.discard(key)  # the same key twice in one load: the second is a duplicate
        else:
            skipped.append(position)
    return skipped
