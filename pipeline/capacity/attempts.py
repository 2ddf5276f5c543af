"""Every ended attempt of a pair, classified and recorded: which tier, what it asked for, what it used, how it
ended. The failure kind decides what happens next: OOM goes one tier up, TIMEOUT to a longer tier, PLUGIN is
the submitter's to fix (never retried), INFRASTRUCTURE is retried as before, UNKNOWN is said as such.

Brain-Score's orchestrator once recorded 217 out-of-memory kills as "unknown" and never escalated them: the
kind is read from every source there is (the worker's result, the scheduler's state, the measured peak
against the request), and the record keeps the raw state and reason beside it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from sqlalchemy import select

from db.models import Attempt, Job
from db.session import session_scope
from db.states import OPEN, State
from db.upsert import insert_many
from pipeline.database import Database
from pipeline.executors.base import TaskState
from pipeline.stages.ingest import RejectedResult, check_result
from pipeline.tiers import Tier
from pipeline.executors.slurm.ids import task_job_id
from pipeline.job.gpus import GPU_OUT_OF_MEMORY

KINDS = ("OOM", "GPU_OOM", "TIMEOUT", "PLUGIN", "INFRASTRUCTURE", "UNKNOWN", "CANCELLED")
MEMORY_ERROR = re.compile(r"_?\w*MemoryError\b")  # MemoryError, numpy's _ArrayMemoryError
NEAR_LIMIT = 0.9  # a SIGKILL with the peak this close to the request is the memory limit's


def failure_kind(state: str, stage: str | None, reason: str | None, peak: int | None = None,
                 limit: int | None = None) -> str | None:
    """None for a success, else one of KINDS."""
    reason = reason or ""
    if state == State.COMPLETED:
        return None
    if state in (State.OUT_OF_MEMORY, State.FAILED) and GPU_OUT_OF_MEMORY.search(reason):
        return "GPU_OOM"  # CUDA's out of memory (torch's OutOfMemoryError is no host MemoryError)
    if state == State.OUT_OF_MEMORY or MEMORY_ERROR.match(reason):
        return "OOM"
    if state == State.TIMEOUT:
        return "TIMEOUT"
    if state in (State.NODE_FAIL, State.PREEMPTED, State.LOST, State.INFRA_FAIL):
        return "INFRASTRUCTURE"
    if state == State.CANCELLED:
        return "CANCELLED"
    if "SIGKILL" in reason or reason.startswith("FAILED"):
        if peak and limit and peak >= NEAR_LIMIT * limit:
            return "OOM"  # killed at its memory limit (a cluster without cgroup accounting of the kill)
        return "UNKNOWN"
    if stage in ("env_build", "import", "score", "persist"):
        return "PLUGIN"
    return "UNKNOWN"


@dataclass
class Outcome:
    """How one attempt of one pair ended, from the best source there is."""

    key: str
    state: str
    stage: str | None
    reason: str | None
    max_rss_bytes: int | None
    elapsed_seconds: float | None
    cpu_seconds: float | None
    exit_code: int | None
    node: str | None
    has_result: bool
    gpus: dict | None = None  # gpu_count, gpu_model, gpus_used, max_gpu_mem_bytes, as the worker measured them
    job_id: str | None = None  # `<array job>_<task>` as the result's Slurm variables name it


def spool_result(bundle, pair: dict) -> dict | None:  # noqa: ANN001 - pipeline.stages.bundle.Bundle
    """This pair's result file, checked like ingest checks it (None: none, or not one the worker wrote)."""
    path = bundle.spool_dir / f"{pair['key']}.json"
    try:
        return check_result(json.loads(path.read_text(encoding="utf-8")), pair, bundle.manifest)
    except (OSError, ValueError, RejectedResult):
        return None


def outcome(bundle, pair: dict, job: Job | None, task: TaskState | None) -> Outcome:  # noqa: ANN001
    """The result file when the pair wrote one, else its closed job row, else its task's state."""
    key = pair["key"]
    result = spool_result(bundle, pair)
    peak = task.max_rss_bytes if task else None
    elapsed = task.elapsed_seconds if task else None
    code = task.exit_code if task else None
    node = (task.node if task else None) or (job.node if job else None)
    if result is not None:
        return Outcome(key, result["state"], result.get("stage"), result.get("reason"),
                       result.get("max_rss_bytes") or peak, result.get("elapsed_seconds") or elapsed,
                       result.get("cpu_seconds"), code, result.get("node") or node, True,
                       {k: result.get(k) for k in GPU_FIELDS},
                       f"{result['job_id']}_{result['array_index']}" if result.get("job_id") and
                       result.get("array_index") is not None else None)
    if job is not None and job.state not in OPEN:
        return Outcome(key, job.state, job.stage, job.reason, peak, elapsed, None, code, node, False)
    state = task.state if task and task.done else State.LOST
    if state == State.COMPLETED:
        state = State.LOST  # the task ended well but left no result for this pair
    return Outcome(key, state, None, (task.reason if task else "") or f"its task ended as {state}", peak, elapsed,
                   None, code, node, False)


def collect(db: Database, bundle, keys: Iterable[str], states: dict[int, TaskState],  # noqa: ANN001
            tiers: dict[str, Tier], cpus: int) -> list[dict]:
    """The attempt row of each of `keys` as it ended (its current attempt number, its task's tier), with its
    failure kind; `save` writes them."""
    keys = list(keys)
    task_of = bundle.task_of()
    tasks = {t["index"]: t for t in bundle.manifest.tasks}
    wanted = set(keys)
    with db.sessions() as session:  # the run's rows (no IN list of thousands of keys)
        jobs = {j.pair_key: j for j in session.scalars(select(Job).where(Job.run_id == bundle.run_id))
                if j.pair_key in wanted}
    rows = []
    pairs = {p["key"]: p for p in bundle.pairs()}
    now = datetime.now(timezone.utc)
    for key in keys:
        index = task_of.get(key)
        task = tasks.get(index, {})
        tier = tiers.get(task.get("tier", ""))
        job = jobs.get(key)
        pair = pairs.get(key, {"key": key})
        got = outcome(bundle, pair, job, states.get(index) if index is not None else None)
        limit = tier.mem_bytes if tier else None
        if got.has_result and got.max_rss_bytes and limit:
            got.max_rss_bytes = min(got.max_rss_bytes, limit)  # a plugin's own report cannot claim more than it had
        rows.append({
            "run_id": bundle.run_id, "pair_key": key, "model": pair.get("model", ""),
            "benchmark": pair.get("benchmark", ""), "submitters": pair.get("submitters") or [],
            "attempt": job.attempt if job else 1, "tier": task.get("tier", "default"),
            "req_mem_bytes": limit, "req_time_minutes": tier.time_minutes if tier else None,
            "req_gpus": tier.gpus if tier else 0, "req_cpus": cpus,
            "max_rss_bytes": got.max_rss_bytes, "elapsed_seconds": got.elapsed_seconds,
            "cpu_seconds": got.cpu_seconds, "exit_code": got.exit_code, "state": got.state,
            "failure_kind": failure_kind(got.state, got.stage, got.reason, got.max_rss_bytes, limit),
            "reason": (got.reason or "")[:4000] or None, "node": (got.node or "")[:200] or None,
            "job_id": attempt_job_id(job, index, got), "array_index": index,
            "commit": bundle.manifest.commit, "model_code_hash": pair.get("model_code_hash"),
            "benchmark_code_hash": pair.get("benchmark_code_hash"), "escalated_to": None, "ended_at": now,
            "stage": got.stage, "has_result": got.has_result,
            "req_gpu_mem_bytes": tier.gpu_mem_bytes if tier and tier.gpus else None,
            "gpu_count": (got.gpus or {}).get("gpu_count") or (tier.gpus if tier and tier.gpus else None),
            "gpu_model": (got.gpus or {}).get("gpu_model"), "gpus_used": (got.gpus or {}).get("gpus_used"),
            "max_gpu_mem_bytes": (got.gpus or {}).get("max_gpu_mem_bytes"),
        })
    return rows


def attempt_job_id(job: Job | None, index: int | None, got: Outcome) -> str | None:
    """The job and task that ran this attempt, `<job>_<task>`: on Slurm the array job id and the task's id within
    it, as sacct prints them (read from the Slurm variables its result recorded, else derived from the job ids
    the executor returned for the pair's current task); on the local executor its job id and the run's task
    (pipeline.executors.slurm.ids.task_job_id)."""
    if got.job_id and got.job_id.split("_", 1)[0].isdigit():
        return got.job_id[:64]
    if job is not None and job.slurm_job_id and index is not None:
        return task_job_id(job.slurm_job_id, index)[:64]
    return got.job_id[:64] if got.job_id else None


GPU_FIELDS = ("gpu_count", "gpu_model", "gpus_used", "max_gpu_mem_bytes")
ROW_ONLY = ("stage", "has_result")  # what `collect` adds for the caller, not a column


def save(db: Database, rows: list[dict]) -> None:
    """Write attempt rows; an attempt already recorded is left as it is (a re-run of this is harmless)."""
    if rows:
        with session_scope(db.sessions) as session:
            insert_many(session, Attempt, [{k: v for k, v in r.items() if k not in ROW_ONLY} for r in rows],
                        conflict=["run_id", "pair_key", "attempt"])


def run_attempts(db: Database, run_id: str) -> list[dict]:
    """A run's attempts, oldest first, as `status --format json` lists them."""
    with db.sessions() as session:
        rows = session.scalars(select(Attempt).where(Attempt.run_id == run_id)
                               .order_by(Attempt.model, Attempt.benchmark, Attempt.attempt)).all()
    return [{"model": a.model, "benchmark": a.benchmark, "attempt": a.attempt, "tier": a.tier, "state": a.state,
             "failure_kind": a.failure_kind, "reason": a.reason, "max_rss_bytes": a.max_rss_bytes,
             "elapsed_seconds": a.elapsed_seconds, "cpu_seconds": a.cpu_seconds, "exit_code": a.exit_code,
             "req_mem_bytes": a.req_mem_bytes, "req_time_minutes": a.req_time_minutes, "req_gpus": a.req_gpus,
             "node": a.node, "job_id": a.job_id, "array_index": a.array_index, "escalated_to": a.escalated_to,
             "submitters": a.submitters or [], "gpu_model": a.gpu_model, "gpu_count": a.gpu_count,
             "gpus_used": a.gpus_used, "max_gpu_mem_bytes": a.max_gpu_mem_bytes,
             "req_gpu_mem_bytes": a.req_gpu_mem_bytes}
            for a in rows]


def usage(attempts: list[dict], cpus_default: int = 1) -> dict:
    """What the attempts used against what they asked for: CPU-hours (the CPU time of each pair's processes,
    both sides and their children), GB-hours, GPU-hours requested and used (used: the GPUs on which NVML saw the
    pair allocate memory; `gpu_hours_used` is None when no GPU attempt could be measured, and
    `gpu_attempts_not_measured` counts those left out), and how many attempts and escalations there were."""
    def hours(value: float) -> float:
        return round(value / 3600, 4)

    cpu_used = cpu_req = gb_used = gb_req = gpu_req = gpu_used = 0.0
    gpu_attempts = gpu_unmeasured = 0
    for a in attempts:
        elapsed = a.get("elapsed_seconds") or 0.0
        cpu_used += a.get("cpu_seconds") or 0.0
        cpu_req += elapsed * (a.get("req_cpus") or cpus_default)
        gb_used += elapsed * (a.get("max_rss_bytes") or 0) / 2**30
        gb_req += elapsed * (a.get("req_mem_bytes") or 0) / 2**30
        gpu_req += elapsed * (a.get("req_gpus") or 0)
        if a.get("req_gpus"):
            gpu_attempts += 1
            if a.get("gpus_used") is None:
                gpu_unmeasured += 1
            else:
                gpu_used += elapsed * a["gpus_used"]
    measured = gpu_attempts - gpu_unmeasured
    found = {"attempts": len(attempts), "escalations": sum(1 for a in attempts if a.get("escalated_to")),
             "cpu_hours_used": hours(cpu_used), "cpu_hours_requested": hours(cpu_req),
             "gb_hours_used": hours(gb_used), "gb_hours_requested": hours(gb_req),
             "gpu_hours_requested": hours(gpu_req), "gpu_hours_used": hours(gpu_used) if measured else None,
             "gpu_attempts": gpu_attempts, "gpu_attempts_not_measured": gpu_unmeasured}
    found["gpu_summary"] = gpu_words(found)  # what status and the emails print
    return found


def gpu_words(use: dict) -> str:
    """GPU-hours as status and the emails say them: used (or "not measured") of requested."""
    if not use.get("gpu_attempts"):
        return f"GPU-hours {use.get('gpu_hours_requested', 0.0)} requested"
    used = "not measured" if use.get("gpu_hours_used") is None else f"{use['gpu_hours_used']} used"
    unmeasured = use.get("gpu_attempts_not_measured") or 0
    more = f" ({unmeasured} attempt(s) not measured)" if unmeasured and use.get("gpu_hours_used") is not None else ""
    return f"GPU-hours {used} of {use['gpu_hours_requested']} requested{more}"


def by_submitter(attempts: list[dict]) -> dict[str, dict]:
    """`usage` per submitter (a pair with two submitters counts for both)."""
    grouped: dict[str, list[dict]] = {}
    for a in attempts:
        for email in a.get("submitters") or []:
            grouped.setdefault(email, []).append(a)
    return {email: usage(rows) for email, rows in sorted(grouped.items())}


def keep_old_result(bundle, key: str, attempt: int) -> None:  # noqa: ANN001
    """Move a result an escalation supersedes out of the spool (kept beside it as evidence), so the next
    attempt's result is ingested in its place."""
    path = bundle.spool_dir / f"{key}.json"
    if path.exists():
        folder = Path(bundle.run_dir) / "attempts"
        folder.mkdir(exist_ok=True)
        path.replace(folder / f"{key}.{attempt}.json")


def notes(attempts: list[dict]) -> dict[tuple[str, str], str]:
    """One line per pair that needed more than one attempt: the tiers it went through and how each ended."""
    by_pair: dict[tuple[str, str], list[dict]] = {}
    for a in attempts:
        by_pair.setdefault((a["model"], a["benchmark"]), []).append(a)
    lines = {}
    for (model, benchmark), tries in by_pair.items():
        if len(tries) < 2:
            continue
        steps = []
        for a in sorted(tries, key=lambda a: a["attempt"]):
            peak = f", peak {a['max_rss_bytes'] / 2**30:.2f} GB" if a.get("max_rss_bytes") else ""
            if a.get("req_gpus"):
                peak += f", GPU peak {gpu_peak_words(a)}"
            steps.append(f"{a['tier']} {a['failure_kind'] or 'COMPLETED'}{peak}")
        lines[(model, benchmark)] = f"{model} on {benchmark}: " + " -> ".join(steps)
    return lines


def resources_by_submitter(attempts: list[dict]) -> dict[str, tuple[dict, list[str]]]:
    """What each submitter's email says about resources: their usage and their pairs' escalations."""
    lines = notes(attempts)
    found: dict[str, tuple[dict, list[str]]] = {}
    for email, use in by_submitter(attempts).items():
        mine = sorted({(a["model"], a["benchmark"]) for a in attempts if email in (a.get("submitters") or [])})
        found[email] = (use, [lines[p] for p in mine if p in lines])
    return found


def gpu_peak_words(attempt: dict) -> str:
    """An attempt's peak GPU memory in words: "not measured" where NVML could not tell (never 0 for unknown)."""
    value = attempt.get("max_gpu_mem_bytes")
    return "not measured" if value is None else f"{value / 2**30:.2f} GB"
