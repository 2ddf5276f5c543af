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


class DatabaseRefused(Exception):
    """The server answered but refused us: a wrong password, an unknown user or database (configuration, not an
    outage: retrying will not help)."""


# What PostgreSQL says when it is reachable but says no (libpq's messages; the password is never in them)
REFUSALS = {"password authentication failed": "refused the password of user {user}",
            "no password supplied": "asks for a password and the URL gives none (user {user})",
            "authentication failed": "refused the login of user {user}",
            "does not exist": "has no such user or database ({detail})"}


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
        refused = refusal(str(exc.orig or ""), profile)
        if refused:
            raise DatabaseRefused(f"the server of the {describe(profile)} is reachable but {refused}: fix "
                                  f"SCORE_PLUGINS_DB_{profile.name.upper()} (or the secrets file)") from None
        raise DatabaseUnreachable(f"cannot reach the {describe(profile)}: "
                                  f"{type(exc.orig).__name__ if exc.orig else 'connection failed'}") from None


def refusal(message: str, profile: Profile) -> str | None:
    """Why a reachable server refused the connection, in our words, or None when it was not reached."""
    import re

    for needle, words in REFUSALS.items():
        if needle in message:
            detail = re.search(r'(role|database) "([^"\n]{0,100})" does not exist', message)
            return words.format(user=profile.url.username or "(none)",
                                detail=f"{detail.group(1)} {detail.group(2)}" if detail else "see the server log")
    return None


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back when it raises."""
    with factory() as session:
        with session.begin():
            yield session
