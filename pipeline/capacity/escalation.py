"""Within one run: a pair that ran out of memory goes one tier up, a pair that ran out of time goes to the next
tier with a longer limit, until it fits or the largest tier failed too (then FAILED, with the reason). Every
attempt is recorded (pipeline.capacity.attempts).

Bounded: a pair only ever moves up, so it has at most one attempt per tier; the neighbours of a pair whose
whole task was killed (Slurm kills the task, not the pair) that never started are run again once on their own
tier, never moved. Nothing loops.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import update

from db.models import Job
from db.session import session_scope
from db.states import State
from pipeline.capacity import attempts
from pipeline.stages.bundle import Bundle, add_tasks
from pipeline.config import Settings
from pipeline.database import Database
from pipeline.executors.base import Executor, TaskState
from pipeline.stages.ledger import close_unfinished
from pipeline.capacity.tiers import next_tier, top_reason
from pipeline.stages.watch import Watcher
from pipeline.stopping import unbroken

log = logging.getLogger(__name__)


def escalate(settings: Settings, db: Database, executor: Executor, watcher: Watcher, bundle: Bundle,
             states: dict[int, TaskState], round_started: float) -> dict[int, TaskState]:
    """Record the run's attempts, and run again what a larger tier can fix; returns every task's state."""
    tiers = settings.tier_list
    by_name = {t.name: t for t in tiers}
    keys = [p["key"] for p in bundle.pairs()]
    for round_no in range(2, 2 * len(tiers) + 2):  # at most one move per tier, plus re-runs of neighbours
        close_unfinished(db, bundle, states, cancelled=watcher.stop_reason())
        rows = _with_culprits(bundle, attempts.collect(db, bundle, keys, states, by_name, settings.cpus_per_task),
                              round_started)
        up: dict[str, list[dict]] = {}
        again: dict[str, list[dict]] = {}
        outgrown: dict[str, str] = {}
        for row in rows:
            kind = row["failure_kind"]
            if kind not in ("OOM", "TIMEOUT"):
                continue
            if row.get("never_started"):  # its task was killed on another pair: not an attempt of its own
                again.setdefault(row["tier"], []).append(row)
                continue
            if kind == "TIMEOUT" and row["stage"] is not None:
                continue  # the pair_timeout setting stopped it, not the tier's limit: a larger tier changes nothing
            target = next_tier(tiers, row["tier"], kind)
            if target is None:
                if settings.tiers:  # with tiers configured, the largest one failed too
                    outgrown[row["pair_key"]] = f"{top_reason(tiers, kind)}; last attempt: {row['reason']}"
                continue
            row["escalated_to"] = target.name
            up.setdefault(target.name, []).append(row)
        attempts.save(db, [r for r in rows if not r.get("never_started")])
        _fail_outgrown(db, bundle.run_id, outgrown)
        if not (up or again) or not executor.can_resubmit or watcher.stop_requested():
            return states
        pairs = {p["key"]: p for p in bundle.pairs()}
        placed = [(t.name, [pairs[r["pair_key"]] for r in again.get(t.name, []) + up.get(t.name, [])])
                  for t in tiers if t.name in again or t.name in up]
        keys = [p["key"] for _, group in placed for p in group]
        moved = {r["pair_key"] for group in up.values() for r in group}
        for row in (r for group in (*up.values(), *again.values()) for r in group):
            attempts.keep_old_result(bundle, row["pair_key"], row["attempt"])
            watcher.forget(row["pair_key"])
        new = add_tasks(settings, bundle, placed, f"a{round_no}")
        log.warning("escalating %d pair(s) to a larger tier, re-running %d neighbour(s) on their own (round %d)",
                    len(moved), len(keys) - len(moved), round_no)
        round_started = time.time()
        with unbroken():  # a stop signal now is raised once the new job is known: its cancel reaches it
            job_id = executor.resubmit(bundle, new)
            watcher.job_ids.append(job_id)
            _reopen(db, bundle, keys, moved, job_id)
        watcher.cancel_if_stopped(job_id)
        watcher.progress.total += len(keys)
        states = {**states, **watcher.wait(job_id, expect=keys)}
        states = watcher.retry_infrastructure_failures(states, settings.max_retries)
    return states  # bounded: pairs only move up, each neighbour waits for its culprit's move


def _with_culprits(bundle: Bundle, rows: list[dict], round_started: float) -> list[dict]:
    """Mark the pairs of a task killed as a whole (no result) that never started in this round: the pair that
    was running is the one that ran out; the others only shared its task and run again on their own tier."""
    for row in rows:
        if row["has_result"] or row["failure_kind"] not in ("OOM", "TIMEOUT"):
            continue
        log_file = bundle.log_dir / f"{row['pair_key']}.log"
        try:
            started = log_file.stat().st_mtime >= round_started - 1
        except OSError:
            started = False
        row["never_started"] = not started
    by_task: dict[int | None, list[dict]] = {}
    for row in rows:
        by_task.setdefault(row["array_index"], []).append(row)
    for group in by_task.values():
        if all(r.get("never_started") for r in group if "never_started" in r):
            for r in group:  # no pair of the task is known to have started: all of them move up
                r.pop("never_started", None)
    return rows


def _fail_outgrown(db: Database, run_id: str, outgrown: dict[str, str]) -> None:
    """Pairs the largest tier could not hold: FAILED, with the reason."""
    if not outgrown:
        return
    with session_scope(db.sessions) as session:
        for key, reason in outgrown.items():
            session.execute(update(Job).where(Job.run_id == run_id, Job.pair_key == key)
                            .values(state=State.FAILED, reason=reason[:4000]))


def _reopen(db: Database, bundle: Bundle, keys: list[str], moved: set[str], job_id: str) -> None:
    """The pairs run again: PENDING under the new job id and task; the attempt of those moved up counts up (a
    neighbour that never started keeps its number)."""
    task_of = bundle.task_of()
    with session_scope(db.sessions) as session:
        for key in keys:
            session.execute(update(Job).where(Job.run_id == bundle.run_id, Job.pair_key == key).values(
                state=State.PENDING, slurm_job_id=job_id, attempt=Job.attempt + (1 if key in moved else 0),
                array_index=task_of[key], stage=None, reason=None, ended_at=None))


def recorder(settings: Settings, db: Database, bundle: Bundle):  # noqa: ANN201 - the watcher's on_retry
    """Records the attempts an infrastructure retry is about to replace (NODE_FAIL, PREEMPTED)."""
    by_name = {t.name: t for t in settings.tier_list}

    def on_retry(keys: list[str], states: dict[int, TaskState]) -> None:
        pairs = {p["key"]: p for p in bundle.pairs()}
        unfinished = [k for k in keys if (attempts.spool_result(bundle, pairs[k]) or {}).get("status") != "ok"]
        attempts.save(db, attempts.collect(db, bundle, unfinished, states, by_name, settings.cpus_per_task))

    return on_retry
