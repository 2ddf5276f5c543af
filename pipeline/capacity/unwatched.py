"""Attempt rows for pairs that ended while no coordinator watched them: the tasks of a run whose coordinator
died (closed by `reconcile`, from sacct and the spool) and a hand-submitted bundle (`render`, an admin's
`sbatch`, then `ingest`). Without them a memory kill nobody watched would never reach the peaks the next
plan sizes from. The rows are those pipeline.capacity.attempts makes for a watched run; what a task left (sacct's
state, peak and time, the worker's result) is all that is known, so nothing is escalated here. A pair its
task never reached made no attempt and gets no row.

Idempotent: a pair's current attempt that already has its row is skipped, so a second reconcile or ingest
adds nothing (and never overwrites what the coordinator recorded, such as the tier it escalated to).
"""

from __future__ import annotations

from typing import Iterable

from sqlalchemy import select

from db.models import Attempt, Job
from db.states import OPEN, State
from pipeline.capacity import attempts
from pipeline.stages.bundle import Bundle
from pipeline.database import Database
from pipeline.executors.base import TaskState
from pipeline.tiers import Tier


def bundle_tiers(bundle: Bundle, fallback: Iterable[Tier] = ()) -> dict[str, Tier]:
    """The tiers the bundle's tasks were rendered with (its manifest), else `fallback` (bundles rendered
    before the manifest named each task's request)."""
    tiers = {t.name: t for t in fallback}
    for task in bundle.manifest.tasks:
        if task.get("mem"):
            tiers[task["tier"]] = Tier(task["tier"], task["mem"], task.get("time_minutes") or 0, task.get("gpus") or 0)
    return tiers


def ended_without_a_row(db: Database, bundle: Bundle) -> list[str]:
    """Pairs of the run that ran in one of its tasks, have ended, and whose current attempt has no row."""
    submitted = bundle.task_of()
    with db.sessions() as session:
        recorded = set(session.execute(select(Attempt.pair_key, Attempt.attempt)
                                       .where(Attempt.run_id == bundle.run_id)).tuples())
        jobs = session.execute(select(Job.pair_key, Job.attempt, Job.state)
                               .where(Job.run_id == bundle.run_id)).tuples().all()
    return [key for key, attempt, state in jobs
            if key in submitted and state not in (*OPEN, State.RENDERED) and (key, attempt) not in recorded]


def record_ended(db: Database, bundle: Bundle, states: dict[int, TaskState] | None = None,
                 tiers: Iterable[Tier] = (), cpus: int | None = None) -> int:
    """Write one attempt row for each ended pair that has none (`states`: the executor's word on each task,
    when there is one); returns how many."""
    keys = ended_without_a_row(db, bundle)
    rows = [r for r in attempts.collect(db, bundle, keys, states or {}, bundle_tiers(bundle, tiers),
                                        cpus or bundle.manifest.cpus_per_task) if started(bundle, r)]
    attempts.save(db, rows)
    return len(rows)


def started(bundle: Bundle, row: dict) -> bool:
    """Whether the pair ran at all: it left a result, or the worker opened its log. A pair whose task was killed
    or lost before reaching it (a packed neighbour of a pair that ran out of memory) made no attempt; a row
    would count one, and its kind (OOM) would size it a tier up in the next plan."""
    return row["has_result"] or (bundle.log_dir / f"{row['pair_key']}.log").exists()
