"""Open the profile's database for the pipeline: guards, reachability, identity, schema, errors mapped to exit codes.

Every database records which profile it is (`db.identity`); a connection opened as another profile is refused
(exit 2), on the first connection and on every later one the pool makes, however the URL was spelled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db import identity, migrate
from db.identity import Identity
from db.profiles import Profile, ProfileError, resolve_profile
from db.session import DatabaseRefused, DatabaseUnreachable, check_reachable, make_engine
from pipeline.errors import BadInput, InfrastructureError

AUTO_MIGRATE = ("local", "test")  # prod and dev change schema only through `score-plugins db upgrade`


@dataclass
class Database:
    profile: Profile
    engine: Engine
    sessions: sessionmaker[Session]
    identity: Identity | None = None  # None only while `db upgrade` has yet to record it

    def close(self) -> None:
        self.engine.dispose()


def open_database(profile_name: str, state_dir: Path, *, allow_prod: bool = False, migrate_schema: bool = True
                  ) -> Database:
    allow_prod = allow_prod or os.environ.get("JOB_NAME") == "score_plugins"
    try:
        profile = resolve_profile(profile_name, state_dir=state_dir, allow_prod=allow_prod)
    except ProfileError as exc:
        raise BadInput(str(exc)) from None
    engine = make_engine(profile)
    try:
        check_reachable(engine, profile)
        found = checked_identity(engine, profile)
        if migrate_schema:
            if profile.name in AUTO_MIGRATE:
                if found is None:
                    refuse_unadopted(engine, profile, adopt=auto_adopts(profile))
                migrate.upgrade(engine)
                found = found or stamp(engine, profile)
            elif not migrate.is_current(engine):
                raise BadInput(f"the {profile.name} database schema is at {migrate.current(engine)}, not "
                               f"{migrate.head()}: run `score-plugins db upgrade --profile {profile.name}`")
            elif found is None:
                refuse_unadopted(engine, profile, adopt=False, always=True)
        if found is not None:
            guard_every_connection(engine, profile, found)
    except (BadInput, DatabaseRefused) as exc:
        engine.dispose()
        raise BadInput(str(exc)) from None
    except DatabaseUnreachable as exc:
        engine.dispose()
        raise InfrastructureError(str(exc)) from None
    except OperationalError as exc:
        engine.dispose()
        raise InfrastructureError(f"database error on the {profile.name} profile: "
                                  f"{type(exc.orig).__name__ if exc.orig else exc.__class__.__name__}") from None
    except DBAPIError as exc:  # e.g. a SQLite file that is not a database (corrupt, truncated, overwritten)
        engine.dispose()
        raise InfrastructureError(f"the {profile.name} database at {profile.safe_url} is not usable "
                                  f"({str(exc.orig or exc).splitlines()[0][:200]}); restore it from a backup, or "
                                  "move it away to start an empty one") from None
    return Database(profile, engine, sessionmaker(engine, expire_on_commit=False), found)


def mismatch(profile: Profile, found_profile: str, database_id: str) -> str:
    return (f"the database at {profile.safe_url} is the {found_profile} database (recorded in it, id "
            f"{database_id[:8]}); the {profile.name} profile refuses to use it: point "
            f"SCORE_PLUGINS_DB_{profile.name.upper()} at the {profile.name} database")


def checked_identity(engine: Engine, profile: Profile) -> Identity | None:
    """The identity the database records, refused when it names another profile."""
    with engine.connect() as conn:
        found = identity.read(conn)
    if found is not None and found.profile != profile.name:
        raise BadInput(mismatch(profile, found.profile, found.database_id))
    return found


def auto_adopts(profile: Profile) -> bool:
    """A local SQLite file is adopted with its data on first use (it is a developer's own); every other database
    that holds data from before identities were recorded needs `db upgrade --adopt`, said out loud."""
    return profile.name == "local" and profile.url.drivername.startswith("sqlite")


def refuse_unadopted(engine: Engine, profile: Profile, *, adopt: bool, always: bool = False) -> None:
    """A database that holds runs or scores but no identity is someone's: it is not taken without `--adopt`."""
    if adopt:
        return
    with engine.connect() as conn:
        held = identity.recorded_data(conn)
    if held or always:
        raise BadInput(f"the database at {profile.safe_url} holds {held} runs and scores but records no profile "
                       "(it predates identities): if it is the "
                       f"{profile.name} database, adopt it once with `score-plugins db upgrade --profile "
                       f"{profile.name} --adopt`")


def stamp(engine: Engine, profile: Profile, adopted: bool = False) -> Identity:
    with engine.begin() as conn:
        found = identity.record(conn, profile.name, adopted)
    if found.profile != profile.name:  # another profile's first connection came first, at the same moment
        raise BadInput(mismatch(profile, found.profile, found.database_id))
    return found


def guard_every_connection(engine: Engine, profile: Profile, known: Identity) -> None:
    """Each new connection the pool opens reads the identity again: a failover, a DNS change or a pooler that now
    routes elsewhere is refused, not written into."""

    @event.listens_for(engine, "connect")
    def _same_database(dbapi_connection, _record) -> None:  # noqa: ANN001 - DBAPI connection
        found = identity.read_raw(dbapi_connection)
        if found is None or found[1] != known.database_id:
            what = f"the {found[0]} database, id {found[1][:8]}" if found else "a database with no identity"
            raise BadInput(f"the {profile.name} profile's connection now reaches {what}, not the database it "
                           f"opened (id {known.database_id[:8]}): refused")


def upgrade_schema(db: Database, revision: str, adopt: bool) -> Identity | None:
    """`db upgrade`: migrate, then record the profile in a database that records none (an empty one, or one whose
    data an administrator adopts with --adopt). Returns the identity after it."""
    profile = db.profile
    if db.identity is None:
        refuse_unadopted(db.engine, profile, adopt=adopt or auto_adopts(profile))
        with db.engine.connect() as conn:
            held = identity.recorded_data(conn)
    migrate.upgrade(db.engine, revision)
    if db.identity is None and _has_identity_table(db.engine):  # not when going to a revision before it
        db.identity = stamp(db.engine, profile, adopted=bool(held))
    return db.identity


def _has_identity_table(engine: Engine) -> bool:
    from sqlalchemy import inspect

    with engine.connect() as conn:
        return inspect(conn).has_table(identity.TABLE)


def describe_target(profile_name: str, state_dir: Path) -> dict:
    """Which database a profile would use and what it says when asked (for `config --profile`): its URL with the
    password hidden, and one status: ok (with its recorded identity), not configured, refused (a wrong password or
    user: the server answered), unreachable, another profile's database, no identity yet, or not created yet.
    Creates nothing."""
    try:
        profile = resolve_profile(profile_name, state_dir=state_dir, allow_prod=True, make_folder=False)
    except ProfileError as exc:
        return {"database": None, "status": "not configured", "detail": str(exc), "identity": None}
    data = {"database": profile.safe_url, "identity": None}
    url = profile.url
    if url.drivername.startswith("sqlite") and url.database and not Path(url.database).exists():
        return {**data, "status": "not created yet", "detail": f"{url.database} does not exist yet (the first "
                "command that writes creates it)"}
    engine = make_engine(profile)
    try:
        check_reachable(engine, profile)
        with engine.connect() as conn:
            found = identity.read(conn)
            revision = migrate.current(engine)
    except DatabaseRefused as exc:
        return {**data, "status": "refused", "detail": str(exc)}
    except DatabaseUnreachable as exc:
        return {**data, "status": "unreachable", "detail": str(exc)}
    except DBAPIError as exc:
        return {**data, "status": "unusable", "detail": f"{type(exc.orig or exc).__name__}"}
    finally:
        engine.dispose()
    data["schema"] = revision
    if found is None:
        return {**data, "status": "no identity", "detail": "reachable; it records no profile yet: `score-plugins "
                f"db upgrade --profile {profile_name}` records it (with --adopt when it holds data)"}
    data["identity"] = found.to_json()
    if found.profile != profile_name:
        return {**data, "status": "another profile's", "detail": mismatch(profile, found.profile, found.database_id)}
    return {**data, "status": "ok", "detail": f"reachable; the {found.profile} database (id {found.database_id}), "
            f"schema {revision}"}
