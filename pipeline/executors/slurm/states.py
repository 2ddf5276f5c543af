"""Slurm's words for a task's state, read into ours (`db.states.State`): sacct and squeue output, pure."""

from __future__ import annotations

import dataclasses
import logging

from db.states import State
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


SACCT_FORMAT = "JobID,State,ExitCode,NodeList,Elapsed,Reason,MaxRSS,ReqMem"


def parse_sacct(text: str, parts: list[ArrayPart]) -> dict[int, TaskState]:
    """sacct --parsable2 lines (allocations and their steps) -> our task index -> state.

    Pending ranges (`12_[3-7%2]`) are expanded. Without cgroups, a task killed for its memory
    shows as FAILED by signal 9; its batch step's MaxRSS against ReqMem tells it was memory.
    """
    offsets = {p.job_id: p for p in parts}
    states: dict[int, TaskState] = {}
    req_mem: dict[int, int | None] = {}
    peak: dict[int, int] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 6:
            continue
        fields += [""] * (8 - len(fields))
        job, state, exit_code, node, elapsed, reason, max_rss, mem = fields[:8]
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
                                                exit_code=_signal(exit_code), elapsed_seconds=_seconds(elapsed))
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


def _signal(exit_code: str) -> int | None:
    """sacct's 'code:signal' -> the signal, when there is one."""
    _, _, sig = exit_code.partition(":")
    return int(sig) if sig.isdigit() and int(sig) else None


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
    """`squeue --array --format=%i|%T|%N` lines -> what is listed (pending or running); the tasks it does not
    list have ended (accounting off: the outcome comes from their results)."""
    offsets = {p.job_id: p for p in parts}
    listed: dict[int, TaskState] = {}
    for line in text.splitlines():
        job, _, rest = line.partition("|")
        state, _, node = rest.partition("|")
        base, _, idx = job.partition("_")
        part = offsets.get(base)
        if part is not None and idx.isdigit():
            i = part.offset + int(idx)
            listed[i] = TaskState(i, slurm_state(state), "", node)
    for part in parts:
        for i in range(part.offset, part.offset + part.count):
            listed.setdefault(i, TaskState(i, State.COMPLETED, "ended (no accounting: outcome from its results)"))
    return listed
