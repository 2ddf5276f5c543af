"""Executors run a bundle's array tasks: locally as subprocesses, or on Slurm (one interface)."""

from __future__ import annotations

from pipeline.errors import BadInput
from pipeline.executors.base import Executor, TaskState
from pipeline.executors.local import LocalExecutor

EXECUTORS = ("local", "slurm", "submitit", "pyslurm")


def get_executor(name: str, settings) -> Executor:  # noqa: ANN001 - Settings, kept loose to avoid a cycle
    if name == "local":
        return LocalExecutor(workers=settings.local_workers)
    if name in ("slurm", "submitit", "pyslurm"):
        from pipeline.executors.limits import check_request

        check_request(settings.partition, settings.time_minutes, settings.mem)  # before anything is submitted
    if name == "slurm":
        from pipeline.executors.slurm import SlurmExecutor

        return SlurmExecutor()
    if name == "submitit":
        from pipeline.executors.submitit_executor import SubmititExecutor

        return SubmititExecutor(settings)
    if name == "pyslurm":
        from pipeline.executors.pyslurm_executor import PyslurmExecutor

        return PyslurmExecutor()
    raise BadInput(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")


__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "TaskState", "get_executor"]
