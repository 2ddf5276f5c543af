"""The orchestrator: detect, plan, render, submit, watch, ingest, notify.

Every step leaves its trace before the next starts (run and job rows, bundle,
spool), so a run interrupted anywhere can be inspected, ingested and re-run.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from sqlalchemy import delete, select, update
from sqlalchemy.exc import SQLAlchemyError

from db.ingest import ensure_rows
from db.models import BenchmarkType, Job, Model, Run, Submission, User
from db.upsert import insert_for, insert_many
from db.queries import in_flight_keys, run_jobs, scored_keys
from db.session import session_scope
from pipeline.bundle import Bundle, new_run_id, render_bundle
from pipeline.config import Settings
from pipeline.database import Database
from pipeline.detect import Change, detect, detect_all
from pipeline.errors import BadInput, InfrastructureError
from pipeline.executors import get_executor
from pipeline.executors.base import TaskState
from pipeline.ingest import ingest_spool
from pipeline.notifications import deliver, queue_run_messages
from pipeline.plan import Plan, make_plan
from pipeline.plugins import Catalog
from pipeline.worker import tail

log = logging.getLogger(__name__)


@dataclass
class Request:
    """What the caller asked for."""

    repo: Path
    base: str | None = None
    head: str = "HEAD"
    all: bool = False
    domain_root: str | None = None
    models: list[str] | None = None
    benchmarks: list[str] | None = None
    force: bool = False
    executor: str = "local"
    jenkins_build: str | None = None
    build_url: str | None = None
    extra_recipients: list[str] = field(default_factory=list)
    only_pairs: set[tuple[str, str]] | None = None  # rerun: exactly these (model, benchmark) pairs


@dataclass
class RunResult:
    change: Change
    plan: Plan
    run_id: str | None = None
    run_dir: str | None = None
    states: dict[str, int] = field(default_factory=dict)
    pairs: list[dict] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    delivery: dict | None = None  # what SMTP did with the outbox, when configured
    executor_stats: dict = field(default_factory=dict)  # e.g. Slurm poll cycles and sacct calls
    interrupted: bool = False  # stopped by Ctrl-C: what was started was cancelled and recorded

    @property
    def failed(self) -> int:
        return sum(n for s, n in self.states.items() if s != "COMPLETED")

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def to_json(self) -> dict:
        return {
            "run_id": self.run_id, "run_dir": self.run_dir, "commit": self.plan.commit,
            "planned": len(self.plan.to_run), "already_scored": len(self.plan.already_scored),
            "in_flight": self.plan.in_flight,
            "cannot_run": len(self.plan.cannot_run), "states": self.states, "failed": self.failed,
            "pairs": self.pairs, "emails": self.emails, "delivery": self.delivery, "problems": self.problems,
            "executor_stats": self.executor_stats, "interrupted": self.interrupted,
            "issues": self.change.issues,
        }


@dataclass
class Progress:
    """What a person watching a run wants to know: pairs done, failed and left, time, the slowest pair."""

    total: int
    done: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)
    tasks: dict[str, int] = field(default_factory=dict)  # array tasks per state, as the executor sees them
    slowest: tuple[str, str, float] | None = None  # model, benchmark, seconds (of the pairs finished)

    @property
    def left(self) -> int:
        return max(self.total - self.done, 0)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def add(self, result: dict) -> None:
        self.done += 1
        self.failed += result.get("status") != "ok"
        seconds = result.get("elapsed_seconds")
        if isinstance(seconds, (int, float)) and (self.slowest is None or seconds > self.slowest[2]):
            self.slowest = (str(result.get("model")), str(result.get("benchmark")), float(seconds))

    def line(self) -> str:
        text = (f"{self.done}/{self.total} pairs done ({self.failed} failed), {self.left} left, "
                f"{int(self.elapsed) // 60:d}:{int(self.elapsed) % 60:02d} elapsed")
        if self.slowest:
            text += f"; slowest: {self.slowest[0]} on {self.slowest[1]} ({self.slowest[2]:.1f} s)"
        return text


def python_version(python: str, configured: str = "") -> str:
    """The jobs' Python version: the `python_version` setting, else asked of the job interpreter when it exists
    here (a cluster interpreter that exists only on the nodes needs the setting)."""
    if configured:
        return configured
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BadInput(f"the job interpreter {python} cannot be run here ({type(exc).__name__}); set python_version "
                       "(e.g. SCORE_PLUGINS_PYTHON_VERSION=3.11) for a cluster-only interpreter") from None
    return out.stdout.strip()


def _lock_progress(done: int, total: int) -> None:
    """One stderr line per solved environment when there are several (a first `--all` locks hundreds)."""
    if total > 1:
        print(f"score-plugins: environments locked {done}/{total}", file=sys.stderr, flush=True)


def detect_and_plan(settings: Settings, db: Database, req: Request) -> tuple[Change, Catalog, Plan]:
    if req.all:
        change, catalog = detect_all(req.repo, req.head, req.domain_root, settings.cache_dir)
    else:
        assert req.base is not None
        change, catalog = detect(req.repo, req.base, req.head, req.domain_root, settings.cache_dir)

    check_owners(db, catalog, change)

    def already(keys: list[str]) -> set[str]:
        with db.sessions() as session:
            return scored_keys(session, keys)

    def running(keys: list[str]) -> dict[str, str]:
        with db.sessions() as session:
            return in_flight_keys(session, keys)

    plan = make_plan(change, catalog, locks_dir=settings.locks_dir, uv=settings.coordinator_uv,
                     python_version=python_version(settings.python, settings.python_version), scored=already, force=req.force,
                     models=req.models, benchmarks=req.benchmarks, backend=settings.env_backend,
                     conda_backend=settings.conda_backend, rattler_python=settings.rattler_python,
                     url_schemes=tuple(settings.requirement_url_schemes), lock_workers=settings.lock_workers,
                     progress=_lock_progress,
                     in_flight=running)
    if req.only_pairs is not None:
        for name in ("to_run", "already_scored", "cannot_run"):
            setattr(plan, name, [p for p in getattr(plan, name) if (p.model, p.benchmark) in req.only_pairs])
    return change, catalog, plan


def ensure_writable(folder: Path) -> None:
    """Fail fast (exit 3) when the state folder cannot take a run's files: read-only, full, or gone."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-") as probe:
            probe.write(b"x" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise InfrastructureError(f"the state folder {folder} cannot be written ({exc.strerror or exc}): "
                                  "nothing was submitted") from None


def check_owners(db: Database, catalog: Catalog, change: Change) -> None:
    """Ids have owners in the database too: an id already recorded for another plugin folder that still exists
    is refused (the pairs are not planned); recorded for a folder that is gone, it moved, and says so."""
    with db.sessions() as session:
        known = {"models": dict(session.execute(select(Model.identifier, Model.plugin)).all()),
                 "benchmarks": dict(session.execute(select(BenchmarkType.identifier, BenchmarkType.plugin)).all())}
    for plugin_type, owners in known.items():
        for plugin in catalog.of_type(plugin_type):
            for identifier in list(plugin.identifiers):
                owner = owners.get(identifier)
                if not owner or owner == plugin.name:
                    continue
                severity = "error" if plugin.name in change.changed_plugins.get(plugin_type, []) else "warning"
                if (plugin_type, owner) in catalog.plugins or (plugin_type, owner) in catalog.refused_folders:
                    plugin.identifiers.remove(identifier)
                    for ids in (change.new_models, change.new_benchmarks):
                        if identifier in ids:
                            ids.remove(identifier)
                    change.issues.append({"file": f"{plugin.path}/__init__.py", "line": 0, "severity": severity,
                                          "message": f"{plugin_type[:-1]} id {identifier!r} belongs to "
                                          f"{catalog.domain_root}/{plugin_type}/{owner} (recorded in the database); "
                                          "an id has one owner"})
                else:
                    change.issues.append({"file": f"{plugin.path}/__init__.py", "line": 0, "severity": "warning",
                                          "message": f"{plugin_type[:-1]} id {identifier!r} moved from "
                                          f"{plugin_type}/{owner} (gone) to {plugin_type}/{plugin.name}"})


def execute(settings: Settings, db: Database, req: Request, *,
            on_progress: Callable[[Progress], None] | None = None) -> RunResult:
    """Run the whole pipeline for one request and return what happened."""
    ensure_writable(settings.state_dir)
    change, catalog, plan = detect_and_plan(settings, db, req)
    result = RunResult(change, plan)
    problems = plugin_problems_by_owner(change, catalog)
    if not plan.to_run and not plan.cannot_run:
        if problems:  # nothing to score, but the submitters of refused plugins still hear why
            run = Run(id=f"check-{plan.commit[:12]}", head_commit=plan.commit, domain=plan.domain_root,
                      executor=req.executor, build_url=req.build_url)
            paths, bad = queue_run_messages(run, [], profile=db.profile.name, outbox_dir=settings.outbox_dir,
                                            sender=settings.sender_email, leaderboard_url=settings.leaderboard_url,
                                            plugin_problems=problems)
            result.emails, result.problems = [str(p) for p in paths], bad
            result.delivery, more = deliver(settings.outbox_dir, db.profile.name)
            result.problems.extend(more)
        return result
    # The executor first: its checks (partition limits, a reachable scheduler) come before any trace.
    executor = get_executor(req.executor, settings) if plan.to_run else None
    interrupted = False
    run_id = new_run_id()
    taken = claim_pairs(db, run_id, plan, req, str(catalog.repo))
    if taken:  # another coordinator claimed these first (two started at once): never scored twice
        plan.in_flight.update(taken)
        plan.to_run = [p for p in plan.to_run if p.key not in taken]
        if not plan.to_run and executor is not None:
            executor.close()
            executor = None
        if not plan.to_run and not plan.cannot_run:
            drop_run(db, run_id)
            return result
    bundle = render_bundle(settings, plan, catalog.repo, req.executor, run_id=run_id)
    result.run_id, result.run_dir = bundle.run_id, str(bundle.run_dir)
    record_bundle(db, bundle)
    if executor is not None:
        try:
            job_id = executor.submit(bundle)
            with session_scope(db.sessions) as session:
                session.execute(update(Run).where(Run.id == bundle.run_id).values(status="RUNNING"))
                session.execute(update(Job).where(Job.run_id == bundle.run_id, Job.state == "PENDING")
                                .values(slurm_job_id=job_id))
            progress = Progress(total=len(plan.to_run))
            try:
                states = watch(db, executor, job_id, bundle, on_progress, progress=progress)
                states = retry_infrastructure_failures(db, executor, bundle, states, settings.max_retries,
                                                       on_progress, progress=progress)
            except KeyboardInterrupt:  # Ctrl-C: stop what we started, keep what finished, tell everyone
                interrupted = True
                log.warning("interrupted: cancelling run %s", bundle.run_id)
                executor.cancel(job_id)
                states = _states_after_cancel(executor, job_id)
                _ingest_when_reachable(db, bundle, set(), wait=10.0)
            result.executor_stats = {k: getattr(executor, k) for k in ("poll_cycles", "sacct_calls")
                                     if hasattr(executor, k)}
        finally:
            executor.close()
        close_missing(db, bundle, states, cancelled="interrupted by Ctrl-C" if interrupted else None)
    _finish(settings, db, bundle, plan, req, result, problems)
    if interrupted:
        result.interrupted = True
        raise Interrupted(result)
    return result


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C after it was recorded and its emails written; carries the result."""

    def __init__(self, result: "RunResult"):
        super().__init__("interrupted")
        self.result = result


def _states_after_cancel(executor, job_id: str, wait: float = 30.0) -> dict[int, TaskState]:  # noqa: ANN001
    """The tasks' states once the cancel took effect (or after `wait` seconds)."""
    deadline = time.monotonic() + wait
    while True:
        states = executor.poll(job_id)
        if (states and all(s.done for s in states.values())) or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def plugin_problems_by_owner(change: Change, catalog: Catalog) -> dict[str, list[str]]:
    """Errors found at detection (syntax errors, refused identifiers), grouped by the plugin's submitter."""
    found: dict[str, list[str]] = {}
    for issue in change.errors:
        parts = issue["file"].split("/")
        plugin = catalog.plugins.get((parts[1], parts[2])) if len(parts) >= 3 else None
        if plugin is not None and plugin.owner:
            found.setdefault(plugin.owner, []).append(f"{issue['file']}:{issue['line']}: {issue['message']}")
    return found


def watch(db: Database, executor, job_id: str, bundle: Bundle,  # noqa: ANN001 - Executor
          on_progress: Callable[[Progress], None] | None = None, spool_interval: float = 0.5,
          expect: list[str] | None = None, progress: Progress | None = None) -> dict[int, TaskState]:
    """Wait for a run: the executor is polled once per cycle, with back-off (one sacct call on Slurm);
    the spool, a local folder, is read more often, and the run is done as soon as every pair has
    a result there, or every task has ended."""
    ingested: set[str] = set()
    wanted = {f"{k}.json" for k in (expect or [p["key"] for p in bundle.pairs()])}
    delay, max_delay = executor.poll_interval
    states = executor.poll(job_id)
    next_poll = time.monotonic() + delay
    progress = progress or Progress(total=len(wanted))
    while True:
        try:
            before = progress.done
            _, names = ingest_spool(db, bundle.spool_dir, ingested, on_result=progress.add)
            ingested |= names
            if on_progress and progress.done != before:
                on_progress(progress)
        except SQLAlchemyError as exc:  # the database is down: results wait in the spool, scoring goes on
            log.warning("cannot ingest results now (%s); they wait in %s", type(exc).__name__, bundle.spool_dir)
        if wanted <= ingested:
            return states
        if time.monotonic() >= next_poll:
            states = executor.poll(job_id)
            counts: dict[str, int] = {}
            for s in states.values():
                counts[s.state] = counts.get(s.state, 0) + 1
            progress.tasks = counts
            if on_progress:
                on_progress(progress)
            if states and all(s.done for s in states.values()):
                _ingest_when_reachable(db, bundle, ingested)
                return states
            delay = min(delay * 1.5, max_delay)
            next_poll = time.monotonic() + delay
        time.sleep(spool_interval)


RETRYABLE = ("NODE_FAIL", "PREEMPTED")  # the infrastructure's fault; a plugin's own failure is never retried


def retry_infrastructure_failures(db: Database, executor, bundle: Bundle,  # noqa: ANN001 - Executor
                                  states: dict[int, TaskState], max_retries: int,
                                  on_progress: Callable[[Progress], None] | None = None,
                                  progress: Progress | None = None) -> dict[int, TaskState]:
    """Resubmit tasks that ended NODE_FAIL or PREEMPTED without results, at most `max_retries` times."""
    if not hasattr(executor, "resubmit"):
        return states
    for attempt in range(2, max_retries + 2):
        done = {p.stem for p in bundle.spool_dir.glob("*.json")}
        by_task: dict[int, list[str]] = {}
        for key, index in bundle.task_of().items():
            by_task.setdefault(index, []).append(key)
        retry = [i for i, s in states.items() if s.state in RETRYABLE and not set(by_task.get(i, [])) <= done]
        if not retry:
            return states
        log.warning("resubmitting %d task(s) after %s (attempt %d)", len(retry),
                    ", ".join(sorted({states[i].state for i in retry})), attempt)
        job_id = executor.resubmit(bundle, retry)
        keys = [k for i in retry for k in by_task.get(i, [])]
        with session_scope(db.sessions) as session:
            session.execute(update(Job).where(Job.run_id == bundle.run_id, Job.pair_key.in_(keys))
                            .values(slurm_job_id=job_id, attempt=attempt, state="PENDING"))
        states = {**states, **watch(db, executor, job_id, bundle, on_progress, expect=keys, progress=progress)}
    return states


def _ingest_when_reachable(db: Database, bundle: Bundle, ingested: set[str], wait: float = 300.0) -> None:
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


def close_missing(db: Database, bundle: Bundle, states: dict[int, TaskState], cancelled: str | None = None) -> None:
    """Every pair whose task ended without a result gets a terminal state and a reason (`cancelled`: why the
    run was cancelled, for the pairs it stopped)."""
    task_of = bundle.task_of()
    with session_scope(db.sessions) as session:
        open_jobs = session.scalars(select(Job).where(Job.run_id == bundle.run_id,
                                                      Job.state.in_(("PENDING", "RUNNING")))).all()
        for job in open_jobs:
            index = task_of.get(job.pair_key)
            state = states.get(index) if index is not None else None
            task_log = bundle.log_dir / f"task-{index}.out"
            if cancelled and (state is None or state.state in ("CANCELLED", "PENDING", "RUNNING")):
                job.state, job.reason = "CANCELLED", cancelled
            elif state is None:
                job.state, job.reason = "LOST", "the executor does not know this task"
            elif state.state == "COMPLETED":
                job.state, job.reason = "LOST", "the task finished without writing a result for this pair"
            else:
                job.state = state.state
                job.reason = state.reason or f"array task {index} ended as {state.state}"
            job.log_path = str(task_log)
            job.log_tail = tail(task_log)
            job.array_index = index
            job.ended_at = datetime.now(timezone.utc)


def claim_pairs(db: Database, run_id: str, plan: Plan, req: Request, repo: str, state: str = "PENDING",
                executor: str | None = None) -> dict[str, str]:
    """Open the run and claim its pairs, atomically: a pair's PENDING row can exist in one run only
    (a partial unique index), so of two coordinators started at once on the same change, each pair goes
    to exactly one. Returns the pairs another run holds (key -> that run), which this run must not score.
    `state="RENDERED"` records a hand-submitted bundle's pairs without claiming them."""
    now = datetime.now(timezone.utc)
    with session_scope(db.sessions) as session:
        session.add(Run(id=run_id, status="PENDING", repo=repo, base_commit=None if req.all else req.base,
                        head_commit=plan.commit, domain=plan.domain_root, executor=executor or req.executor,
                        run_dir="", jenkins_build=req.jenkins_build, build_url=req.build_url))
        session.flush()
        rows = [{"run_id": run_id, "pair_key": p.key, "model": p.model, "benchmark": p.benchmark,
                 "submitters": p.submitters, "state": state, "attempt": 1} for p in plan.to_run]
        if rows:
            stmt = insert_for(session, Job).on_conflict_do_nothing()
            session.connection().execute(stmt, rows)
        for pair in plan.cannot_run:
            session.add(Job(run_id=run_id, pair_key=pair.key, model=pair.model, benchmark=pair.benchmark,
                            submitters=pair.submitters, state="FAILED", stage="env_build", reason=pair.problem,
                            started_at=now, ended_at=now))
        session.flush()
        mine = set(session.scalars(select(Job.pair_key).where(Job.run_id == run_id)))
        lost = [p.key for p in plan.to_run if p.key not in mine]
        holders = {key: run for key, run in session.execute(select(Job.pair_key, Job.run_id).where(
            Job.pair_key.in_(lost), Job.state.in_(("PENDING", "RUNNING")))).all()} if lost else {}
    return {key: holders.get(key, "another run") for key in lost}


def record_bundle(db: Database, bundle: Bundle) -> None:
    """The run's folder and each claimed pair's array task, once the bundle is rendered."""
    with session_scope(db.sessions) as session:
        session.execute(update(Run).where(Run.id == bundle.run_id).values(run_dir=str(bundle.run_dir)))
        for key, index in bundle.task_of().items():
            session.execute(update(Job).where(Job.run_id == bundle.run_id, Job.pair_key == key)
                            .values(array_index=index))


def drop_run(db: Database, run_id: str) -> None:
    """A run that claimed nothing (every pair was taken by another coordinator) leaves no trace."""
    with session_scope(db.sessions) as session:
        session.execute(delete(Job).where(Job.run_id == run_id))
        session.execute(delete(Run).where(Run.id == run_id))


def record_run(db: Database, bundle: Bundle, plan: Plan, req: Request, repo: str, state: str = "PENDING") -> None:
    """Open a run for an already rendered bundle (render, reproduce): its pairs recorded in `state`."""
    claim_pairs(db, bundle.run_id, plan, req, repo, state=state, executor=bundle.executor)
    record_bundle(db, bundle)


def record_submissions(session, run: Run, jobs: list[Job], jenkins_build: str | None) -> None:  # noqa: ANN001
    """One submission row per submitter of the run (Brain-Score's submission table), with its outcome."""
    outcome: dict[str, bool] = {}
    for job in jobs:
        for email in job.submitters or []:
            outcome[email] = outcome.get(email, True) and job.state == "COMPLETED"
    if not outcome:
        return
    users = ensure_rows(session, User, "email", {e: {"email": e, "display_name": ""} for e in outcome})
    now = datetime.now(timezone.utc)
    insert_many(session, Submission, [
        {"run_id": run.id, "user_id": users[email], "jenkins_build": jenkins_build,
         "status": "COMPLETED" if ok else "COMPLETED_WITH_FAILURES", "created_at": run.created_at, "ended_at": now}
        for email, ok in sorted(outcome.items())], conflict=["run_id", "user_id"], update=["status", "ended_at"])


def _finish(settings: Settings, db: Database, bundle: Bundle, plan: Plan, req: Request, result: RunResult,
            problems: dict[str, list[str]] | None = None) -> None:
    with session_scope(db.sessions) as session:
        run = session.get(Run, bundle.run_id)
        jobs = run_jobs(session, bundle.run_id)
        for job in jobs:
            result.states[job.state] = result.states.get(job.state, 0) + 1
        result.pairs = [{"model": j.model, "benchmark": j.benchmark, "state": j.state, "score": j.score,
                         "stage": j.stage, "reason": j.reason, "job_id": j.slurm_job_id} for j in jobs]
        run.status = "COMPLETED" if result.failed == 0 else "COMPLETED_WITH_FAILURES"
        run.ended_at = datetime.now(timezone.utc)
        skipped: dict[str, int] = {}
        for pair in plan.already_scored:
            for s in pair.submitters:
                skipped[s] = skipped.get(s, 0) + 1
        record_submissions(session, run, jobs, req.jenkins_build)
        paths, problems = queue_run_messages(run, jobs, profile=db.profile.name, outbox_dir=settings.outbox_dir,
                                             sender=settings.sender_email, leaderboard_url=settings.leaderboard_url,
                                             skipped=skipped, extra_recipients=req.extra_recipients,
                                             admin_email=settings.admin_email, plugin_problems=problems)
    result.emails = [str(p) for p in paths]
    result.problems.extend(problems)
    result.delivery, problems = deliver(settings.outbox_dir, db.profile.name)
    result.problems.extend(problems)
