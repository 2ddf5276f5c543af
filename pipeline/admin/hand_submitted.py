"""Bundles an administrator submitted by hand (`render`, then the `submit` line it prints: the bundle's
submit.sh): their Slurm jobs are read from the bundle's `slurm-jobs` file, which that line writes, so that a
task Slurm killed (out of memory, out of time, cancelled) is recorded with its state and its attempt row instead
of leaving its pairs RENDERED forever. `ingest` and `reconcile` both do it; one sacct call per bundle.

The file is the administrator's (a trusted person), still read strictly: each line `<job id>@<first task>+<count>`
with the tasks inside the bundle's manifest, anything else ignored.
"""

from __future__ import annotations

import re

from db.models import Run
from pipeline.capacity.unwatched import record_ended
from pipeline.config import Settings
from pipeline.database import Database
from pipeline.executors import get_executor
from pipeline.executors.slurm.ids import ArrayPart
from pipeline.stages import ledger
from pipeline.stages.bundle import Bundle

JOBS_FILE = "slurm-jobs"
LINE = re.compile(r"(\d{1,20})@(\d{1,9})\+(\d{1,9})(?:\s|$)")


def recorded_job_id(bundle: Bundle) -> str | None:
    """The bundle's Slurm jobs in our stored form (`JOB@FIRST+COUNT,...`), as its submit line recorded them;
    None when it recorded none (run by hand, or submitted with a bare sbatch)."""
    try:
        with open(bundle.run_dir / JOBS_FILE, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
    except OSError:
        return None
    parts = []
    for line in text.splitlines():
        match = LINE.match(line.strip())
        if match:
            part = ArrayPart(match.group(1), int(match.group(2)), int(match.group(3)))
            if part.count and part.offset + part.count <= bundle.n_tasks:
                parts.append(str(part))
    return ",".join(dict.fromkeys(parts)) or None


def account(settings: Settings, db: Database, run: Run, bundle: Bundle) -> dict[str, int]:
    """Ask Slurm about the jobs a hand-submitted bundle recorded; each pair whose task ended without a result is
    closed with that task's state (through the ledger) and gets its attempt row. Returns the counts per new
    state (empty when the bundle recorded no job)."""
    job_id = recorded_job_id(bundle)
    if job_id is None:
        return {}
    executor = get_executor("slurm", settings, check_limits=False)
    try:
        states = executor.poll(job_id)
    finally:
        executor.close()
    changed = ledger.close_hand_submitted(db, bundle, states, job_id)
    record_ended(db, bundle, states, settings.tier_list)
    return changed


def rerun_executor(run: Run) -> str:
    """The executor a `rerun --failed` of a hand-submitted run uses when none is named: Slurm when its bundle was
    submitted through Slurm (it recorded its jobs), else the local one."""
    from pathlib import Path

    from pipeline.errors import BadInput
    from pipeline.stages.bundle import load_bundle

    try:
        bundle = load_bundle(Path(run.run_dir)) if run.run_dir else None
    except BadInput:  # its folder is gone (pruned, moved): nothing says it went through Slurm
        bundle = None
    return "slurm" if bundle is not None and recorded_job_id(bundle) else "local"
