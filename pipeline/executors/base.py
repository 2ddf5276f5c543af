"""The executor interface (after submitit's), and what every executor shares: task states and the job's
environment allow-list.

Everything a caller (run, watch, reconcile, cancel) does with an executor is declared here, so no caller
probes for a method or an attribute.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from db.states import TERMINAL
from pipeline.job.manifest import Manifest

# Site plumbing a job needs to reach the package index (certificates, proxies) and nothing else.
JOB_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LOGNAME",
                "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "UV_CACHE_DIR", "SSL_CERT_FILE", "SSL_CERT_DIR",
                "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
# The package index the coordinator locked against is the one the job's environment build downloads from (a lock
# names no index); never a value with credentials in it ('@'), as for the sandboxed builds (job/sandbox.py).
INDEX_KEEP = ("UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX", "PIP_INDEX_URL",
              "PIP_EXTRA_INDEX_URL")


def job_environment(extra: dict[str, str]) -> dict[str, str]:
    """The variables a job sees: a short allow-list, never SCORE_PLUGINS_* or anything else inherited."""
    env = {k: os.environ[k] for k in JOB_ENV_KEEP if k in os.environ}
    env.update({k: os.environ[k] for k in INDEX_KEEP if k in os.environ and "@" not in os.environ[k]})
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(extra)
    return env


@dataclass
class TaskState:
    """One array task as the executor sees it (`state` is one of `db.states.State`)."""

    index: int
    state: str
    reason: str = ""
    node: str = ""
    exit_code: int | None = None
    # measurements, when the executor has them (sacct's MaxRSS and Elapsed): not part of what a state is
    max_rss_bytes: int | None = field(default=None, compare=False)
    elapsed_seconds: float | None = field(default=None, compare=False)
    ended_at: float | None = field(default=None, compare=False)  # when it ended (epoch seconds), if known

    @property
    def done(self) -> bool:
        return self.state in TERMINAL


class TaskBundle(Protocol):
    """What an executor reads of a rendered run (pipeline.stages.bundle.Bundle is one): declared here, so the
    executors sit below the stages and import none of them (tests/test_layout.py)."""

    run_id: str
    run_dir: Path
    job_script: Path
    manifest: Manifest

    @property
    def log_dir(self) -> Path: ...

    @property
    def n_tasks(self) -> int: ...

    def script_for(self, index: int) -> tuple[Path, int]: ...

    def arrays(self) -> list[tuple[Path, int, int]]: ...


class Executor(ABC):
    """Runs a bundle's array tasks. A job id is the text this executor returns from `submit`; it is stored on
    the job rows, and `attach` lets a later process (reconcile, cancel) poll and cancel it again."""

    name: str = ""
    poll_interval: tuple[float, float] = (0.5, 10.0)  # first and longest wait between polls, seconds
    can_resubmit: bool = False  # whether `resubmit` can run tasks again (NODE_FAIL, PREEMPTED; a tier escalation)

    @abstractmethod
    def submit(self, bundle: TaskBundle) -> str:
        """Start every array task of the bundle; return the job id."""

    @abstractmethod
    def poll(self, job_id: str) -> dict[int, TaskState]:
        """The state of each array task of a submitted job, in one call."""

    @abstractmethod
    def cancel(self, job_id: str) -> None:
        """Stop every task of the job that is still pending or running."""

    def attach(self, bundle: TaskBundle, job_id: str) -> None:
        """Know a job another (perhaps dead) process submitted, from its stored id, so that `poll` and `cancel`
        work on it. Executors whose ids say everything need nothing."""

    def resubmit(self, bundle: TaskBundle, indices: list[int]) -> str:
        """Run some tasks of the bundle again; returns the new job id (only when `can_resubmit`)."""
        raise NotImplementedError(f"the {self.name} executor does not resubmit tasks")

    def stats(self) -> dict[str, int]:
        """Counters worth reporting (e.g. Slurm's sacct calls)."""
        return {}

    def close(self) -> None:
        """Release resources (threads, connections)."""

