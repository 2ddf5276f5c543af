"""Choose database credentials by one name: prod, dev, test or local.

Order: `SCORE_PLUGINS_DB_<PROFILE>` in the environment, then the `[db]` table of the
secrets TOML (`SCORE_PLUGINS_SECRETS`, mode 0600 or refused), then the default
(`local` only: SQLite under `.score-plugins/`). Guards keep dev and test away from prod.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from sqlalchemy.engine import URL, make_url

PROFILES = ("prod", "dev", "test", "local")


class ProfileError(Exception):
    """The profile's credentials are missing, unsafe, or point where they must not."""


@dataclass(frozen=True)
class Profile:
    name: str
    url: URL

    @property
    def safe_url(self) -> str:
        """The URL with its password hidden: the only form that may be printed or logged."""
        return self.url.render_as_string(hide_password=True)


def read_secrets(environ: Mapping[str, str]) -> dict:
    """The secrets TOML, refused unless only its owner can read it."""
    path = environ.get("SCORE_PLUGINS_SECRETS")
    if not path:
        return {}
    p = Path(path)
    try:
        mode = stat.S_IMODE(p.stat().st_mode)
    except FileNotFoundError as exc:
        raise ProfileError(f"SCORE_PLUGINS_SECRETS={path}: no such file") from exc
    if mode & 0o077:
        raise ProfileError(f"{path} has mode {mode:04o}; secrets files must be 0600 (chmod 600 {path})")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path} is not valid TOML ({str(exc).splitlines()[0]})") from None


def raw_url(name: str, environ: Mapping[str, str], secrets: dict, state_dir: Path) -> str | None:
    value = environ.get(f"SCORE_PLUGINS_DB_{name.upper()}")
    if value:
        return value
    value = secrets.get("db", {}).get(name)
    if value:
        return value
    if name == "local":
        return f"sqlite:///{(state_dir / 'local.db').resolve()}"
    return None


def with_driver(url: URL) -> URL:
    """`postgresql://` means psycopg2 here (SQLAlchemy 2.1 would pick psycopg 3)."""
    if url.drivername in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg2")
    return url


def _same_database(a: URL, b: URL) -> bool:
    return (a.drivername.split("+")[0], a.host, a.port, a.database) == (b.drivername.split("+")[0], b.host, b.port,
                                                                          b.database)


def resolve_profile(name: str, *, environ: Mapping[str, str] | None = None, state_dir: Path = Path(".score-plugins"),
                    allow_prod: bool = False, make_folder: bool = True) -> Profile:
    """The profile's database URL, after every guard."""
    environ = os.environ if environ is None else environ
    if name not in PROFILES:
        raise ProfileError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    secrets = read_secrets(environ)
    text = raw_url(name, environ, secrets, state_dir)
    if not text:
        raise ProfileError(f"no database for profile {name!r}: set SCORE_PLUGINS_DB_{name.upper()} or add "
                           f"'{name} = \"postgresql://...\"' under [db] in the SCORE_PLUGINS_SECRETS file")
    try:
        url = make_url(text)
    except Exception:
        raise ProfileError(f"SCORE_PLUGINS_DB_{name.upper()} is not a valid database URL") from None
    url = with_driver(url)
    if url.drivername.split("+")[0] not in ("postgresql", "sqlite"):
        raise ProfileError(f"the {name} profile's database URL uses {url.drivername.split('+')[0]!r}: "
                           "score-plugins supports postgresql:// and sqlite:///")
    if name == "prod" and not allow_prod:
        raise ProfileError("the prod profile writes the production database: pass --yes-prod, or run as the "
                           "score_plugins Jenkins job (JOB_NAME=score_plugins)")
    if name in ("dev", "test"):
        prod_text = raw_url("prod", environ, secrets, state_dir)
        if prod_text:
            try:
                prod_url = make_url(prod_text)
            except Exception:
                prod_url = None
            if prod_url is not None and _same_database(url, prod_url):
                raise ProfileError(f"the {name} profile points at the prod database; refusing to run")
    if make_folder and url.drivername.startswith("sqlite") and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    return Profile(name, url)
