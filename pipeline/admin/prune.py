"""Reclaim disk: environments no run has used for a while (one scikit-learn environment is ~400 MB) and the
bulky parts of old finished runs' folders (logs, spool, code copy). What makes a score reproducible stays: the
database rows, each run's manifest and lockfiles (`reproduce` rebuilds an environment from its lockfile).

Nothing is removed without `--yes`; without it, prune lists what it would remove and how much that frees."""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import select

from db.models import Job, Run
from db.states import OPEN
from pipeline.stages.bundle import read_manifest
from pipeline.config import Settings
from pipeline.database import Database
from pipeline.errors import BadInput

MARKER = ".score-plugins-complete"  # written last by build_env.sh: the environment is usable
RUN_PARTS = ("logs", "spool", "code", ".pair-manifests", "quarantine")  # kept: manifest.json, locks/, job.sh


@dataclass
class PruneReport:
    environments: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    removed: bool = False

    @property
    def freed_bytes(self) -> int:
        return sum(e["bytes"] for e in self.environments) + sum(r["bytes"] for r in self.runs)

    def to_json(self) -> dict:
        return {"environments": self.environments, "runs": self.runs, "freed_bytes": self.freed_bytes,
                "removed": self.removed}


def _size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _utc_timestamp(value: datetime | None) -> float:
    if value is None:
        return 0.0
    return (value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value).timestamp()


def _env_keys(run_dir: str) -> set[str]:
    """The environments a run's tasks use: each side's (a bundle made before the split names one per task)."""
    try:
        tasks = read_manifest(Path(run_dir)).tasks
    except BadInput:
        return set()
    return {key for t in tasks for key in ([e["env_key"] for e in t["envs"].values()] if "envs" in t
                                           else [t["env_key"]])}


def prune(settings: Settings, db: Database, older_than_days: float, remove: bool) -> PruneReport:
    """Environments unused for `older_than_days` (no run of that age or newer used them, none open does) and
    finished runs that ended before then; removed only when `remove`."""
    if older_than_days < 0:
        raise BadInput("--older-than must be 0 days or more")
    cutoff = time.time() - older_than_days * 86400
    report = PruneReport(removed=remove)
    with db.sessions() as session:
        runs = list(session.scalars(select(Run)))
        open_runs = set(session.scalars(select(Job.run_id).where(Job.state.in_(OPEN))))
    last_use: dict[str, float] = {}
    in_use: set[str] = set()
    for run in runs:
        keys = _env_keys(run.run_dir) if run.run_dir else set()
        for key in keys:
            last_use[key] = max(last_use.get(key, 0.0), _utc_timestamp(run.created_at))
        if run.id in open_runs or run.status in ("PENDING", "RUNNING"):
            in_use |= keys
    env_root = Path(settings.env_root)
    for env in sorted(p for p in env_root.iterdir() if p.is_dir() and (p / MARKER).exists()) \
            if env_root.is_dir() else []:
        built = (env / MARKER).stat().st_mtime
        if env.name in in_use or max(built, last_use.get(env.name, 0.0)) >= cutoff:
            continue
        entry = {"path": str(env), "env_key": env.name, "bytes": _size(env)}
        if remove and not _remove_environment(env):
            continue  # being built or used right now: left alone
        report.environments.append(entry)
    runs_dir = Path(settings.runs_dir).resolve()
    for run in runs:
        folder = Path(run.run_dir) if run.run_dir else None
        if (folder is None or run.id in open_runs or run.status in ("PENDING", "RUNNING")
                or _utc_timestamp(run.ended_at or run.created_at) >= cutoff
                or not folder.resolve().is_relative_to(runs_dir)):  # a `render --out` folder is the admin's own
            continue
        parts = [folder / p for p in RUN_PARTS if (folder / p).exists()]
        if not parts:
            continue
        report.runs.append({"run_id": run.id, "path": str(folder), "bytes": sum(_size(p) for p in parts)})
        if remove:
            for part in parts:
                shutil.rmtree(part, ignore_errors=True)
    return report


def _remove_environment(env: Path) -> bool:
    """Remove one environment under its build lock (skipped when a build holds it); the completion marker goes
    first, so a job starting meanwhile rebuilds it rather than using a half-removed one."""
    lock_path = env.parent / f"{env.name}.lock"
    try:
        with open(lock_path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            (env / MARKER).unlink(missing_ok=True)
            shutil.rmtree(env, ignore_errors=True)
    except OSError:
        return False
    return True
