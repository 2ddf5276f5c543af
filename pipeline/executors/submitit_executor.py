"""Slurm through submitit: each array task runs the same rendered job script.

submitit pickles a call to `run_array_task` and submits it as a job array; the task
runs `bash job.sh` with the allow-listed environment, so the plugin side is the same
as with the other executors. sbatch is called with that allow-list too (submitit
passes on its process environment, which on the coordinator holds credentials).
"""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipeline.executors.base import PENDING, RUNNING, Executor, TaskState
from pipeline.executors.local import job_environment
from pipeline.executors.slurm import STATE_MAP


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


class SubmititExecutor(Executor):
    name = "submitit"
    poll_interval = (2.0, 60.0)

    def __init__(self, settings):  # noqa: ANN001 - pipeline.config.Settings
        self.settings = settings
        self._jobs: dict[str, list] = {}

    def submit(self, bundle) -> str:  # noqa: ANN001
        import submitit

        executor = submitit.SlurmExecutor(folder=str(Path(bundle.run_dir) / "submitit"), max_num_timeout=0)
        params = {"time": self.settings.time_minutes, "cpus_per_task": self.settings.cpus_per_task,
                  "mem": self.settings.mem, "job_name": f"score-{bundle.run_id}"}
        if self.settings.partition:
            params["partition"] = self.settings.partition
        if self.settings.array_throttle:
            params["array_parallelism"] = self.settings.array_throttle
        executor.update_parameters(**params)
        with clean_process_environment():
            jobs = executor.map_array(run_array_task, [str(bundle.job_script)] * bundle.n_tasks,
                                      list(range(bundle.n_tasks)))
        job_id = jobs[0].job_id.split("_")[0]
        self._jobs[job_id] = jobs
        return job_id

    def poll(self, job_id: str) -> dict[int, TaskState]:
        states = {}
        for index, job in enumerate(self._jobs.get(job_id, [])):
            word = (job.state or "PENDING").split()[0]
            ours = STATE_MAP.get(word, RUNNING if word != "UNKNOWN" else PENDING)
            states[index] = TaskState(index, ours, job.state if ours not in (PENDING, RUNNING, "COMPLETED") else "")
        return states

    def cancel(self, job_id: str) -> None:
        for job in self._jobs.get(job_id, []):
            job.cancel(check=False)
