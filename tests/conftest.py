"""Shared fixtures: real git repositories, the real `score-plugins` command, one shared env cache.

Nothing here mocks a step: commands run as subprocesses of the installed console
script, plugin environments are built by uv from PyPI (cached across the session
so the suite builds the example environment once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
