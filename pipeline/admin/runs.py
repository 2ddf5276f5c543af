"""Runs as an administrator finds them: listed newest first, named by a unique prefix of their id, and a
hand-submitted (`render`) run closed once its results are ingested."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from db.models import Job, Run
from db.states import OPEN, RunStatus, State
from pipeline.stages import ledger
from pipeline.database import Database
from pipeline.stages.bundle import load_bundle
from pipeline.errors import BadInput
from pipeline.admin.repair import MANUAL
from pipeline.capacity.unwatched import record_ended


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
             "jenkins_build": r.jenkins_build, "counts": counts.get(r.id, {})} for r in runs]


def close_ingested_renders(db: Database, folders: list[Path]) -> list[str]:
    """A hand-submitted run (`render`) whose every pair now has a result is over: closed like a watched run
    (COMPLETED or COMPLETED_WITH_FAILURES). Each of its pairs with a result first gets its attempt row.
    Returns the runs closed."""
    closed = []
    wanted = {str(Path(f).resolve()) for f in folders}
    with db.sessions() as session:
        runs = [r for r in session.scalars(select(Run).where(Run.status.in_((RunStatus.PENDING, RunStatus.RUNNING))))
                if r.run_dir and str(Path(r.run_dir).resolve()) in wanted]
        waiting = {r.id for r in runs if session.scalar(select(Job.id).where(
            Job.run_id == r.id, Job.state.in_((State.RENDERED, *OPEN))).limit(1)) is not None}
    for run in runs:
        if run.executor == MANUAL:
            record_ended(db, load_bundle(Path(run.run_dir)))
        if run.id not in waiting:
            ledger.finish(db, run.id, run.jenkins_build)
            closed.append(run.id)
    return closed
