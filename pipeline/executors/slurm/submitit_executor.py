"""Slurm through submitit: each array task runs the same rendered job script.

submitit pickles a call to `run_array_task` and submits it as a job array; the task
runs `bash job.sh` with the allow-listed environment, so the plugin side is the same
as with the other executors. sbatch is called with that allow-list too (submitit
passes on its process environment, which on the coordinator holds credentials).
A submitit job id is Slurm's array job id: a later process polls and cancels it
through sacct/scancel like any Slurm job.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from db.states import State
from jobscripts.render import SlurmOptions
from pipeline.executors.base import Executor, TaskState, job_environment
from pipeline.executors.slurm.ids import stored_id
from pipeline.executors.slurm.sbatch import SlurmExecutor
from pipeline.executors.slurm.states import slurm_state


def run_array_task(job_script: str, index: int) -> int:
    """Runs on the node: the job script for task `index`, in a clean environment."""
    env = job_environment({k: v for k, v in os.environ.items() if k.startswith("SLURM")})
    env["SLURM_ARRAY_TASK_ID"] = str(index)
    env["SCORE_PLUGINS_TASK_OFFSET"] = "0"
    code = subprocess.run(["bash", job_script], env=env, stdin=subprocess.DEVNULL).returncode
    if code != 0:
        raise RuntimeError(f"job script exited with code {code}")
    return code


@contextmanager
def clean_process_environment() -> Iterator[None]:
    """For the duration of a submission, this process's environment is the job allow-list."""
    saved = dict(os.environ)
    keep = job_environment({})
    if "SLURM_CONF" in saved:
        keep["SLURM_CONF"] = saved["SLURM_CONF"]
    os.environ.clear()
    os.environ.update(keep)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def submitit_parameters(opts: SlurmOptions, throttle: int) -> dict:
    """Our Slurm request in submitit's parameter names."""
    params: dict = {"time": opts.time_minutes, "cpus_per_task": opts.cpus_per_task, "mem": opts.mem,
                    "job_name": opts.job_name}
    for name in ("partition", "account", "qos"):
        if getattr(opts, name):
            params[name] = getattr(opts, name)
    if throttle:
        params["array_parallelism"] = throttle
    return params


class SubmititExecutor(Executor):
    name = "submitit"
    poll_interval = (2.0, 60.0)

    def __init__(self, options: SlurmOptions, throttle: int = 0):
        self.options = options
        self.throttle = throttle
        self._jobs: dict[str, list] = {}
        self._attached: dict[str, str] = {}  # job id -> stored Slurm id, for jobs another process submitted
        self._slurm = SlurmExecutor()

    def submit(self, bundle) -> str:  # noqa: ANN001
        import submitit

        executor = submitit.SlurmExecutor(folder=str(Path(bundle.run_dir) / "submitit"), max_num_timeout=0)
        opts = dataclasses.replace(self.options, job_name=f"score-{bundle.run_id}")
        executor.update_parameters(**submitit_parameters(opts, self.throttle))
        with clean_process_environment():
            jobs = executor.map_array(run_array_task, [str(bundle.job_script)] * bundle.n_tasks,
                                      list(range(bundle.n_tasks)))
        job_id = jobs[0].job_id.split("_")[0]
        self._jobs[job_id] = jobs
        return job_id

    def attach(self, bundle, job_id: str) -> None:  # noqa: ANN001
        if job_id not in self._jobs:
            self._attached[job_id] = stored_id(job_id, bundle.n_tasks)

    def poll(self, job_id: str) -> dict[int, TaskState]:
        if job_id in self._attached:
            return self._slurm.poll(self._attached[job_id])
        states = {}
        for index, job in enumerate(self._jobs.get(job_id, [])):
            word = job.state or "PENDING"
            ours = slurm_state(word, default=State.PENDING if word == "UNKNOWN" else State.RUNNING)
            done = ours not in (State.PENDING, State.RUNNING, State.COMPLETED)
            states[index] = TaskState(index, ours, job.state if done else "")
        return states

    def cancel(self, job_id: str) -> None:
        if job_id in self._attached:
            self._slurm.cancel(self._attached[job_id])
            return
        for job in self._jobs.get(job_id, []):
            job.cancel(check=False)

    def stats(self) -> dict[str, int]:
        return self._slurm.stats() if self._attached else {}
