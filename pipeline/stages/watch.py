"""Watch a submitted run until every pair has a result or every task has ended (after submitit's InfoWatcher).

The spool, a local folder, is read every `spool_interval`; the executor (one sacct call on Slurm) is asked
rarely, with back-off from its `poll_interval`. Results are ingested as they arrive, so a person watching
sees progress and a database outage costs only a delay. Tasks that ended NODE_FAIL or PREEMPTED without
results are resubmitted, a bounded number of times.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy.exc import SQLAlchemyError

from db.states import RETRYABLE
from pipeline.stages import ledger
from pipeline.stages.bundle import Bundle
from pipeline.database import Database
from pipeline.errors import InfrastructureError
from pipeline.executors.base import Executor, TaskState
from pipeline.stages.ingest import ingest_spool
from pipeline.stages.spoolindex import SpoolIndex
from pipeline.stopping import check as check_stop, unbroken

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """What a person watching a run wants to know: pairs done, failed and left, time, the slowest pair. It counts
    pairs, not attempts: a pair an escalation runs again is not done until its new attempt ends."""

    total: int
    started: float = field(default_factory=time.monotonic)
    tasks: dict[str, int] = field(default_factory=dict)  # array tasks per state, as the executor sees them
    slowest: tuple[str, str, float] | None = None  # model, benchmark, seconds (of the pairs finished)
    ended: dict[str, bool] = field(default_factory=dict)  # pair key -> whether its latest attempt scored

    @property
    def done(self) -> int:
        return len(self.ended)

    @property
    def failed(self) -> int:
        return sum(1 for ok in self.ended.values() if not ok)

    @property
    def left(self) -> int:
        return max(self.total - self.done, 0)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def forget(self, key: str) -> None:
        """The pair runs again (an escalation): not done until its next attempt ends."""
        self.ended.pop(key, None)

    def add(self, result: dict) -> None:
        self.ended[str(result.get("pair_key"))] = result.get("status") == "ok"
        seconds = result.get("elapsed_seconds")
        if isinstance(seconds, (int, float)) and (self.slowest is None or seconds > self.slowest[2]):
            self.slowest = (str(result.get("model")), str(result.get("benchmark")), float(seconds))

    def line(self) -> str:
        text = (f"{self.done}/{self.total} pairs done ({self.failed} failed), {self.left} left, "
                f"{int(self.elapsed) // 60:d}:{int(self.elapsed) % 60:02d} elapsed")
        if self.slowest:
            text += f"; slowest: {self.slowest[0]} on {self.slowest[1]} ({self.slowest[2]:.1f} s)"
        return text


COORDINATOR_FILE = "coordinator"  # in the run folder: who watches the run; its age says the watcher still lives
HEARTBEAT_SECONDS = 10.0


class Heartbeat:
    """The watching coordinator's sign of life in its run folder: host, pid and that process's start time,
    written once, its modification time renewed at most every HEARTBEAT_SECONDS while it watches. `status` and
    `runs` tell a run whose coordinator is gone from a live one by it (pipeline.admin.runs.coordinator_state)."""

    def __init__(self, run_dir) -> None:  # noqa: ANN001 - a Path
        import json
        import socket

        self.path = run_dir / COORDINATOR_FILE
        self.next = 0.0
        try:
            self.path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                             "start": process_start(os.getpid())}))
        except OSError as exc:  # a sign of life is worth a warning, not the run
            log.warning("cannot write %s (%s)", self.path, exc.strerror or exc)

    def beat(self) -> None:
        if time.monotonic() >= self.next:
            self.next = time.monotonic() + HEARTBEAT_SECONDS
            try:
                os.utime(self.path)
            except OSError:
                pass


def process_start(pid: int) -> int | None:
    """A process's start time (clock ticks since boot): with its pid, it names the process (pids are reused)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rfind(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


class Watcher:
    """Watches one run's bundle on one executor; counts its poll cycles."""

    def __init__(self, db: Database, executor: Executor, bundle: Bundle,
                 on_progress: Callable[[Progress], None] | None = None, spool_interval: float = 0.5):
        self.db, self.executor, self.bundle = db, executor, bundle
        self.on_progress = on_progress
        self.spool_interval = spool_interval
        self.progress = Progress(total=len(bundle.pairs()))
        self.poll_cycles = 0
        self._ingested: set[str] = set()
        self._running: set[tuple[str, int]] = set()  # (job id, task) already recorded RUNNING
        self.job_ids: list[str] = []  # every job this watcher waited for (retries and escalations too)
        # called with the keys and task states of tasks about to be resubmitted (their attempts are recorded)
        self.on_retry: Callable[[list[str], dict[int, TaskState]], None] | None = None
        # why the run was cancelled from outside (`score-plugins cancel`), if it was: nothing more is started
        self.stop_reason: Callable[[], str | None] = lambda: None
        self._index = SpoolIndex(bundle.spool_dir)
        self._announced: set[str] = set()  # named in the spool's index, not yet ingested
        self._missing: set[str] = set()  # what the current `wait` still expects
        self._by_task: tuple[int, int, dict[int, list[str]]] | None = None  # (tasks list id, length, task -> keys)
        self.heartbeat = Heartbeat(bundle.run_dir)

    def forget(self, key: str) -> None:
        """A pair runs again (an escalation): its next result is new, to be ingested (the worker announces it
        in the spool's index again)."""
        self._ingested.discard(f"{key}.json")
        self.progress.forget(key)

    def keys_by_task(self) -> dict[int, list[str]]:
        """Each array task's pair keys, built once per version of the manifest's task list (an escalation appends
        tasks), not at every poll: a run of 10,000 pairs would otherwise walk all of them each time a task
        starts."""
        tasks = self.bundle.manifest.tasks
        if self._by_task is None or self._by_task[:2] != (id(tasks), len(tasks)):
            by_task: dict[int, list[str]] = {}
            for key, index in self.bundle.task_of().items():
                by_task.setdefault(index, []).append(key)
            self._by_task = (id(tasks), len(tasks), by_task)
        return self._by_task[2]

    def stats(self) -> dict[str, int]:
        return {"poll_cycles": self.poll_cycles, **self.executor.stats()}

    def poll(self, job_id: str) -> dict[int, TaskState]:
        self.poll_cycles += 1
        states = self.executor.poll(job_id)
        self._record_running(job_id, states)
        return states

    def _record_running(self, job_id: str, states: dict[int, TaskState]) -> None:
        """Tasks the executor newly reports running: their pairs become RUNNING in the database."""
        started = [i for i, s in states.items() if s.state == "RUNNING" and (job_id, i) not in self._running]
        if not started:
            return
        by_task = self.keys_by_task()
        try:
            for index in started:
                ledger.running(self.db, self.bundle.run_id, by_task.get(index, []), states[index].node)
                self._running.add((job_id, index))
        except SQLAlchemyError as exc:  # the database is down: the rows catch up at the next poll
            log.warning("cannot record running tasks now (%s)", type(exc).__name__)

    def wait(self, job_id: str, expect: list[str] | None = None) -> dict[int, TaskState]:
        """Until every expected pair has a result in the spool, or every task of `job_id` has ended."""
        if job_id not in self.job_ids:
            self.job_ids.append(job_id)
        wanted = {f"{k}.json" for k in (expect or [p["key"] for p in self.bundle.pairs()])}
        self._missing = wanted - self._ingested  # kept up to date as results arrive: no per-cycle set compare
        delay, max_delay = self.executor.poll_interval
        states = self.poll(job_id)
        next_poll = time.monotonic() + delay
        while True:
            self.heartbeat.beat()
            self._ingest_new()
            if not self._missing:
                return states
            if time.monotonic() >= next_poll:
                states = self.poll(job_id)
                counts: dict[str, int] = {}
                for s in states.values():
                    counts[s.state] = counts.get(s.state, 0) + 1
                self.progress.tasks = counts
                if self.on_progress:
                    self.on_progress(self.progress)
                if states and all(s.done for s in states.values()):
                    ingest_when_reachable(self.db, self.bundle, self._ingested)
                    return states
                delay = min(delay * 1.5, max_delay)
                next_poll = time.monotonic() + delay
            check_stop()  # a stop signal a finalizer swallowed is raised here, at the latest one turn later
            time.sleep(self.spool_interval)

    def _ingest_new(self) -> None:
        """Ingest the results the spool's index names since the last cycle (never a listing of the folder)."""
        self._announced.update(self._index.new_names())
        self._announced = {n for n in self._announced if n not in self._ingested}  # O(new), not O(done)
        if not self._announced:
            return
        try:
            before = self.progress.done
            _, names = ingest_spool(self.db, self.bundle.spool_dir, self._ingested, on_result=self.progress.add,
                                    names=sorted(self._announced))
            self._ingested |= names
            self._announced.clear()  # ingested, or quarantined by read_spool: either way, done with
            self._missing -= names
            if self.on_progress and self.progress.done != before:
                self.on_progress(self.progress)
        except SQLAlchemyError as exc:  # the database is down: results wait in the spool, scoring goes on
            log.warning("cannot ingest results now (%s); they wait in %s", type(exc).__name__, self.bundle.spool_dir)

    def retry_infrastructure_failures(self, states: dict[int, TaskState], max_retries: int) -> dict[int, TaskState]:
        """Resubmit tasks that ended NODE_FAIL or PREEMPTED without results, at most `max_retries` times;
        each retry is recorded (job id, attempt) in the ledger. A plugin's own failure is never retried."""
        if not self.executor.can_resubmit:
            return states
        by_task = self.keys_by_task()
        for attempt in range(2, max_retries + 2):
            done = {p.stem for p in self.bundle.spool_dir.glob("*.json")}
            retry = [i for i, s in states.items() if s.state in RETRYABLE and not set(by_task.get(i, [])) <= done]
            if not retry or self.stop_requested():
                return states
            log.warning("resubmitting %d task(s) after %s (attempt %d)", len(retry),
                        ", ".join(sorted({states[i].state for i in retry})), attempt)
            keys = [k for i in retry for k in by_task.get(i, [])]
            if self.on_retry:
                self.on_retry(keys, states)
            with unbroken():  # a stop signal now is raised once the new job is known: its cancel reaches it
                job_id = self.executor.resubmit(self.bundle, retry)
                self.job_ids.append(job_id)
                ledger.retried(self.db, self.bundle.run_id, keys, job_id, attempt)
            self.cancel_if_stopped(job_id)
            states = {**states, **self.wait(job_id, expect=keys)}
        return states

    def stop_requested(self) -> bool:
        return self.stop_reason() is not None

    def cancel_if_stopped(self, job_id: str) -> None:
        """A job submitted and recorded just as the run was cancelled from outside (the cancel read the run's
        job ids before this one was recorded): cancelled here, so nothing it runs outlives the cancel."""
        if self.stop_requested():
            self.executor.cancel(job_id)

    def after_cancel(self, job_id: str, wait: float = 30.0) -> dict[int, TaskState]:
        """The tasks' states once a cancel took effect (or after `wait` seconds), and what they left."""
        deadline = time.monotonic() + wait
        while True:
            states = self.poll(job_id)
            if (states and all(s.done for s in states.values())) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        ingest_when_reachable(self.db, self.bundle, set(), wait=10.0)
        return states


def ingest_when_reachable(db: Database, bundle: Bundle, ingested: set[str], wait: float = 300.0) -> None:
    """The last ingest of a run: if the database is down, wait for it (with back-off) before giving up;
    given up, the results stay in the spool for `score-plugins ingest` / `reconcile`."""
    deadline = time.monotonic() + wait
    delay = 1.0
    while True:
        try:
            ingest_spool(db, bundle.spool_dir, ingested)
            return
        except SQLAlchemyError:
            if time.monotonic() > deadline:
                raise InfrastructureError(f"the database stayed unreachable; results wait in {bundle.spool_dir} "
                                          "(score-plugins reconcile loads them)") from None
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
