"""Watch and repair runs after the fact: reconcile, cancel, rerun the failed pairs.

No job row stays PENDING or RUNNING forever: `reconcile` asks the executor (one sacct
call per run), ingests whatever the spool holds, and closes every pair whose task has
ended without a result, with the reason.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import select

from db.models import Job, Run
from db.session import session_scope
from pipeline.bundle import load_bundle
from pipeline.database import Database
from pipeline.errors import BadInput
from pipeline.executors.base import TaskState
from pipeline.ingest import ingest_spool

OPEN_STATES = ("PENDING", "RUNNING")


def open_runs(db: Database) -> list[Run]:
    with db.sessions() as session:
        run_ids = set(session.scalars(select(Job.run_id).where(Job.state.in_(OPEN_STATES))))
        return [session.get(Run, r) for r in sorted(run_ids)]


def task_states(run: Run, job_id: str | None) -> dict[int, TaskState]:
    """What the executor knows now about a run's tasks (empty when it cannot know: a local run's
    tasks live only as long as the process that started them)."""
    if not job_id:
        return {}
    if run.executor == "local":
        from pipeline.executors.local import local_task_states

        bundle = load_bundle(Path(run.run_dir))
        return local_task_states(bundle.log_dir, bundle.n_tasks, bundle.job_script)
    if run.executor in ("slurm", "submitit"):
        from pipeline.executors.slurm import SlurmExecutor

        if run.executor == "submitit":  # submitit's job id is Slurm's array job id
            bundle = load_bundle(Path(run.run_dir))
            job_id = f"{job_id}@0+{bundle.n_tasks}"
        return SlurmExecutor().poll(job_id)
    raise BadInput(f"run {run.id}: unknown executor {run.executor!r}")


def reconcile_run(db: Database, run: Run) -> dict[str, int]:
    """Bring one run's rows in line with the executor and the spool; returns the counts per new state.

    A bundle an admin submits by hand (`render`, executor "manual") is only ingested: we do not
    know its Slurm job, so we cannot tell a pending task from a lost one.
    """
    bundle = load_bundle(Path(run.run_dir))
    ingest_spool(db, bundle.spool_dir)
    if run.executor == "manual":
        return {}
    if run.executor == "local":  # removes the pid files of tasks that have ended, whatever the rows say
        from pipeline.executors.local import local_task_states

        local_task_states(bundle.log_dir, bundle.n_tasks, bundle.job_script)
    with db.sessions() as session:
        job_ids = set(session.scalars(select(Job.slurm_job_id).where(Job.run_id == run.id,
                                                                     Job.state.in_(OPEN_STATES))))
    states: dict[int, TaskState] = {}
    for job_id in job_ids:
        states.update(task_states(run, job_id))
    task_of = bundle.task_of()
    changed: dict[str, int] = {}
    with session_scope(db.sessions) as session:
        for job in session.scalars(select(Job).where(Job.run_id == run.id, Job.state.in_(OPEN_STATES))):
            index = task_of.get(job.pair_key)
            state = states.get(index) if index is not None else None
            if state is not None and not state.done:
                if job.state != state.state:
                    job.state = state.state
                    changed[state.state] = changed.get(state.state, 0) + 1
                continue
            if state is None:
                job.state, job.reason = "LOST", "the executor has no record of its task"
            elif state.state == "COMPLETED":
                job.state, job.reason = "LOST", "its task finished without writing a result for this pair"
            else:
                job.state, job.reason = state.state, state.reason or f"array task {index} ended as {state.state}"
            log = bundle.log_dir / f"task-{index}.out"
            if log.exists():
                from pipeline.worker import tail

                job.log_path, job.log_tail = str(log), tail(log)
            job.ended_at = datetime.now(timezone.utc)
            changed[job.state] = changed.get(job.state, 0) + 1
        run_row = session.get(Run, run.id)
        still_open = session.scalar(select(Job.id).where(Job.run_id == run.id, Job.state.in_(OPEN_STATES)).limit(1))
        if still_open is None and run_row.status in ("PENDING", "RUNNING"):
            run_row.status = "RECONCILED"
            run_row.ended_at = datetime.now(timezone.utc)
    return changed


def cancel_run(db: Database, run_id: str) -> int:
    """Cancel a run's tasks on its executor and close its open rows as CANCELLED; returns how many."""
    with db.sessions() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise BadInput(f"no run {run_id!r}")
        job_ids = set(session.scalars(select(Job.slurm_job_id).where(Job.run_id == run_id,
                                                                     Job.state.in_(OPEN_STATES))))
    bundle = load_bundle(Path(run.run_dir))
    if run.executor in ("slurm", "submitit"):
        from pipeline.executors.slurm import SlurmExecutor

        for job_id in job_ids:
            if job_id:
                SlurmExecutor().cancel(job_id if "@" in job_id else f"{job_id}@0+1")
    elif run.executor == "local":  # tasks started by another coordinator on this machine: stop them for real
        import time

        from pipeline.executors.local import cancel_local_tasks, local_task_states

        if cancel_local_tasks(bundle.log_dir, bundle.n_tasks, bundle.job_script):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(
                    not s.done for s in local_task_states(bundle.log_dir, bundle.n_tasks, bundle.job_script).values()):
                time.sleep(0.2)
    ingest_spool(db, bundle.spool_dir)  # keep whatever finished before the cancel
    n = 0
    with session_scope(db.sessions) as session:
        for job in session.scalars(select(Job).where(Job.run_id == run_id, Job.state.in_(OPEN_STATES))):
            job.state, job.reason = "CANCELLED", "cancelled with score-plugins cancel"
            job.ended_at = datetime.now(timezone.utc)
            n += 1
        row = session.get(Run, run_id)
        row.status, row.ended_at = "CANCELLED", datetime.now(timezone.utc)
    return n


def failed_pairs(db: Database, run_id: str) -> tuple[Run, list[tuple[str, str]]]:
    with db.sessions() as session:
        run = session.get(Run, run_id)
        if run is None:
            raise BadInput(f"no run {run_id!r}")
        rows = session.execute(select(Job.model, Job.benchmark).where(
            Job.run_id == run_id, Job.state != "COMPLETED")).all()
    return run, sorted((m, b) for m, b in rows)
