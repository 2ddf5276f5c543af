"""Repair runs after the fact: reconcile, cancel, rerun the failed pairs.

No job row stays PENDING or RUNNING forever: `reconcile` attaches the run's executor to its stored job ids
(one sacct call per run on Slurm), ingests whatever the spool holds, and closes, through the ledger, every
pair whose task has ended without a result, with the reason; each pair that ended gets its attempt row
(pipeline.capacity.unwatched).
"""

from __future__ import annotations

from pathlib import Path

from db.models import Run
from pipeline.stages import ledger
from pipeline.stages.bundle import Bundle, load_bundle
from pipeline.config import Settings
from pipeline.database import Database
from pipeline.errors import BadInput
from pipeline.executors import Executor, TaskState, get_executor
from pipeline.stages.ingest import ingest_spool
from pipeline.admin.signals import cancel_reason, write_cancel_reason
from pipeline.capacity.unwatched import record_ended
from db.states import RunStatus, State

MANUAL = "manual"  # a bundle an admin submits by hand (`render`): we do not know its Slurm job


def attached_executor(settings: Settings, run: Run, bundle: Bundle, job_ids: set[str]) -> Executor:
    """The run's own executor, attached to the jobs it submitted (from their stored ids)."""
    executor = get_executor(run.executor, settings, check_limits=False)
    for job_id in job_ids:
        executor.attach(bundle, job_id)
    return executor


def task_states(executor: Executor, job_ids: set[str]) -> dict[int, TaskState]:
    states: dict[int, TaskState] = {}
    for job_id in sorted(job_ids):
        states.update(executor.poll(job_id))
    return states


def reconcile_run(settings: Settings, db: Database, run: Run) -> dict[str, int]:
    """Bring one run's rows in line with the executor and the spool; returns the counts per new state.

    A bundle an admin submits by hand (`render`, executor "manual") is only ingested: we do not
    know its Slurm job, so we cannot tell a pending task from a lost one.
    """
    bundle = load_bundle(Path(run.run_dir))
    ingest_spool(db, bundle.spool_dir)
    if run.executor == MANUAL:  # what Slurm did with the jobs its submit line recorded (if it recorded any)
        from pipeline.admin.hand_submitted import account

        changed = account(settings, db, run, bundle)
        from pipeline.admin.runs import close_ingested_renders  # (runs imports this module)

        close_ingested_renders(db, [Path(run.run_dir)])
        return changed
    reason = cancel_reason(run.run_dir)
    if reason is not None:  # a signal stopped its coordinator mid-cancel: finish the cancel it started
        return {State.CANCELLED: cancel_run(settings, db, run.id, reason)}
    job_ids = ledger.open_job_ids(db, run.id)
    executor = attached_executor(settings, run, bundle, job_ids)
    try:
        states = task_states(executor, job_ids)
    finally:
        executor.close()
    changed = ledger.close_unfinished(db, bundle, states)
    record_ended(db, bundle, states, settings.tier_list)  # one attempt row per pair that ended unwatched
    ledger.reconciled(db, run.id)
    return changed


def reconcile_all(settings: Settings, db: Database) -> dict[str, dict[str, int]]:
    """Every run with open rows, reconciled: run id -> counts per new state."""
    return {run.id: reconcile_run(settings, db, run) for run in ledger.open_runs(db)}


def cancel_run(settings: Settings, db: Database, run_id: str,
               reason: str = "cancelled with score-plugins cancel") -> int:
    """Cancel a run's tasks on its executor (whoever started them), keep what finished, close its open rows
    as CANCELLED; returns how many."""
    run = ledger.get_run(db, run_id)
    if run is None:
        raise BadInput(f"no run {run_id!r}")
    open_pairs = ledger.open_pair_ids(db, run_id)
    if not open_pairs and run.status not in (RunStatus.PENDING, RunStatus.RUNNING):
        return 0  # over already: nothing to stop, and its record stays as it is
    bundle = load_bundle(Path(run.run_dir))
    write_cancel_reason(run.run_dir, reason)  # first: the run's own coordinator, if alive, closes with it
    if run.executor != MANUAL:
        job_ids = ledger.open_job_ids(db, run_id)
        executor = attached_executor(settings, run, bundle, job_ids)
        try:
            for job_id in sorted(job_ids):
                executor.cancel(job_id)
        finally:
            executor.close()
    ingest_spool(db, bundle.spool_dir)  # keep whatever finished before the cancel
    return ledger.cancelled(db, run_id, reason, among=open_pairs)


def failed_pairs(db: Database, run_id: str) -> tuple[Run, list[tuple[str, str]]]:
    """The run and the (model, benchmark) pairs of it that did not complete."""
    run = ledger.get_run(db, run_id)
    if run is None:
        raise BadInput(f"no run {run_id!r}")
    return run, ledger.unfinished_pairs(db, run_id)
