"""What `status` shows of a run, as plain data: its state counts, each pair's state, the CPU-hours it used and
every attempt. The CLI only formats it."""

from __future__ import annotations

from pathlib import Path

from db.queries import get_run, run_jobs
from pipeline.database import Database
from pipeline.errors import BadInput
from pipeline.capacity.attempts import by_submitter, run_attempts, usage
from pipeline.stages.bundle import read_manifest


def run_cpus(run_dir: str) -> int:
    """CPUs each task of the run asked for (1 when its manifest is gone or unreadable)."""
    try:
        return read_manifest(Path(run_dir)).cpus_per_task
    except BadInput:
        return 1


def run_status(db: Database, run_id: str | None) -> dict:
    """Counts per state of a run (default: the newest), each pair's state, and the CPU-hours it used."""
    with db.sessions() as session:
        run = get_run(session, run_id)
        if run is None:
            raise BadInput(f"no run {run_id!r}" if run_id else "no runs yet")
        jobs = run_jobs(session, run.id)
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j.state] = counts.get(j.state, 0) + 1
    cpus = run_cpus(run.run_dir)
    cpu_seconds = sum((j.ended_at - j.started_at).total_seconds() * cpus for j in jobs if j.started_at and j.ended_at)
    tries = run_attempts(db, run.id)
    used = usage(tries, cpus)
    # the CPU time the pairs' processes used (their attempts'); a run recorded before attempts: its CPUs' wall time
    return {"run_id": run.id, "status": run.status, "executor": run.executor,
            "sandbox": run.sandbox or "bwrap", "memory_limit": run.memory_limit, "network": run.network,
            "cpu_hours": used["cpu_hours_used"] if tries else round(cpu_seconds / 3600, 4),
            "cpu_hours_allocated": round(cpu_seconds / 3600, 4),
            "attempts": tries, "usage": used, "usage_by_submitter": by_submitter(tries),
            "commit": run.head_commit, "created_at": run.created_at.isoformat(),
            "ended_at": run.ended_at.isoformat() if run.ended_at else None, "counts": counts,
            "jobs": [{"model": j.model, "benchmark": j.benchmark, "state": j.state, "stage": j.stage,
                      "reason": j.reason, "job_id": j.slurm_job_id, "array_index": j.array_index,
                      "score": j.score} for j in jobs]}
