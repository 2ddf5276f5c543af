"""Slurm's words for a task's state, read into ours (`db.states.State`): sacct and squeue output, pure."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import datetime

from db.states import TERMINAL, State
from pipeline.executors.base import TaskState
from pipeline.executors.slurm.ids import ArrayPart
from pipeline.units import size_bytes

log = logging.getLogger(__name__)
PENDING, RUNNING = State.PENDING, State.RUNNING

# sacct's states -> ours. Anything unknown is treated as still running and logged.
STATE_MAP = {
    "PENDING": PENDING, "REQUEUED": PENDING, "REQUEUE_FED": PENDING, "REQUEUE_HOLD": PENDING,
    "RUNNING": RUNNING, "COMPLETING": RUNNING, "CONFIGURING": RUNNING, "RESIZING": RUNNING,
    "SUSPENDED": RUNNING, "STOPPED": RUNNING, "SIGNALING": RUNNING, "STAGE_OUT": RUNNING,
    "COMPLETED": State.COMPLETED, "FAILED": State.FAILED, "TIMEOUT": State.TIMEOUT, "DEADLINE": State.TIMEOUT,
    "OUT_OF_MEMORY": State.OUT_OF_MEMORY, "NODE_FAIL": State.NODE_FAIL, "BOOT_FAIL": State.NODE_FAIL,
    "CANCELLED": State.CANCELLED, "REVOKED": State.CANCELLED, "PREEMPTED": State.PREEMPTED,
}


def slurm_state(word: str, default: State = RUNNING) -> State:
    """One Slurm state word (`CANCELLED by 0` -> `CANCELLED`) in our names; unknown words are `default`."""
    first = (word or "PENDING").split()[0].upper()
    return STATE_MAP.get(first, default)


SACCT_FORMAT = "JobID,State,ExitCode,NodeList,Elapsed,Reason,MaxRSS,ReqMem,End"


def parse_sacct(text: str, parts: list[ArrayPart]) -> dict[int, TaskState]:
    """sacct --parsable2 lines (allocations and their steps) -> our task index -> state.

    Pending ranges (`12_[3-7%2]`) are expanded. Without cgroups, a task killed for its memory
    shows as FAILED by signal 9 (0:9, or 9:0 when the kill reached its worker first); its batch step's MaxRSS
    against ReqMem tells it was memory.
    """
    offsets = {p.job_id: p for p in parts}
    states: dict[int, TaskState] = {}
    req_mem: dict[int, int | None] = {}
    peak: dict[int, int] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 6:
            continue
        fields += [""] * (9 - len(fields))
        job, state, exit_code, node, elapsed, reason, max_rss, mem, end = fields[:9]
        allocation, _, step = job.partition(".")
        base, _, idx = allocation.partition("_")
        part = offsets.get(base)
        if part is None:
            continue
        if step:
            rss = size_bytes(max_rss, default_unit="")
            if rss is not None and idx.isdigit():
                peak[part.offset + int(idx)] = max(peak.get(part.offset + int(idx), 0), rss)
            continue
        word = state.split()[0] if state else "PENDING"
        ours = STATE_MAP.get(word)
        if ours is None:
            log.warning("unknown Slurm state %r for job %s; treating it as running", state, job)
            ours = RUNNING
        why = state if ours not in (PENDING, RUNNING, State.COMPLETED) else ""
        if reason and reason not in ("None",) and ours in ("FAILED", "NODE_FAIL", "PREEMPTED", "CANCELLED"):
            why = f"{state} ({reason})"
        if ours == "FAILED" and exit_code:
            why = f"{state}: exit code {exit_code}"
        for i in _indices(idx, part.count):
            states[part.offset + i] = TaskState(part.offset + i, ours, why, node if node != "None assigned" else "",
                                                exit_code=_signal(exit_code), elapsed_seconds=_seconds(elapsed),
                                                ended_at=_epoch(end))
            req_mem[part.offset + i] = size_bytes(mem)
    for i, state in states.items():
        limit, used = req_mem.get(i), peak.get(i)
        if state.state == State.FAILED and state.exit_code == 9 and limit and used and used >= 0.9 * limit:
            states[i] = dataclasses.replace(state, state=State.OUT_OF_MEMORY, exit_code=9, reason=(
                f"exceeded its memory limit ({used // 2**20} MB used of {limit // 2**20} MB) and was killed"))
        states[i] = dataclasses.replace(states[i], max_rss_bytes=used)
    return states


def _seconds(elapsed: str) -> float | None:
    """sacct's Elapsed ('[D-]HH:MM:SS') in seconds."""
    days, _, clock = elapsed.rpartition("-")
    parts = clock.split(":")
    if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3 or (days and not days.isdigit()):
        return None
    seconds = 0
    for p in parts:
        seconds = seconds * 60 + int(p)
    return float(seconds + int(days or 0) * 86400)


def _epoch(when: str) -> float | None:
    """sacct's End (local time, 'Unknown' while it runs) in epoch seconds."""
    try:
        return datetime.fromisoformat(when).timestamp()
    except ValueError:
        return None


def _signal(exit_code: str) -> int | None:
    """sacct's 'code:signal' -> the signal that ended the task, when one did: its own, or its worker's. The job
    script exits with its worker's status, 137 for a worker killed by SIGKILL (a memory kill that reached the
    worker before the script), and sacct prints an exit status above 128 less 128: '9:0' (ours never exit 9)."""
    code, _, sig = exit_code.partition(":")
    if sig.isdigit() and int(sig):
        return int(sig)
    return 9 if code in ("9", "137") else None


def _indices(idx: str, count: int) -> list[int]:
    if idx.isdigit():
        return [int(idx)]
    if idx.startswith("["):
        out: list[int] = []
        for piece in idx.strip("[]").split("%")[0].split(","):
            lo, _, hi = piece.partition("-")
            if lo.isdigit():
                out.extend(range(int(lo), int(hi or lo) + 1))
        return out
    if idx == "":  # the whole job, not an array task
        return list(range(count))
    return []


def parse_squeue(text: str, parts: list[ArrayPart]) -> dict[int, TaskState]:
    """`squeue --array --states=all --format=%i|%T|%N|%e` lines -> each task's state as the controller holds it
    (a task that ended lately is listed with how it ended, and when); a task it no longer lists ended long ago
    (accounting off: the outcome comes from its results)."""
    offsets = {p.job_id: p for p in parts}
    listed: dict[int, TaskState] = {}
    for line in text.splitlines():
        job, state, node, end = (line.split("|") + ["", "", ""])[:4]
        base, _, idx = job.partition("_")
        part = offsets.get(base)
        if part is not None and idx.isdigit():
            i = part.offset + int(idx)
            ours = slurm_state(state)
            why = state.strip() if ours not in (PENDING, RUNNING, State.COMPLETED) else ""
            listed[i] = TaskState(i, ours, why, node, ended_at=_epoch(end) if ours in TERMINAL else None)
    for part in parts:
        for i in range(part.offset, part.offset + part.count):
            listed.setdefault(i, TaskState(i, State.COMPLETED, "ended (no accounting: outcome from its results)"))
    return listed


ACCOUNTING_GRACE = 30.0  # seconds an ended task may wait for slurmdbd to record how it ended


def unrecorded_ends(states: dict[int, TaskState], from_accounting: bool) -> set[int]:
    """The tasks that ended but whose accounting record cannot say how yet: right after a task ends, slurmdbd
    may not list its job (the states came from squeue although accounting is on), or list it killed by signal
    9 before its batch step's MaxRSS is in (memory or not cannot be told)."""
    if not from_accounting:
        return {i for i, t in states.items() if t.done}
    return {i for i, t in states.items()
            if t.state == State.FAILED and t.exit_code == 9 and not t.max_rss_bytes}


class AccountingGrace:
    """Holds an ended task as running while its accounting record is not in, for at most `grace` seconds from
    when it ended (sacct's End; else from when this process first saw it so); after that what is known stands,
    so a record that never comes stalls nothing, not even a `reconcile` run again and again."""

    def __init__(self, grace: float = ACCOUNTING_GRACE, clock: Callable[[], float] = time.time):
        self.grace = grace
        self.clock = clock
        self._since: dict[tuple[str, int], float] = {}

    def hold(self, job_id: str, states: dict[int, TaskState], waiting: set[int]) -> dict[int, TaskState]:
        now = self.clock()
        held = dict(states)
        for i in waiting:
            since = self._since.setdefault((job_id, i), now)
            if now - (states[i].ended_at or since) < self.grace:
                held[i] = TaskState(i, RUNNING, "ended; its accounting record is not in yet", states[i].node)
        return held
