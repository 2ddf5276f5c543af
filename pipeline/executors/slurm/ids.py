"""Slurm job ids as we store them: `<array job>@<first task>+<count>`, comma-separated when a run's tasks
were cut into several array jobs (MaxArraySize) or resubmitted one by one."""

from __future__ import annotations

from dataclasses import dataclass


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
    """A stored job id -> its array jobs (a bare id is one job of unknown size: see `stored_id`)."""
    return [ArrayPart.parse(p) for p in job_id.split(",") if p]


def array_chunks(n_tasks: int, max_array_size: int) -> list[tuple[int, int]]:
    """(offset, count) pieces of at most MaxArraySize tasks (indices 0..MaxArraySize-1)."""
    size = max(1, max_array_size)
    return [(offset, min(size, n_tasks - offset)) for offset in range(0, n_tasks, size)]


def stored_id(job_id: str, n_tasks: int) -> str:
    """A bare array job id (as submitit returns it) in our stored form, covering `n_tasks` tasks."""
    return job_id if "@" in job_id else str(ArrayPart(job_id, 0, n_tasks))


def task_job_id(stored: str, index: int) -> str:
    """The job and task that ran our task `index`, named as the executor names it: `<array job id>_<task id>` on
    Slurm (the task's number within that array job, as sacct and squeue print it: `sacct -j 4567_1`), and
    `<job id>_<index>` for an executor whose job ids hold no parts (the local executor's `local-<pid>-<n>`).
    A stored id of several array jobs (MaxArraySize, a resubmission) names the one that holds `index`."""
    if "@" not in stored:
        return f"{stored}_{index}"
    for part in parse_parts(stored):
        if part.offset <= index < part.offset + part.count:
            return f"{part.job_id}_{index - part.offset}"
    return f"{stored.split('@', 1)[0]}_{index}"
