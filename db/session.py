"""Engines and sessions for a profile; connection errors never show the password."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, InterfaceError
from sqlalchemy.orm import Session, sessionmaker

from db.profiles import Profile


class DatabaseUnreachable(Exception):
    """The database cannot be reached; the message names host and database, never the password."""


def make_engine(profile: Profile) -> Engine:
    kwargs: dict = {"future": True}
    if profile.url.drivername.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": 10}
        kwargs["pool_pre_ping"] = True
    engine = create_engine(profile.url, **kwargs)
    if profile.url.drivername.startswith("sqlite"):
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001 - DBAPI connection
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            # 64 MB of page cache, not SQLite's 2 MB: pair keys are random, so inserting scores and jobs touches
            # index pages all over; past ~10,000 pairs the default cache misses on almost every insert
            cursor.execute("PRAGMA cache_size=-65536")
            cursor.close()
    return engine


def describe(profile: Profile) -> str:
    url = profile.url
    where = f"{url.host}:{url.port}" if url.host else (url.database or "")
    return f"{profile.name} database {url.database or ''} at {where}".replace(f" at {url.database}", "")


def check_reachable(engine: Engine, profile: Profile) -> None:
    try:
        with engine.connect():
            pass
    except (OperationalError, InterfaceError) as exc:
        raise DatabaseUnreachable(f"cannot reach the {describe(profile)}: "
                                  f"{type(exc.orig).__name__ if exc.orig else 'connection failed'}") from None


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back when it raises."""
    with factory() as session:
        with session.begin():
            yield session
