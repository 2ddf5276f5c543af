"""Slurm through its command-line tools: `sbatch --parsable` arrays, one `sacct` per poll, `scancel`.

Arrays larger than the cluster's MaxArraySize are cut into several array jobs; each
gets `SCORE_PLUGINS_TASK_OFFSET` so the script finds its task in the manifest. The
submitted environment is the same allow-list as the local executor's (no credential,
no inherited `SBATCH_*`).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time

from db.states import State
from pipeline.errors import BadInput, InfrastructureError
from pipeline.executors.base import Executor, TaskState, job_environment
from pipeline.executors.slurm.ids import ArrayPart, array_chunks, parse_parts
from pipeline.executors.slurm.states import SACCT_FORMAT, AccountingGrace, parse_sacct, parse_squeue, unrecorded_ends

log = logging.getLogger(__name__)

# sbatch errors worth another try: the controller is busy or restarting.
TRANSIENT_SBATCH = ("Socket timed out", "temporarily unable", "Resource temporarily unavailable",
                    "Unable to contact slurm controller", "Zero Bytes were transmitted", "Connection refused")


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


class SlurmExecutor(Executor):
    name = "slurm"
    poll_interval = (2.0, 60.0)
    can_resubmit = True

    def __init__(self, max_submit_tries: int = 4):
        self.max_submit_tries = max_submit_tries
        self.sacct_calls = 0  # real sacct invocations (one per poll; none while it does not answer)
        self.squeue_calls = 0
        self._last: dict[str, dict[int, TaskState]] = {}
        self._grace = AccountingGrace()

    def _env(self, offset: int) -> dict[str, str]:
        env = job_environment({"SCORE_PLUGINS_TASK_OFFSET": str(offset)})
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
        """Each array of the bundle (one per tier), cut at MaxArraySize; our task indices run on."""
        throttle = bundle.manifest.array_throttle
        parts = []
        size = max_array_size()
        for script, first, n in bundle.arrays():
            for offset, count in array_chunks(n, size):
                array = f"0-{count - 1}" + (f"%{throttle}" if throttle else "")
                job_id = self.sbatch(str(script), array, str(bundle.log_dir), offset)
                parts.append(ArrayPart(job_id, first + offset, count))
        return ",".join(str(p) for p in parts)

    def resubmit(self, bundle, indices: list[int]) -> str:  # noqa: ANN001
        """Run some tasks again (after NODE_FAIL or PREEMPTED) or new tasks of an escalation: an array whose
        tasks are all asked for (an escalation round's new script) is one array job, cut at MaxArraySize; any
        other task is a single-task array job, under its own array's script (its tier's request)."""
        parts = []
        wanted = set(indices)
        size = None
        for script, first, n in bundle.arrays():
            span = set(range(first, first + n))
            if n > 1 and span <= wanted:
                size = size or max_array_size()
                for offset, count in array_chunks(n, size):
                    throttle = bundle.manifest.array_throttle
                    job_id = self.sbatch(str(script), f"0-{count - 1}" + (f"%{throttle}" if throttle else ""),
                                         str(bundle.log_dir), offset)
                    parts.append(ArrayPart(job_id, first + offset, count))
                wanted -= span
        for index in sorted(wanted):
            script, relative = bundle.script_for(index)
            job_id = self.sbatch(str(script), "0", str(bundle.log_dir), relative)
            parts.append(ArrayPart(job_id, index, 1))
        return ",".join(str(p) for p in parts)

    def poll(self, job_id: str) -> dict[int, TaskState]:
        """One sacct call for all of a run's jobs; while the controller is unreachable (restarting), the last
        known states are returned, so nothing is declared over because the scheduler could not answer."""
        parts = parse_parts(job_id)
        self.sacct_calls += 1
        proc = run_cmd(["sacct", "--parsable2", "--noheader", "--duplicates", "-j",
                        ",".join(p.job_id for p in parts), f"--format={SACCT_FORMAT}"])
        if proc.returncode == 0 and proc.stdout.strip():
            states = parse_sacct(proc.stdout, parts)
            waiting = unrecorded_ends(states, from_accounting=True)
        else:
            states = self._poll_squeue(parts)
            if states is None:  # neither accounting nor the controller answered
                log.warning("Slurm did not answer (%s); keeping the last known states", proc.stderr.strip()[:200])
                previous = self._last.get(job_id, {})
                return {i: previous.get(i, TaskState(i, State.PENDING)) for p in parts
                        for i in range(p.offset, p.offset + p.count)}
            # sacct answered (accounting is on) without this job: how a task ended is for accounting to say
            waiting = unrecorded_ends(states, from_accounting=False) if proc.returncode == 0 else set()
        states = self._grace.hold(job_id, states, waiting)
        # A task sacct does not list yet was just submitted.
        for part in parts:
            for i in range(part.offset, part.offset + part.count):
                states.setdefault(i, TaskState(i, State.PENDING))
        self._last[job_id] = states
        return states

    def _poll_squeue(self, parts: list[ArrayPart]) -> dict[int, TaskState] | None:
        """Without accounting (or before it lists the job): squeue's states, ended tasks included while the
        controller keeps them (MinJobAge); what it no longer lists has ended. None when it does not answer."""
        self.squeue_calls += 1
        proc = run_cmd(["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%N|%e", "--jobs",
                        ",".join(p.job_id for p in parts)])
        if proc.returncode != 0 and "Invalid job id" not in proc.stderr:
            return None
        return parse_squeue(proc.stdout if proc.returncode == 0 else "", parts)

    def cancel(self, job_id: str) -> None:
        ids = [p.job_id for p in parse_parts(job_id)]
        if ids:
            run_cmd(["scancel", *ids])

    def stats(self) -> dict[str, int]:
        return {"sacct_calls": self.sacct_calls, "squeue_calls": self.squeue_calls}
