"""Real services for the tests, started by the project's own scripts. No fakes.

A missing service is an error, never a skip: the scripts install what is missing
(Debian packages), so a failure here is a real failure of the set-up.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]


class Postgres:
    """A private PostgreSQL server in a temporary folder (scripts/postgres)."""

    def __init__(self, folder: Path):
        self.folder = folder
        subprocess.run([str(ROOT / "scripts/postgres"), "install"], check=True, capture_output=True)
        proc = subprocess.run([str(ROOT / "scripts/postgres"), "start", str(folder)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"cannot start PostgreSQL: {proc.stderr}\n"
                               "")
        self.admin_url = proc.stdout.strip()

    def create_database(self, prefix: str = "sp") -> str:
        """A new empty database with a unique name; returns its URL."""
        name = f"{prefix}_{secrets.token_hex(4)}"
        engine = create_engine(make_url(self.admin_url).set(drivername="postgresql+psycopg2"),
                               isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return make_url(self.admin_url).set(drivername="postgresql+psycopg2", database=name).render_as_string(
            hide_password=False)

    def stop(self) -> None:
        subprocess.run([str(ROOT / "scripts/postgres"), "stop", str(self.folder)], check=False)
