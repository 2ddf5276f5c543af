"""Shared fixtures: real git repositories, the real `score-plugins` command, one shared env cache.

Nothing here mocks a step: commands run as subprocesses of the installed console
script, plugin environments are built by uv from PyPI (cached across the session
so the suite builds the example environment once).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLI = BIN / "score-plugins"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def git(repo: Path, *args: str, author: str = "Test Author <author@example.org>") -> str:
    name, email = author[:-1].split(" <")
    env = {**os.environ, "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name,
           "GIT_COMMITTER_EMAIL": email}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def commit_all(repo: Path, message: str, author: str = "Test Author <author@example.org>") -> str:
    git(repo, "add", "--all", author=author)
    git(repo, "commit", "--quiet", "--no-gpg-sign", "-m", message, author=author)
    return git(repo, "rev-parse", "HEAD")


def write(repo: Path, rel: str, text: str) -> Path:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="record the rendered job scripts as tests/golden/ files instead of comparing")


@dataclass
class Workspace:
    """A working directory with its own state folder (database, runs, outbox), sharing the env cache."""

    path: Path
    env: dict[str, str]

    @property
    def state(self) -> Path:
        return self.path / ".score-plugins"

    def cli(self, *args: str, check: bool | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(CLI), *args], cwd=self.path, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"score-plugins {' '.join(args)} exited {proc.returncode}\n"
                                 f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def json(self, *args: str, expect: int = 0) -> object:
        proc = self.cli(*args, "--format", "json")
        assert proc.returncode == expect, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        return json.loads(proc.stdout)

    def rows(self, sql: str, *params: object, missing_ok: bool = False) -> list[tuple]:
        """Rows of the local SQLite database, read-only: what was recorded, not what a report shows. A database or
        table that is not there fails the test (an empty answer from nowhere would pass every "nothing recorded"
        check, wherever the run recorded): make it first (`make_database`). `missing_ok`: a wait for the first row
        of a run that is still creating its database answers [] meanwhile."""
        import sqlite3

        db = self.state / "local.db"
        if not db.exists():
            if missing_ok:
                return []
            raise AssertionError(f"no database at {db}: nothing recorded there proves nothing (make_database first)")
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if missing_ok and "no such table" in str(exc):
                    return []  # the schema is being created
                raise AssertionError(f"{db}: {exc}") from None

    def make_database(self) -> None:
        """This workspace's local database, migrated (`db upgrade`): where its runs record, made before a command
        that must record nothing, so that "no rows" is read from the database that command would have used."""
        self.cli("db", "upgrade", check=True)
        assert (self.state / "local.db").exists(), f"db upgrade made no database at {self.state / 'local.db'}"

    def log_slurm_calls(self, fail_first_sbatch: str = "") -> Path:
        """Put passthrough wrappers of sacct, sbatch and squeue first on this workspace's PATH: each real call is
        logged (time, command, arguments) to the file returned, then the real tool runs. `fail_first_sbatch`:
        an injected fault (named so): the first sbatch prints this error and fails without reaching Slurm."""
        bin_dir = self.path / "slurm-wrappers"
        bin_dir.mkdir(exist_ok=True)
        log = self.path / "slurm-calls.log"
        log.touch()
        for tool in ("sacct", "sbatch", "squeue"):
            real = shutil.which(tool)
            assert real, f"{tool} is not installed"
            wrapper = bin_dir / tool
            fault = ""
            if tool == "sbatch" and fail_first_sbatch:
                once = shlex.quote(str(bin_dir / "sbatch-failed-once"))
                fault = (f"if [ ! -e {once} ]; then touch {once}; echo {shlex.quote(fail_first_sbatch)} >&2; "
                         "exit 1; fi\n")
            wrapper.write_text(f'#!/bin/sh\necho "$(date +%s.%N) {tool} $*" >> {shlex.quote(str(log))}\n'
                               f'{fault}exec {shlex.quote(real)} "$@"\n')
            wrapper.chmod(0o755)
        self.env["PATH"] = f"{bin_dir}:{self.env.get('PATH', os.defpath)}"
        return log


def calls(log: Path, tool: str) -> list[str]:
    """The logged calls of one Slurm tool (see `Workspace.log_slurm_calls`)."""
    return [line.split(" ", 2)[2] if line.count(" ") >= 2 else "" for line in log.read_text().splitlines()
            if line.split(" ")[1:2] == [tool]]


def call_times(log: Path, tool: str) -> list[float]:
    return [float(line.split(" ")[0]) for line in log.read_text().splitlines() if line.split(" ")[1:2] == [tool]]


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):  # noqa: ANN001, ANN201
    """Poll `condition` until it returns something true (returned), or fail saying what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="session")
def env_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One environment root for the whole session: each distinct environment is built once."""
    return tmp_path_factory.mktemp("envs")


@pytest.fixture
def workspace(tmp_path: Path, env_cache: Path) -> Workspace:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCORE_PLUGINS_")}
    env.update({"SCORE_PLUGINS_ENV_ROOT": str(env_cache), "SCORE_PLUGINS_LOCAL_WORKERS": "2"})
    work = tmp_path / "work"
    work.mkdir()
    # its own state folder, made and named from the start: the lookup of `.score-plugins` in parent folders never
    # reaches a stray one in /tmp (which would share one database between every test on the machine)
    (work / ".score-plugins").mkdir()
    env["SCORE_PLUGINS_STATE_DIR"] = str(work / ".score-plugins")
    return Workspace(work, env)


@pytest.fixture(scope="session")
def example_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline import examples

    dest = tmp_path_factory.mktemp("example-template") / "repo"
    examples.create(dest)
    return dest


@pytest.fixture
def example_repo(example_template: Path, tmp_path: Path) -> Path:
    """A private clone of the example repository, free to be changed by the test."""
    dest = tmp_path / "plugins"
    subprocess.run(["git", "clone", "--quiet", str(example_template), str(dest)], check=True)
    return dest


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory):
    """This test session's own PostgreSQL server (real, from the system's binaries)."""
    from tests.services import Postgres

    server = Postgres(tmp_path_factory.mktemp("postgres") / "pg")
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres) -> str:
    """A fresh database on the session's server for one test."""
    return postgres.create_database()


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The one-node Slurm cluster on this machine, brought up by the project's script (never skipped)."""
    proc = subprocess.run([str(ROOT / "scripts/slurm-cluster"), "up"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/slurm-cluster up failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stderr
