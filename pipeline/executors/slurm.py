"""Slurm through its command-line tools: `sbatch --parsable` arrays, one `sacct` per poll, `scancel`.

Arrays larger than the cluster's MaxArraySize are cut into several array jobs; each
gets `SCORE_PLUGINS_TASK_OFFSET` so the script finds its task in the manifest. The
submitted environment is the same allow-list as the local executor's (no credential,
no inherited `SBATCH_*`).
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from dataclasses import dataclass

from pipeline.errors import BadInput, InfrastructureError
from pipeline.executors.base import PENDING, RUNNING, Executor, TaskState
from pipeline.executors.local import job_environment
from pipeline.units import size_bytes

log = logging.getLogger(__name__)

# sacct's states -> ours. Anything unknown is treated as still running and logged.
STATE_MAP = {
    "PENDING": PENDING, "REQUEUED": PENDING, "REQUEUE_FED": PENDING, "REQUEUE_HOLD": PENDING,
    "RUNNING": RUNNING, "COMPLETING": RUNNING, "CONFIGURING": RUNNING, "RESIZING": RUNNING,
    "SUSPENDED": RUNNING, "STOPPED": RUNNING, "SIGNALING": RUNNING, "STAGE_OUT": RUNNING,
    "COMPLETED": "COMPLETED", "FAILED": "FAILED", "TIMEOUT": "TIMEOUT", "DEADLINE": "TIMEOUT",
    "OUT_OF_MEMORY": "OUT_OF_MEMORY", "NODE_FAIL": "NODE_FAIL", "BOOT_FAIL": "NODE_FAIL",
    "CANCELLED": "CANCELLED", "REVOKED": "CANCELLED", "PREEMPTED": "PREEMPTED",
}
# sbatch errors worth another try: the controller is busy or restarting.
TRANSIENT_SBATCH = ("Socket timed out", "temporarily unable", "Resource temporarily unavailable",
                    "Unable to contact slurm controller", "Zero Bytes were transmitted", "Connection refused")
SACCT_FORMAT = "JobID,State,ExitCode,NodeList,Elapsed,Reason,MaxRSS,ReqMem"



@dataclass(frozen=True)
class ArrayPart:
    """One submitted array job: Slurm's job id, and which of our task indices it covers."""

    job_id: str
    offset: int
    count: int

    def __str__(self) -> str:
        return f"{self.job_id}@{self.offset}+{self.count}"

    @classmethod
    def parse(cls, text: str) -> ArrayPart:
        job_id, _, rest = text.partition("@")
        offset, _, count = rest.partition("+")
        return cls(job_id, int(offset or 0), int(count or 0))


def parse_parts(job_id: str) -> list[ArrayPart]:
    return [ArrayPart.parse(p) for p in job_id.split(",") if p]


def array_chunks(n_tasks: int, max_array_size: int) -> list[tuple[int, int]]:
    """(offset, count) pieces of at most MaxArraySize tasks (indices 0..MaxArraySize-1)."""
    size = max(1, max_array_size)
    return [(offset, min(size, n_tasks - offset)) for offset in range(0, n_tasks, size)]


def run_cmd(args: list[str], env: dict[str, str] | None = None, timeout: int = 60) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    except FileNotFoundError:
        raise InfrastructureError(f"{args[0]} not found: is this a Slurm submit host? "
                                  "(scripts/slurm-cluster up starts a local one)") from None
    except subprocess.TimeoutExpired:
        raise InfrastructureError(f"{args[0]} did not answer within {timeout} s") from None


def max_array_size() -> int:
    proc = run_cmd(["scontrol", "show", "config"])
    if proc.returncode != 0:
        raise InfrastructureError(f"scontrol show config failed: {proc.stderr.strip()}")
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", proc.stdout, re.MULTILINE)
    return int(match.group(1)) if match else 1001


def parse_sacct(text: str, parts: list[ArrayPart]) -> dict[int, TaskState]:
    """sacct --parsable2 lines (allocations and their steps) -> our task index -> state.

    Pending ranges (`12_[3-7%2]`) are expanded. Without cgroups, a task killed for its memory
    shows as FAILED by signal 9; its batch step's MaxRSS against ReqMem tells it was memory.
    """
    offsets = {p.job_id: p for p in parts}
    states: dict[int, TaskState] = {}
    req_mem: dict[int, int | None] = {}
    peak: dict[int, int] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 6:
            continue
        fields += [""] * (8 - len(fields))
        job, state, exit_code, node, _elapsed, reason, max_rss, mem = fields[:8]
        allocation, _, step = job.partition(".")
        base, _, idx = allocation.partition("_")
        part = offsets.get(base)
        if part is None:
            continue
        if step:
            rss = size_bytes(max_rss, default_unit="")
            if rss is not None and idx.isdigit():
                peak[part.offset + int(idx)] = max(peak.get(part.offset + int(idx), 0), rss)
            continue
        word = state.split()[0] if state else "PENDING"
        ours = STATE_MAP.get(word)
        if ours is None:
            log.warning("unknown Slurm state %r for job %s; treating it as running", state, job)
            ours = RUNNING
        why = state if ours not in (PENDING, RUNNING, "COMPLETED") else ""
        if reason and reason not in ("None",) and ours in ("FAILED", "NODE_FAIL", "PREEMPTED", "CANCELLED"):
            why = f"{state} ({reason})"
        if ours == "FAILED" and exit_code:
            why = f"{state}: exit code {exit_code}"
        for i in _indices(idx, part.count):
            states[part.offset + i] = TaskState(part.offset + i, ours, why, node if node != "None assigned" else "",
                                                exit_code=_signal(exit_code))
            req_mem[part.offset + i] = size_bytes(mem)
    for i, state in states.items():
        limit, used = req_mem.get(i), peak.get(i)
        if state.state == "FAILED" and state.exit_code == 9 and limit and used and used >= 0.9 * limit:
            states[i] = TaskState(i, "OUT_OF_MEMORY", f"exceeded its memory limit ({used // 2**20} MB used of "
                                  f"{limit // 2**20} MB) and was killed", state.node, 9)
    return states


def _signal(exit_code: str) -> int | None:
    """sacct's 'code:signal' -> the signal, when there is one."""
    _, _, sig = exit_code.partition(":")
    return int(sig) if sig.isdigit() and int(sig) else None


def _indices(idx: str, count: int) -> list[int]:
    if idx.isdigit():
        return [int(idx)]
    if idx.startswith("["):
        out: list[int] = []
        for piece in idx.strip("[]").split("%")[0].split(","):
            lo, _, hi = piece.partition("-")
            if lo.isdigit():
                out.extend(range(int(lo), int(hi or lo) + 1))
        return out
    if idx == "":  # the whole job, not an array task
        return list(range(count))
    return []


class SlurmExecutor(Executor):
    name = "slurm"
    poll_interval = (2.0, 60.0)

    def __init__(self, max_submit_tries: int = 4):
        self.max_submit_tries = max_submit_tries
        self.sacct_calls = 0
        self.poll_cycles = 0
        self._last: dict[str, dict[int, TaskState]] = {}

    def _env(self, offset: int) -> dict[str, str]:
        env = job_environment({"SCORE_PLUGINS_TASK_OFFSET": str(offset)})
        import os

        if "SLURM_CONF" in os.environ:
            env["SLURM_CONF"] = os.environ["SLURM_CONF"]
        return env

    def sbatch(self, job_script: str, array: str, log_dir: str, offset: int) -> str:
        # --no-requeue: retries of infrastructure failures are ours (bounded, and visible in the job rows)
        args = ["sbatch", "--parsable", "--no-requeue", f"--array={array}", f"--output={log_dir}/slurm-%A_%a.out",
                job_script]
        delay = 1.0
        for attempt in range(1, self.max_submit_tries + 1):
            proc = run_cmd(args, env=self._env(offset))
            if proc.returncode == 0:
                return proc.stdout.strip().split(";")[0]
            message = proc.stderr.strip()
            if attempt < self.max_submit_tries and any(t in message for t in TRANSIENT_SBATCH):
                log.warning("sbatch failed (%s); trying again in %.0f s", message, delay)
                time.sleep(delay)
                delay *= 2
                continue
            if any(t in message for t in TRANSIENT_SBATCH):
                raise InfrastructureError(f"sbatch failed {attempt} times: {message}")
            raise BadInput(f"sbatch refused the job: {message}")
        raise InfrastructureError("sbatch failed")  # pragma: no cover - loop always returns or raises

    def submit(self, bundle) -> str:  # noqa: ANN001
        throttle = bundle.manifest.get("array_throttle") or 0
        parts = []
        for offset, count in array_chunks(bundle.n_tasks, max_array_size()):
            array = f"0-{count - 1}" + (f"%{throttle}" if throttle else "")
            job_id = self.sbatch(str(bundle.job_script), array, str(bundle.log_dir), offset)
            parts.append(ArrayPart(job_id, offset, count))
        return ",".join(str(p) for p in parts)

    def resubmit(self, bundle, indices: list[int]) -> str:  # noqa: ANN001
        """Run some tasks again (after NODE_FAIL or PREEMPTED): one single-task array job each."""
        parts = []
        for index in sorted(indices):
            job_id = self.sbatch(str(bundle.job_script), "0", str(bundle.log_dir), index)
            parts.append(ArrayPart(job_id, index, 1))
        return ",".join(str(p) for p in parts)

    def poll(self, job_id: str) -> dict[int, TaskState]:
        """One sacct call for all of a run's jobs; while the controller is unreachable (restarting), the last
        known states are returned, so nothing is declared over because the scheduler could not answer."""
        parts = parse_parts(job_id)
        self.poll_cycles += 1
        self.sacct_calls += 1
        proc = run_cmd(["sacct", "--parsable2", "--noheader", "--duplicates", "-j",
                        ",".join(p.job_id for p in parts), f"--format={SACCT_FORMAT}"])
        if proc.returncode == 0 and proc.stdout.strip():
            states = parse_sacct(proc.stdout, parts)
        else:
            states = self._poll_squeue(parts)
            if states is None:  # neither accounting nor the controller answered
                log.warning("Slurm did not answer (%s); keeping the last known states", proc.stderr.strip()[:200])
                previous = self._last.get(job_id, {})
                return {i: previous.get(i, TaskState(i, PENDING)) for p in parts
                        for i in range(p.offset, p.offset + p.count)}
        # A task sacct does not list yet was just submitted.
        for part in parts:
            for i in range(part.offset, part.offset + part.count):
                states.setdefault(i, TaskState(i, PENDING))
        self._last[job_id] = states
        return states

    def _poll_squeue(self, parts: list[ArrayPart]) -> dict[int, TaskState] | None:
        """Without accounting: what squeue lists is pending or running; the rest has ended.
        None when the controller does not answer either."""
        proc = run_cmd(["squeue", "--noheader", "--array", "--format=%i|%T|%N", "--jobs",
                        ",".join(p.job_id for p in parts)])
        if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
            return None
        listed: dict[int, TaskState] = {}
        if proc.returncode == 0:
            offsets = {p.job_id: p for p in parts}
            for line in proc.stdout.splitlines():
                job, _, rest = line.partition("|")
                state, _, node = rest.partition("|")
                base, _, idx = job.partition("_")
                part = offsets.get(base)
                if part is not None and idx.isdigit():
                    i = part.offset + int(idx)
                    listed[i] = TaskState(i, STATE_MAP.get(state, RUNNING), "", node)
        for part in parts:
            for i in range(part.offset, part.offset + part.count):
                listed.setdefault(i, TaskState(i, "COMPLETED", "ended (no accounting: outcome from its results)"))
        return listed

    def cancel(self, job_id: str) -> None:
        ids = [p.job_id for p in parse_parts(job_id)]
        if ids:
            run_cmd(["scancel", *ids])
