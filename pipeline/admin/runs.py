"""Runs as an administrator finds them: listed newest first, named by a unique prefix of their id, and a
hand-submitted (`render`) run closed once its results are ingested."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import func, select

from db.models import Job, Run
from db.states import OPEN, RunStatus, State
from pipeline.stages import ledger
from pipeline.database import Database
from pipeline.stages.bundle import load_bundle
from pipeline.stages.watch import COORDINATOR_FILE, process_start
from pipeline.errors import BadInput
from pipeline.admin.repair import MANUAL
from pipeline.capacity.unwatched import record_ended
from pipeline.admin.hand_submitted import account
from pipeline.config import Settings


def resolve_run_id(db: Database, text: str) -> str:
    """The run whose id is `text` or starts with it; none or several is bad input (the candidates listed)."""
    with db.sessions() as session:
        if session.get(Run, text) is not None:
            return text
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        found = list(session.scalars(select(Run.id).where(Run.id.like(f"{escaped}%", escape="\\"))
                                     .order_by(Run.id).limit(21)))
    if not found:
        raise BadInput(f"no run {text!r} (`score-plugins runs` lists them)")
    if len(found) > 1:
        more = ", ..." if len(found) > 20 else ""
        raise BadInput(f"run id {text!r} is ambiguous: {', '.join(found[:20])}{more}")
    return found[0]


GONE_AFTER = 180.0  # seconds without a heartbeat after which a coordinator on another host counts as gone


def coordinator_state(run: Run) -> str | None:
    """Whether the run's coordinator still watches it: None for a run that is over; "hand-submitted" for a
    rendered bundle (nobody watches it: `ingest` and `reconcile` account for it); "live" or "gone" from the
    heartbeat its watcher keeps in the run folder: on this host, whether that very process still runs; on
    another, whether the heartbeat is recent. A run without one yet is "starting" for its first minutes."""
    import json
    import socket
    import time

    if run.status not in (RunStatus.PENDING, RunStatus.RUNNING):
        return None
    if run.executor == MANUAL:
        return "hand-submitted"
    path = Path(run.run_dir or ".") / COORDINATOR_FILE
    try:
        info = json.loads(path.read_text())
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        created = run.created_at if run.created_at.tzinfo else run.created_at.replace(tzinfo=timezone.utc)
        young = (datetime.now(timezone.utc) - created).total_seconds() < GONE_AFTER
        return "starting" if young else "gone"
    if isinstance(info, dict) and info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
        return "live" if process_start(info["pid"]) == info.get("start") else "gone"
    return "live" if age < GONE_AFTER else "gone"


def coordinator_of(db: Database, run_id: str) -> str | None:
    """`coordinator_state` of the run with this id."""
    run = ledger.get_run(db, run_id)
    return coordinator_state(run) if run is not None else None


def list_runs(db: Database, limit: int = 20) -> list[dict]:
    """The newest runs, each with its status, where it came from and its pairs per state."""
    with db.sessions() as session:
        runs = list(session.scalars(select(Run).order_by(Run.created_at.desc(), Run.id.desc()).limit(limit)))
        ids = [r.id for r in runs]
        counts: dict[str, dict[str, int]] = {}
        for run_id, state, n in session.execute(select(Job.run_id, Job.state, func.count()).where(
                Job.run_id.in_(ids)).group_by(Job.run_id, Job.state)):
            counts.setdefault(run_id, {})[state] = n
    return [{"run_id": r.id, "status": r.status, "executor": r.executor, "created_at": r.created_at.isoformat(),
             "ended_at": r.ended_at.isoformat() if r.ended_at else None, "commit": r.head_commit,
             "jenkins_build": r.jenkins_build, "coordinator": coordinator_state(r), "counts": counts.get(r.id, {})}
            for r in runs]


def close_ingested_renders(db: Database, folders: list[Path], settings: Settings | None = None) -> list[str]:
    """A hand-submitted run (`render`) whose every pair now has a result, or whose tasks Slurm ended (the jobs
    its submit line recorded, asked of Slurm when `settings` are given), is over: closed like a watched run
    (COMPLETED or COMPLETED_WITH_FAILURES). Each of its pairs that ran first gets its attempt row.
    Returns the runs closed."""
    closed = []
    wanted = {str(Path(f).resolve()) for f in folders}
    with db.sessions() as session:
        runs = [r for r in session.scalars(select(Run).where(Run.status.in_((RunStatus.PENDING, RunStatus.RUNNING))))
                if r.run_dir and str(Path(r.run_dir).resolve()) in wanted]
    if settings is not None:
        for run in runs:
            if run.executor == MANUAL:
                account(settings, db, run, load_bundle(Path(run.run_dir)))
    with db.sessions() as session:
        waiting = {r.id for r in runs if session.scalar(select(Job.id).where(
            Job.run_id == r.id, Job.state.in_((State.RENDERED, *OPEN))).limit(1)) is not None}
    for run in runs:
        if run.executor == MANUAL:
            record_ended(db, load_bundle(Path(run.run_dir)))
        if run.id not in waiting:
            ledger.finish(db, run.id, run.jenkins_build)
            closed.append(run.id)
    return closed
