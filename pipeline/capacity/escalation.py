"""Within one run: a pair that ran out of memory goes one tier up (out of GPU memory: to a tier with more memory per
GPU), a pair that ran out of time goes to the next tier with a longer limit, until it fits or the largest tier
failed too (then FAILED, with the reason). Every attempt is recorded (pipeline.capacity.attempts), one row each.

Escalation learns within the run: when a model's pair runs out of memory on a tier, that model's pairs that have
not run yet (the neighbours its killed task never reached) start on the tier it moved to, instead of running out
of memory on the small tier one after another, a round each.

Bounded: rounds of escalation are at most the number of tiers. A pair only ever moves up, so it has at most one
attempt per tier; and each pair of an escalation round runs alone in its task, so no pair can be kept from
running by a neighbour after the first round: in every later round each pair either ends or moves up. The job
rows change through the ledger (`ledger.escalated`, `ledger.outgrown`), as every other transition.
"""

from __future__ import annotations

import logging
import time

from pipeline.capacity import attempts
from pipeline.stages.bundle import Bundle, add_tasks
from pipeline.config import Settings
from pipeline.database import Database
from pipeline.executors.base import Executor, TaskState
from pipeline.stages import ledger
from pipeline.tiers import Tier, next_tier, top_reason
from pipeline.stages.watch import Watcher
from pipeline.stopping import unbroken

log = logging.getLogger(__name__)

MEMORY_KINDS = ("OOM", "GPU_OOM")  # a model's own need: its other pairs will need it too


def escalate(settings: Settings, db: Database, executor: Executor, watcher: Watcher, bundle: Bundle,
             states: dict[int, TaskState], round_started: float) -> dict[int, TaskState]:
    """Record the run's attempts, and run again what a larger tier can fix; returns every task's state."""
    tiers = settings.tier_list
    by_name = {t.name: t for t in tiers}
    keys = [p["key"] for p in bundle.pairs()]
    rounds = 0
    while True:
        ledger.close_unfinished(db, bundle, states, cancelled=watcher.stop_reason())
        rows = _with_culprits(bundle, attempts.collect(db, bundle, keys, states, by_name, settings.cpus_per_task),
                              round_started)
        target, moved, outgrown = _places(settings, tiers, rows)
        attempts.save(db, [r for r in rows if not r.get("never_started")])
        ledger.outgrown(db, bundle.run_id, outgrown)
        if not target or not executor.can_resubmit or watcher.stop_requested():
            return states
        if rounds >= len(tiers):  # cannot happen (see the module's note); said, never looped
            ledger.outgrown(db, bundle.run_id, {k: f"escalation stopped after {rounds} rounds (one per tier)"
                                                for k in target})
            return states
        rounds += 1
        pairs = {p["key"]: p for p in bundle.pairs()}
        placed = [(t.name, [pairs[k] for k in target if target[k] is t]) for t in tiers if t in target.values()]
        keys = [p["key"] for _, group in placed for p in group]
        for key in keys:
            attempts.keep_old_result(bundle, key, _attempt_of(rows, key))
            watcher.forget(key)
        new = add_tasks(settings, bundle, placed, f"a{rounds + 1}", per_task=1)
        log.warning("escalation round %d: %d pair(s) to a larger tier, %d that never started (%d moved with "
                    "their model)", rounds, len(moved), len(keys) - len(moved),
                    sum(1 for k in keys if k not in moved and target[k].name != _row(rows, k)["tier"]))
        round_started = time.time()
        with unbroken():  # a stop signal now is raised once the new job is known: its cancel reaches it
            job_id = executor.resubmit(bundle, new)
            watcher.job_ids.append(job_id)
            ledger.escalated(db, bundle, keys, moved, job_id)
        watcher.cancel_if_stopped(job_id)
        states = {**states, **watcher.wait(job_id, expect=keys)}
        states = watcher.retry_infrastructure_failures(states, settings.max_retries)


def _places(settings: Settings, tiers: list[Tier], rows: list[dict]
            ) -> tuple[dict[str, Tier], set[str], dict[str, str]]:
    """Where each pair runs next (pair key -> tier), which of them made an attempt (their attempt counts up), and
    the pairs no tier can hold (key -> reason). Sets `escalated_to` on the rows that move up."""
    order = {t.name: i for i, t in enumerate(tiers)}
    by_name = {t.name: t for t in tiers}
    target: dict[str, Tier] = {}
    moved: set[str] = set()
    outgrown: dict[str, str] = {}
    model_tier: dict[str, Tier] = {}  # the tier a model's pairs moved to after running out of memory
    for row in rows:
        kind = row["failure_kind"]
        if kind not in (*MEMORY_KINDS, "TIMEOUT") or row.get("never_started"):
            continue
        if kind == "TIMEOUT" and row["stage"] is not None:
            continue  # the pair_timeout setting stopped it, not the tier's limit: a larger tier changes nothing
        up = next_tier(tiers, row["tier"], kind)
        if up is None:
            if settings.tiers:  # with tiers configured, the largest one failed too
                outgrown[row["pair_key"]] = f"{top_reason(tiers, kind)}; last attempt: {row['reason']}"
            continue
        row["escalated_to"] = up.name
        target[row["pair_key"]] = up
        moved.add(row["pair_key"])
        known = model_tier.get(row["model"])
        if kind in MEMORY_KINDS and (known is None or order[up.name] > order[known.name]):
            model_tier[row["model"]] = up
    for row in rows:
        if row.get("never_started"):  # its task was killed on another pair: not an attempt of its own
            own = by_name.get(row["tier"], tiers[0])
            learnt = model_tier.get(row["model"])
            target[row["pair_key"]] = learnt if learnt is not None and order[learnt.name] > order[own.name] else own
    return target, moved, outgrown


def _row(rows: list[dict], key: str) -> dict:
    return next(r for r in rows if r["pair_key"] == key)


def _attempt_of(rows: list[dict], key: str) -> int:
    return _row(rows, key)["attempt"]


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


def recorder(settings: Settings, db: Database, bundle: Bundle):  # noqa: ANN201 - the watcher's on_retry
    """Records the attempts an infrastructure retry is about to replace (NODE_FAIL, PREEMPTED)."""
    by_name = {t.name: t for t in settings.tier_list}

    def on_retry(keys: list[str], states: dict[int, TaskState]) -> None:
        pairs = {p["key"]: p for p in bundle.pairs()}
        unfinished = [k for k in keys if (attempts.spool_result(bundle, pairs[k]) or {}).get("status") != "ok"]
        attempts.save(db, attempts.collect(db, bundle, unfinished, states, by_name, settings.cpus_per_task))

    return on_retry
