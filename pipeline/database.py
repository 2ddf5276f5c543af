"""Open the profile's database for the pipeline: guards, reachability, schema, errors mapped to exit codes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db import migrate
from db.profiles import Profile, ProfileError, resolve_profile
from db.session import DatabaseUnreachable, check_reachable, make_engine
from pipeline.errors import BadInput, InfrastructureError

AUTO_MIGRATE = ("local", "test")  # prod and dev change schema only through `score-plugins db upgrade`


@dataclass
class Database:
    profile: Profile
    engine: Engine
    sessions: sessionmaker[Session]

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
        if migrate_schema:
            if profile.name in AUTO_MIGRATE:
                migrate.upgrade(engine)
            elif not migrate.is_current(engine):
                raise BadInput(f"the {profile.name} database schema is at {migrate.current(engine)}, not "
                               f"{migrate.head()}: run `score-plugins db upgrade --profile {profile.name}`")
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
    return Database(profile, engine, sessionmaker(engine, expire_on_commit=False))
