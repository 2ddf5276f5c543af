"""The embedded default: run the same rendered job script Slurm would run, as local subprocesses.

Each array task is `bash job.sh` with the Slurm array variables set and a clean
environment (no credential reaches the job), `local_workers` at a time.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from db.states import State
from pipeline.executors.base import Executor, TaskState, job_environment
from pipeline.executors.gpu_pool import GpuPool

_counter = itertools.count(1)
log = logging.getLogger(__name__)


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, workers: int = 1, gpus: GpuPool | None = None):
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="local-task")
        self._jobs: dict[str, dict[int, TaskState]] = {}
        self._procs: dict[str, dict[int, subprocess.Popen]] = {}
        self._futures: dict[str, list[Future]] = {}
        self._cancelled: set[str] = set()
        self._attached: dict[str, object] = {}  # job id -> bundle, for jobs another process started
        self._lock = threading.Lock()
        self._gpus = gpus or GpuPool([])  # a GPU tier's task waits here for GPUs of its own

    can_resubmit = True  # an escalation runs new tasks of the bundle (never a NODE_FAIL here)

    def submit(self, bundle) -> str:  # noqa: ANN001
        return self.resubmit(bundle, list(range(bundle.n_tasks)))

    def resubmit(self, bundle, indices: list[int]) -> str:  # noqa: ANN001
        job_id = f"local-{os.getpid()}-{next(_counter)}"
        states = {i: TaskState(i, State.PENDING) for i in indices}
        with self._lock:
            self._jobs[job_id] = states
            self._procs[job_id] = {}
        self._futures[job_id] = [self._pool.submit(self._run_task, job_id, bundle, i) for i in states]
        return job_id

    def _run_task(self, job_id: str, bundle, index: int) -> None:  # noqa: ANN001
        wanted = int(bundle.manifest.tasks[index].get("gpus") or 0)
        lease = None
        if wanted:  # pending until its GPUs are free: never two tasks on one GPU
            try:
                lease = self._gpus.acquire(wanted, stop=lambda: job_id in self._cancelled)
            except (ValueError, OSError) as exc:  # the worker fails its pairs as the node's, with the reason
                log.warning("task %d gets no GPU: %s", index, exc)
        try:
            self._run_task_on(job_id, bundle, index, lease.environment() if lease else {})
        finally:
            if lease is not None:
                lease.release()

    def _run_task_on(self, job_id: str, bundle, index: int, gpu_env: dict[str, str]) -> None:  # noqa: ANN001
        with self._lock:
            if job_id in self._cancelled:
                self._jobs[job_id][index] = TaskState(index, State.CANCELLED, "cancelled before it started")
                return
            self._jobs[job_id][index] = TaskState(index, State.RUNNING, node="localhost")
        env = job_environment({
            "SLURM_ARRAY_TASK_ID": str(index), "SLURM_ARRAY_JOB_ID": job_id, "SLURM_JOB_ID": f"{job_id}_{index}",
            "SLURM_ARRAY_TASK_COUNT": str(bundle.n_tasks), "SLURMD_NODENAME": "localhost", **gpu_env,
        })
        script, relative = bundle.script_for(index)
        env["SLURM_ARRAY_TASK_ID"] = str(relative)  # the task's place in its tier's array
        minutes = bundle.manifest.tasks[index].get("time_minutes")
        log = Path(bundle.log_dir) / f"launcher-{index}.out"  # the script writes task-<index>.out itself
        with open(log, "ab") as out:
            proc = subprocess.Popen(["bash", str(script)], cwd=bundle.run_dir, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            with self._lock:
                self._procs[job_id][index] = proc
                cancelled = job_id in self._cancelled
            if cancelled:  # cancel came between this task's start and its registration: it saw no process
                _terminate(proc.pid)
                _kill_later(proc)
            pid_file = Path(bundle.log_dir) / f"task-{index}.pid"
            pid_file.write_text(str(proc.pid))  # lets `reconcile` see the task after this process is gone
            timed_out = False
            try:  # the tier's time limit, as Slurm would enforce it
                code = proc.wait(timeout=minutes * 60 if minutes else None)
            except subprocess.TimeoutExpired:
                timed_out = True
                _terminate(proc.pid, signal.SIGKILL)
                code = proc.wait()
            pid_file.unlink(missing_ok=True)
        with self._lock:
            if timed_out:
                state = TaskState(index, State.TIMEOUT, f"TIMEOUT: the task exceeded its tier's time limit of "
                                  f"{minutes} minutes", "localhost", code)
            elif job_id in self._cancelled or (code != 0 and cancel_marker(bundle.log_dir, index).exists()):
                state = TaskState(index, State.CANCELLED, "cancelled", "localhost", code)
            elif code == 0:
                state = TaskState(index, State.COMPLETED, "", "localhost", code)
            else:
                state = TaskState(index, State.FAILED, f"job script exited with code {code}", "localhost", code)
            self._jobs[job_id][index] = state

    def attach(self, bundle, job_id: str) -> None:  # noqa: ANN001
        """A local job's tasks outlive their coordinator only as processes: their pid files tell."""
        if job_id not in self._jobs:
            self._attached[job_id] = bundle

    def poll(self, job_id: str) -> dict[int, TaskState]:
        bundle = self._attached.get(job_id)
        if bundle is not None:
            return local_task_states(bundle.log_dir, bundle.n_tasks, bundle.job_script)
        with self._lock:
            return {i: TaskState(s.index, s.state, s.reason, s.node, s.exit_code)
                    for i, s in self._jobs.get(job_id, {}).items()}

    def cancel(self, job_id: str, wait: float = 30.0) -> None:
        bundle = self._attached.get(job_id)
        if bundle is not None:  # started by another coordinator on this machine: stop its tasks for real
            if cancel_local_tasks(bundle.log_dir, bundle.n_tasks, bundle.job_script):
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and not all(s.done for s in self.poll(job_id).values()):
                    time.sleep(0.2)
            return
        with self._lock:
            self._cancelled.add(job_id)
            procs = list(self._procs.get(job_id, {}).values())
        for proc in procs:
            if proc.poll() is None:
                _terminate(proc.pid)
                _kill_later(proc)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


KILL_AFTER = 10.0  # seconds a cancelled task has to end on SIGTERM before its process group is killed


def _kill_later(proc: subprocess.Popen, grace: float = KILL_AFTER) -> None:
    """SIGKILL to a cancelled task's process group if it is still there after `grace` seconds: a task that ignores
    SIGTERM never keeps its coordinator waiting (close() joins the task threads)."""
    def kill() -> None:
        if proc.poll() is None:
            _terminate(proc.pid, signal.SIGKILL)

    timer = threading.Timer(grace, kill)
    timer.daemon = True
    timer.start()


def _terminate(pid: int, sig: int = signal.SIGTERM) -> None:
    """SIGTERM (or `sig`) to a task's whole process group (the job script leads its own session)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def local_task_states(log_dir: Path, n_tasks: int, job_script: Path | None = None) -> dict[int, TaskState]:
    """Tasks of a local run started by another (perhaps dead) process: alive while their pid lives (and is still
    this run's job script, not a reused pid); else ended, or never started when it left no output at all.
    Stale pid files are removed."""
    states = {}
    for index in range(n_tasks):
        pid_file = Path(log_dir) / f"task-{index}.pid"
        pid = _live_task_pid(pid_file, job_script)
        if pid is not None:
            states[index] = TaskState(index, State.RUNNING, node="localhost")
            continue
        pid_file.unlink(missing_ok=True)
        if (Path(log_dir) / f"task-{index}.out").exists():
            states[index] = TaskState(index, State.COMPLETED, "ended (its launcher is gone: outcome from its results)")
        else:
            states[index] = TaskState(index, State.LOST, "never started: its coordinator stopped before launching it")
    return states


def _live_task_pid(pid_file: Path, job_script: Path | None) -> int | None:
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    if job_script is not None:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        folder = str(Path(job_script).parent) + "/job"  # job.sh, or another tier's job-<tier>.sh beside it
        if not any(a.startswith(folder.encode()) and a.endswith(b".sh") for a in cmdline):
            return None  # the pid was reused by something else
    return pid


def cancel_marker(log_dir: str | Path, index: int) -> Path:
    """Left by `cancel_local_tasks` before it stops a task, so the coordinator watching that task records it
    CANCELLED, not FAILED by a signal."""
    return Path(log_dir) / f"task-{index}.cancelled"


def cancel_local_tasks(log_dir: Path, n_tasks: int, job_script: Path) -> int:
    """Stop the tasks of a local run started by another process (`score-plugins cancel`); returns how many."""
    stopped = 0
    for index in range(n_tasks):
        pid = _live_task_pid(Path(log_dir) / f"task-{index}.pid", job_script)
        if pid is not None:
            try:
                cancel_marker(log_dir, index).touch()
            except OSError:
                pass
            _terminate(pid)
            stopped += 1
    return stopped
