"""Slurm through pyslurm (the C API) instead of the command-line tools: optional.

PyPI ships pyslurm only for Slurm 25.11 (and 17/18); Debian bookworm has 22.05, so this
backend is not exercised against a live cluster here. pyslurm is imported lazily, and the
part that decides what our states are (`states_from_jobs`) is pure and unit-tested.
"""

from __future__ import annotations

from typing import Any, Iterable

from pipeline.errors import InfrastructureError
from db.states import State
from jobscripts.render import SlurmOptions
from pipeline.executors.base import Executor, TaskState, job_environment
from pipeline.executors.slurm.states import slurm_state


def _pyslurm() -> Any:
    try:
        import pyslurm  # noqa: PLC0415 - optional, and only where it matches the cluster's Slurm
    except ImportError:
        raise InfrastructureError("the pyslurm executor needs pyslurm matching this cluster's Slurm "
                                  "(pip install pyslurm==<slurm version>); use --executor slurm") from None
    return pyslurm


def states_from_jobs(jobs: Iterable[Any], array_job_id: int, n_tasks: int) -> dict[int, TaskState]:
    """pyslurm Job objects (attributes array_id, array_task_id, state, state_reason, batch_host) -> ours."""
    states: dict[int, TaskState] = {}
    for job in jobs:
        if getattr(job, "array_id", None) != array_job_id:
            continue
        index = getattr(job, "array_task_id", None)
        if index is None:
            continue
        word = str(getattr(job, "state", "PENDING")).split()[0].upper()
        ours = slurm_state(word)
        reason = "" if ours in (State.PENDING, State.RUNNING, State.COMPLETED) else f"{word} ({getattr(job, 'state_reason', '')})"
        states[int(index)] = TaskState(int(index), ours, reason, str(getattr(job, "batch_host", "") or ""))
    for index in range(n_tasks):
        states.setdefault(index, TaskState(index, State.PENDING))
    return states


class PyslurmExecutor(Executor):
    name = "pyslurm"
    poll_interval = (2.0, 60.0)

    def __init__(self, options: SlurmOptions, throttle: int = 0) -> None:
        self.options = options
        self.throttle = throttle
        self._tasks: dict[str, int] = {}

    def submit(self, bundle) -> str:  # noqa: ANN001
        pyslurm = _pyslurm()
        desc = pyslurm.JobSubmitDescription(
            name=f"score-{bundle.run_id}", script=str(bundle.job_script),
            array=f"0-{bundle.n_tasks - 1}" + (f"%{self.throttle}" if self.throttle else ""),
            time_limit=self.options.time_minutes, memory_per_node=self.options.mem,
            cpus_per_task=self.options.cpus_per_task, partition=self.options.partition or None,
            account=self.options.account or None, qos=self.options.qos or None,
            environment=job_environment({"SCORE_PLUGINS_TASK_OFFSET": "0"}), requeue=False,
            standard_output=f"{bundle.log_dir}/slurm-%A_%a.out")
        job_id = str(desc.submit())
        self._tasks[job_id] = bundle.n_tasks
        return job_id

    def attach(self, bundle, job_id: str) -> None:  # noqa: ANN001
        self._tasks.setdefault(job_id, bundle.n_tasks)

    def poll(self, job_id: str) -> dict[int, TaskState]:
        pyslurm = _pyslurm()
        jobs = pyslurm.Jobs.load().values()
        return states_from_jobs(jobs, int(job_id), self._tasks.get(job_id, 0))

    def cancel(self, job_id: str) -> None:
        _pyslurm().Job(int(job_id)).cancel()
