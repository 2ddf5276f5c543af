"""The names a run and a job can be in: one enum each, stored as text on their rows.

`StrEnum` members are strings, so rows, JSON and emails keep the plain names
(`"COMPLETED"`), and comparisons with a stored value need no conversion.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """A job row's (one model x benchmark pair's) state; executors report their tasks in the same names."""

    RENDERED = "RENDERED"  # in a bundle an admin submits by hand: recorded, not claimed
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    CANCELLED = "CANCELLED"
    LOST = "LOST"  # its task ended (or vanished) without a result
    HELD = "HELD"  # a plugin it uses was changed by someone not among its owners: waits for an admin's approval
    # its environment could not be locked or built for a reason that is not the plugins' (an unreachable index,
    # TLS, DNS, a timeout, a full disk, a killed solver: pipeline/job/outage.py); retried by the next build
    INFRA_FAIL = "INFRA_FAIL"

    @property
    def done(self) -> bool:
        return self in TERMINAL


OPEN = (State.PENDING, State.RUNNING)  # claimed by a run and not over: the pair is in flight
TERMINAL = frozenset({State.COMPLETED, State.FAILED, State.TIMEOUT, State.OUT_OF_MEMORY, State.NODE_FAIL,
                      State.PREEMPTED, State.CANCELLED, State.LOST, State.INFRA_FAIL})
RETRYABLE = (State.NODE_FAIL, State.PREEMPTED)  # the infrastructure's fault: resubmitted, a plugin's never
INFRASTRUCTURE = (State.NODE_FAIL, State.PREEMPTED, State.LOST, State.INFRA_FAIL)  # the admin hears of these


class RunStatus(StrEnum):
    """A run row's status."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    COMPLETED_WITH_FAILURES = "COMPLETED_WITH_FAILURES"
    CANCELLED = "CANCELLED"
    RECONCILED = "RECONCILED"  # closed by `reconcile` after its coordinator was gone
