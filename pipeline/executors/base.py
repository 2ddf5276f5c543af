"""The executor interface (after submitit's): submit a bundle, poll its tasks, cancel them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

# Our own state names, shared by every executor and stored on job rows.
PENDING, RUNNING = "PENDING", "RUNNING"
TERMINAL = ("COMPLETED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "CANCELLED", "PREEMPTED", "LOST")


@dataclass
class TaskState:
    """One array task as the executor sees it."""

    index: int
    state: str
    reason: str = ""
    node: str = ""
    exit_code: int | None = None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL


class Executor(ABC):
    name: str = ""
    poll_interval: tuple[float, float] = (0.5, 10.0)  # first and longest wait between polls, seconds

    @abstractmethod
    def submit(self, bundle) -> str:  # noqa: ANN001 - pipeline.bundle.Bundle
        """Start every array task of the bundle; return the job id."""

    @abstractmethod
    def poll(self, job_id: str) -> dict[int, TaskState]:
        """The state of each array task of a submitted job, in one call."""

    @abstractmethod
    def cancel(self, job_id: str) -> None:
        """Stop every task of the job that is still pending or running."""

    def close(self) -> None:
        """Release resources (threads, connections)."""
