"""`score-plugins examples create DIR`: a real git repository of example plugins.

Three commits, each by its own author so that each submitter gets their own email:
the base plugins; then a new model; then a new benchmark.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.catalog import gitrepo
from pipeline.errors import BadInput

COMMITS_DIR = Path(__file__).parent / "commits"
DOMAIN_ROOT = "sklearn_scores"


@dataclass(frozen=True)
class ExampleCommit:
    folder: str
    message: str
    author_name: str
    author_email: str


COMMITS = (
    ExampleCommit("1-base", "Add base plugins: three models, three benchmarks, data and metrics",
                  "Lab Admin", "admin@example.org"),
    ExampleCommit("2-new-model", "Add model plugin gaussian_nb", "Ada Lovelace", "ada@example.org"),
    ExampleCommit("3-new-benchmark", "Add benchmark plugin iris_cv", "Bob Marley", "bob@example.org"),
)


def create(dest: Path) -> list[str]:
    """Write the example repository into `dest` (new or empty) and return its commit ids, oldest first."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise BadInput(f"{dest} exists and is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    gitrepo.git(dest, "init", "--quiet", "--initial-branch=main")
    commits = []
    for commit in COMMITS:
        shutil.copytree(COMMITS_DIR / commit.folder, dest, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        gitrepo.git(dest, "add", "--all")
        env_args = ["-c", f"user.name={commit.author_name}", "-c", f"user.email={commit.author_email}"]
        gitrepo.git(dest, *env_args, "commit", "--quiet", "--no-gpg-sign", "-m", commit.message,
                    "--author", f"{commit.author_name} <{commit.author_email}>")
        commits.append(gitrepo.resolve(dest, "HEAD"))
    return commits


