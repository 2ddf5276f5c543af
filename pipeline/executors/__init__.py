"""Executors run a bundle's array tasks: locally as subprocesses, or on Slurm (one interface, one registry).

`get_executor` is the only place an executor is chosen by name: run uses it to submit, reconcile and
cancel use it (with `attach`) to reach a run's jobs from their stored ids.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from pipeline.errors import BadInput
from pipeline.executors.base import Executor, TaskState, job_environment
from pipeline.executors.local import LocalExecutor

if TYPE_CHECKING:
    from pipeline.config import Settings


def _local(settings: Settings) -> Executor:
    from pipeline.executors.gpu_pool import GpuPool

    return LocalExecutor(workers=settings.local_workers, gpus=GpuPool.for_settings(settings))


def _slurm(settings: Settings) -> Executor:
    from pipeline.executors.slurm import SlurmExecutor

    return SlurmExecutor()


def _submitit(settings: Settings) -> Executor:
    from pipeline.executors.slurm.submitit_executor import SubmititExecutor

    return SubmititExecutor(settings.slurm_options("score", tier=settings.tier_list[0]), settings.array_throttle)


def _pyslurm(settings: Settings) -> Executor:
    from pipeline.executors.slurm.pyslurm_executor import PyslurmExecutor

    return PyslurmExecutor(settings.slurm_options("score", tier=settings.tier_list[0]), settings.array_throttle)


REGISTRY: dict[str, Callable[[Settings], Executor]] = {
    "local": _local, "slurm": _slurm, "submitit": _submitit, "pyslurm": _pyslurm}
EXECUTORS = tuple(REGISTRY)
SLURM_EXECUTORS = ("slurm", "submitit", "pyslurm")


def get_executor(name: str, settings: Settings, *, check_limits: bool = True) -> Executor:
    """The executor called `name`. For a new submission to Slurm (`check_limits`), the request is checked
    against the partition first: a request that can never run is refused before any trace is left."""
    factory = REGISTRY.get(name)
    if factory is None:
        raise BadInput(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    tiers = settings.tier_list
    if name in ("submitit", "pyslurm") and len(tiers) > 1:
        raise BadInput(f"the {name} executor submits one request per run; with {len(tiers)} tiers use "
                       "--executor slurm (one array per tier)")
    if check_limits and name in SLURM_EXECUTORS:
        from pipeline.executors.slurm.limits import check_request

        for tier in tiers:  # every tier must be able to run: an escalation may need any of them
            check_request(tier.partition or settings.partition, tier.time_minutes, tier.mem,
                          f" (tier {tier.name})" if settings.tiers else "")
    return factory(settings)


__all__ = ["EXECUTORS", "REGISTRY", "Executor", "LocalExecutor", "TaskState", "get_executor", "job_environment"]
