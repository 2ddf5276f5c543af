"""A pair's two environments: one for the model's process, one for the benchmark's.

The model's process runs in an environment of the domain's dependencies, the model plugin and what it uses; the
benchmark's in one of the domain's dependencies, the benchmark and its data and metric plugins. So nothing a model
requires is installed where the benchmark's process runs: no module of it is importable there, and no `.pth`,
`sitecustomize` or entry point of it runs at the benchmark's start-up (where the report pipe and the benchmark's
own cache folders are). A pair's lock and environment hashes name both sides, `<model's>+<benchmark's>`.

Scores made before this split ran both processes in ONE environment, the union of both sides' requirements, and
carry that environment's hashes alone (no `+`). `shared=True` is that form: planning keeps such a score when the
union would still solve to the same lock (the old scheme's own test), and `reproduce` re-renders its job as it ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Union

from envs.conda import CondaLock
from envs.lock import Lock

SEPARATOR = "+"
SIDES = ("model", "benchmark")

AnyLock = Union[Lock, CondaLock]


@dataclass(frozen=True)
class PairEnvs:
    """The model's and the benchmark's environments of a pair (the same lock twice when `shared`)."""

    model: AnyLock
    benchmark: AnyLock
    shared: bool = False  # the form before per-side environments: one environment for both processes

    @classmethod
    def one_for_both(cls, lock: AnyLock) -> "PairEnvs":
        return cls(lock, lock, shared=True)

    @cached_property  # read once per pair by the planner (100,000 pairs share a few of these)
    def lock_hash(self) -> str:
        return self.model.lock_hash if self.shared else f"{self.model.lock_hash}{SEPARATOR}{self.benchmark.lock_hash}"

    @cached_property
    def env_hash(self) -> str:
        return self.model.env_hash if self.shared else f"{self.model.env_hash}{SEPARATOR}{self.benchmark.env_hash}"

    def sides(self) -> tuple[tuple[str, AnyLock], tuple[str, AnyLock]]:
        return (("model", self.model), ("benchmark", self.benchmark))


def side_hashes(value: str) -> tuple[str, str]:
    """(model's, benchmark's) of a recorded lock or environment hash; a score made before the split names one
    environment, which both processes ran in."""
    model, sep, benchmark = value.partition(SEPARATOR)
    return (model, benchmark) if sep else (value, value)


def is_shared(value: str) -> bool:
    """Whether a recorded hash is of the form before per-side environments (one environment for both sides)."""
    return SEPARATOR not in value
