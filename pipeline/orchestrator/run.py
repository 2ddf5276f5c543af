"""The orchestrator: detect, plan, render, submit, watch, ingest, notify.

Every step leaves its trace before the next starts (run and job rows, bundle,
spool), so a run interrupted anywhere can be inspected, ingested and re-run.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sqlalchemy import select

from db.models import BenchmarkType, Model, Run
from db.queries import in_flight_keys, scored_keys, shared_env_scores
from db.states import State
from pipeline.catalog import gitrepo
from pipeline.stages import ledger
from pipeline.stages.bundle import Bundle, new_run_id, render_bundle
from pipeline.config import Settings, python_version
from pipeline.confine import lock_jail, require_memory_bound, require_sandbox
from pipeline.database import Database
from pipeline.stages.detect import Change, detect, detect_all
from pipeline.errors import BadInput, InfrastructureError
from pipeline.capacity.attempts import resources_by_submitter, run_attempts
from pipeline.capacity.escalation import escalate, recorder
from pipeline.executors import Executor, get_executor
from pipeline.stages.notifications import deliver, notify_run
from pipeline.stages.plan import Plan, make_plan
from pipeline.catalog.plugins import Catalog, plugin_key_of
from pipeline.admin.rerun import keep_scope
from pipeline.admin.signals import Stopped, cancel_reason, mark_cancel, stopped_from
from pipeline.stopping import check as check_stop, unbroken
from pipeline.capacity.sizing import assign_tiers
from pipeline.tiers import time_budget_problems
from pipeline.stages.watch import Progress, Watcher

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
    backfill: bool = False  # only what the leaderboard misses (pipeline/leaderboard/backfill)
    only_to: set[str] | None = None  # rerun: mail nobody else than these (whom the original run mailed)
    failed_solves: str = "use"  # cached solve failures: "use" (a run), "plan" (plan, --dry-run), "retry"
    dry: bool = False  # plan, --dry-run: held changes are shown, not recorded or mailed


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
    interrupted: bool = False  # stopped by Ctrl-C, SIGTERM or SIGHUP: what was started was cancelled and recorded
    stop: Stopped | None = None  # which signal stopped it
    base: str | None = None  # the commit the change was measured from (None: --all)

    @property
    def failed(self) -> int:  # a held pair did not fail: it waits for an administrator's approval
        return sum(n for s, n in self.states.items() if s not in ("COMPLETED", "HELD"))

    @property
    def outages(self) -> list[dict]:
        """The pairs whose environment could not be had for an infrastructure reason (an unreachable index, TLS,
        DNS, a timeout, a full disk, a killed solver): none of them the plugins' doing."""
        if self.pairs:
            return [p for p in self.pairs if p["state"] == State.INFRA_FAIL]
        return self.plan.outages()  # planned only (--dry-run)

    @property
    def exit_code(self) -> int:
        """128 + a stop signal; else 3 when an outage kept pairs from running (the next build retries them);
        else 1 when pairs failed; else 0."""
        if self.stop is not None:
            return self.stop.exit_code
        if self.outages:
            return InfrastructureError.exit_code
        return 1 if self.failed else 0

    def to_json(self) -> dict:
        return {
            "run_id": self.run_id, "run_dir": self.run_dir, "commit": self.plan.commit, "base": self.base,
            "planned": len(self.plan.to_run), "already_scored": len(self.plan.already_scored),
            "in_flight": self.plan.in_flight,
            "cannot_run": len(self.plan.cannot_run), "held": len(self.plan.held), "states": self.states,
            "failed": self.failed,
            "pairs": self.pairs, "emails": self.emails, "delivery": self.delivery, "problems": self.problems,
            "executor_stats": self.executor_stats, "interrupted": self.interrupted,
            "stopped_by": self.stop.name if self.stop else None,
            "infrastructure": [{k: p[k] for k in ("model", "benchmark", "stage", "reason")} for p in self.outages],
            "issues": self.change.issues,
        }


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

    def made_before_the_split(pairs: list[tuple[str, str, str, str]]) -> set[tuple[str, str, str, str]]:
        with db.sessions() as session:
            return shared_env_scores(session, pairs)

    wanted, models, benchmarks = None, req.models, req.benchmarks
    if req.backfill:
        from pipeline.leaderboard.backfill import missing_pairs

        wanted = missing_pairs(db, catalog, models, benchmarks)
        if not wanted:
            return change, catalog, Plan(catalog.commit, catalog.domain_root)
        models, benchmarks = sorted({m for m, _ in wanted}), sorted({b for _, b in wanted})
    plan = make_plan(change, catalog, locks_dir=settings.locks_dir, uv=settings.coordinator_uv,
                     python_version=python_version(settings.python, settings.python_version), scored=already, force=req.force,
                     models=models, benchmarks=benchmarks, backend=settings.env_backend,
                     conda_backend=settings.conda_backend, rattler_python=settings.rattler_python,
                     url_schemes=tuple(settings.requirement_url_schemes), lock_workers=settings.lock_workers,
                     progress=_lock_progress, conda_channels=tuple(settings.conda_channels),
                     in_flight=running, jail=lock_jail(settings), failed_solves=req.failed_solves,
                     legacy=made_before_the_split)
    if req.only_pairs is not None:
        plan = plan.only(req.only_pairs)
        keep_scope(change, plan)
    if wanted is not None:
        plan = plan.only(set(wanted))
        for pair in (*plan.to_run, *plan.already_scored, *plan.cannot_run):
            pair.reasons = (wanted[(pair.model, pair.benchmark)],)
    assign_tiers(plan, catalog, change, db, settings.tier_list, settings.tier_margin_percent / 100,
                 settings.tier_unseen_percentile / 100)
    hold_changes_by_non_owners(settings, db, catalog, change, plan, record=not req.dry)
    return change, catalog, plan


def hold_changes_by_non_owners(settings: Settings, db: Database, catalog: Catalog, change: Change, plan: Plan,
                               record: bool) -> None:
    """Pairs that reach a plugin changed by someone outside its owners are held (pipeline.stages.ownership);
    a run records the change and tells the owners, its author and the administrator, once."""
    from pipeline.stages.ownership import hold_foreign_changes, notify_holds

    found = hold_foreign_changes(settings, db, catalog, change, plan, record=record)
    if found.recorded:
        _, problems = notify_holds(settings, db, db.profile.name, found.recorded, catalog.domain_root)
        for problem in problems:
            log.warning("%s", problem)


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
            on_progress: Callable[[Progress], None] | None = None,
            on_warning: Callable[[str], None] = log.warning) -> RunResult:
    """Run the whole pipeline for one request and return what happened:
    detect -> plan -> render -> submit -> watch -> ingest -> notify. `on_warning` hears what an administrator
    should know before the run is submitted (a Slurm task whose pairs cannot fit its tier's time limit)."""
    ensure_writable(settings.state_dir)
    require_sandbox(settings)  # before any lock (build scripts), claim or submission: fail closed, exit 3
    memory = require_memory_bound(settings, req.executor)  # the local executor's memory cgroups, the same way
    change, catalog, plan = detect_and_plan(settings, db, req)
    check_stop()  # a stop signal a finalizer swallowed while detecting or locking: nothing is recorded yet
    result = RunResult(change, plan)
    problems = plugin_problems_by_owner(change, catalog)
    if not plan.to_run and not plan.cannot_run and not plan.held:
        _tell_refused(settings, db, req, plan, result, problems)
        return result
    # The executor first: its checks (partition limits, a reachable scheduler) come before any trace.
    executor = get_executor(req.executor, settings) if plan.to_run else None
    run_id = new_run_id()
    try:
        with unbroken():  # a stop signal now waits for the run's rows, then cancels the run they make
            taken = ledger.open_run(db, run_id, plan, run_info(req, plan, str(catalog.repo),
                                                               sandbox=sandbox_mode(settings), memory_limit=memory,
                                                               network=network_mode(settings)))
        if taken:  # another coordinator claimed these first (two started at once): never scored twice
            plan.in_flight.update(taken)
            plan.to_run = [p for p in plan.to_run if p.key not in taken]
            if not plan.to_run and executor is not None:
                executor.close()
                executor = None
            if not plan.to_run and not plan.cannot_run and not plan.held:
                ledger.drop_run(db, run_id)
                return result
        bundle = render_bundle(settings, plan, catalog.repo, req.executor, run_id=run_id)
        result.run_id, result.run_dir = bundle.run_id, str(bundle.run_dir)
        ledger.record_bundle(db, bundle)
        if req.executor != "local":  # per tier, with each task's real pair count
            for problem in time_budget_problems(settings.tier_list, bool(settings.tiers), settings.pair_timeout,
                                                settings.pairs_per_task, bundle.manifest.tasks):
                on_warning(problem)
    except KeyboardInterrupt as exc:  # stopped before anything was submitted: the run is over, cancelled
        if executor is not None:
            executor.close()
        ledger.cancelled(db, run_id, stopped_from(exc).reason)
        raise
    interrupted, late = False, None
    if executor is not None:
        second = False
        try:
            interrupted = _submit_and_watch(settings, db, executor, bundle, on_progress, result)
        except KeyboardInterrupt as exc:  # once the watch had ended, while its record was being made: the run
            late, second = exc, stopped_from(exc).second  # closes as it ended, then the coordinator stops
            if second:  # at once: never wait for the executor's threads, whose tasks the first signal's cancel
                raise  # may not have reached yet (`reconcile` stops them, from the note in the run's folder)
        finally:
            if not second:
                late = _close_executor(executor, late)
    _finish(settings, db, bundle, plan, req, result, problems)
    if late is not None:
        raise late
    if interrupted:
        result.interrupted = True
        raise Interrupted(result)
    return result


def _close_executor(executor: Executor, late: KeyboardInterrupt | None) -> KeyboardInterrupt | None:
    """The executor's threads end (its tasks are over or stopped); a stop signal meanwhile is a late one (the run
    closes first), a second one stops the coordinator at once."""
    try:
        with unbroken():
            executor.close()
    except KeyboardInterrupt as exc:
        if stopped_from(exc).second:
            raise
        return late or exc
    return late


def _submit_and_watch(settings: Settings, db: Database, executor: Executor, bundle: Bundle,
                      on_progress: Callable[[Progress], None] | None, result: RunResult) -> bool:
    """Submit the bundle, watch it to the end (retrying infrastructure failures), and close every pair left
    without a result. Ctrl-C cancels what was started and keeps what finished; returns whether it came."""
    started = time.time()
    watcher = Watcher(db, executor, bundle, on_progress)
    watcher.on_retry = recorder(settings, db, bundle)
    watcher.stop_reason = lambda: cancel_reason(bundle.run_dir)  # `score-plugins cancel` from elsewhere
    cancelled, job_id = None, None
    try:
        with unbroken():  # a stop signal during the submission is raised once its job id is known and recorded
            job_id = executor.submit(bundle)
            ledger.submitted(db, bundle.run_id, job_id)
        watcher.cancel_if_stopped(job_id)
        states = watcher.wait(job_id)
        states = watcher.retry_infrastructure_failures(states, settings.max_retries)
        states = escalate(settings, db, executor, watcher, bundle, states, started)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: stop what we started, keep what finished, tell
        stop = stopped_from(exc)
        cancelled = stop.reason
        mark_cancel(bundle.run_dir, cancelled)  # first: a second signal still leaves a run reconcile cancels
        result.stop = stop
        log.warning("%s: cancelling run %s", stop.name, bundle.run_id)
        try:  # after SIGHUP the terminal may be gone: the cancel matters more than the line
            print(f"score-plugins: {stop.name}: cancelling run {bundle.run_id}", file=sys.stderr, flush=True)
        except OSError:
            pass
        states = {}
        if job_id is not None:
            for started_job in dict.fromkeys([job_id, *watcher.job_ids]):  # retries and escalations too
                executor.cancel(started_job)
            states = watcher.after_cancel(job_id)
    with unbroken():  # the pairs' record is made whole before a stop signal takes effect
        result.executor_stats = watcher.stats()
        ledger.close_unfinished(db, bundle, states, cancelled=cancelled or watcher.stop_reason())
    return cancelled is not None


def rerun_request(old: Run, pairs: list[tuple[str, str]], executor: str | None = None,
                  recipients: set[str] | None = None) -> Request:
    """A new run, at the old run's commit, of exactly these of its pairs (`rerun --failed`), mailing only
    `recipients` (whom the old run mailed about them)."""
    if not pairs:
        raise BadInput(f"run {old.id} has no failed pairs")
    return Request(repo=Path(old.repo), head=old.head_commit, all=True, domain_root=old.domain,
                   models=sorted({m for m, _ in pairs}), benchmarks=sorted({b for _, b in pairs}),
                   executor=executor or old.executor, only_pairs=set(pairs), jenkins_build=old.jenkins_build,
                   build_url=old.build_url, only_to=recipients, failed_solves="retry")


def run_info(req: Request, plan: Plan, repo: str, executor: str | None = None, sandbox: str | None = None,
             memory_limit: str | None = None, network: str | None = None) -> ledger.RunInfo:
    """What the run row records about a request."""
    return ledger.RunInfo(repo=repo, head=plan.commit, domain=plan.domain_root, executor=executor or req.executor,
                          base=None if req.all or not req.base else gitrepo.resolve(repo, req.base),
                          jenkins_build=req.jenkins_build, build_url=req.build_url, sandbox=sandbox,
                          memory_limit=memory_limit, network=network)


def sandbox_mode(settings: Settings) -> str:
    """What the run record says about confinement: bwrap ('auto' is its alias), or off."""
    return "off" if settings.sandbox == "off" else "bwrap"


def network_mode(settings: Settings) -> str | None:
    """What the run record says about the plugins' network: on, off or host (None when nothing was sandboxed)."""
    return None if settings.sandbox == "off" else settings.sandbox_network


def _tell_refused(settings: Settings, db: Database, req: Request, plan: Plan, result: RunResult,
                  problems: dict[str, list[str]]) -> None:
    """Nothing to score, but the submitters of refused plugins still hear why."""
    if not problems:
        return
    run = Run(id=f"check-{plan.commit[:12]}", head_commit=plan.commit, domain=plan.domain_root,
              executor=req.executor, build_url=req.build_url)
    queued = notify_run(settings, db, run, [], plugin_problems=problems)
    result.emails, result.problems = [str(p) for p in queued.paths], queued.problems
    result.delivery, more = deliver(settings, db.profile.name)
    result.problems.extend(more)


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C after it was recorded and its emails written; carries the result."""

    def __init__(self, result: "RunResult"):
        super().__init__("interrupted")
        self.result = result


def plugin_problems_by_owner(change: Change, catalog: Catalog) -> dict[str, list[str]]:
    """Errors found at detection (syntax errors, refused identifiers), grouped by the plugin's submitter."""
    found: dict[str, list[str]] = {}
    for issue in change.errors:
        key = plugin_key_of(issue["file"])
        plugin = catalog.plugins.get(key) if key else None
        if plugin is not None and plugin.owner:
            found.setdefault(plugin.owner, []).append(f"{issue['file']}:{issue['line']}: {issue['message']}")
    return found


def record_run(db: Database, bundle: Bundle, plan: Plan, req: Request, repo: str,
               state: State = State.PENDING) -> None:
    """Open a run for an already rendered bundle (render, reproduce): its pairs recorded in `state`."""
    ledger.open_run(db, bundle.run_id, plan, run_info(req, plan, repo, executor=bundle.executor,
                                                      sandbox=bundle.manifest.sandbox.replace("auto", "bwrap"),
                                                      network=None if bundle.manifest.sandbox == "off" else
                                                      bundle.manifest.sandbox_network),
                    state=state)
    ledger.record_bundle(db, bundle)


def _standings(settings: Settings, db: Database, result: RunResult) -> dict[str, dict]:
    """Each model's aggregate, rank and what it still misses, for the emails; never fails the run."""
    from pipeline.leaderboard.standings import standing_of, standings

    try:
        return standing_of(standings(db, settings.hierarchy))
    except BadInput as exc:  # e.g. an unreadable hierarchy file: the emails go out without standings
        result.problems.append(f"emails name no leaderboard standing: {exc}")
        return {}


def _finish(settings: Settings, db: Database, bundle: Bundle, plan: Plan, req: Request, result: RunResult,
            problems: dict[str, list[str]] | None = None) -> None:
    cancelled = result.stop.reason if result.stop is not None else cancel_reason(bundle.run_dir)
    with unbroken():  # the run's end and its emails in the outbox are one step; a stop signal comes after them
        run, jobs, paths, problems = _close_and_queue(settings, db, bundle, plan, req, result, problems, cancelled)
    result.emails = [str(p) for p in paths]
    result.problems.extend(problems)
    result.delivery, problems = deliver(settings, db.profile.name)  # a stop here: `notify flush` sends
    result.problems.extend(problems)


def _close_and_queue(settings: Settings, db: Database, bundle: Bundle, plan: Plan, req: Request, result: RunResult,
                     problems: dict[str, list[str]] | None, cancelled: str | None) -> tuple:
    """The run's end recorded, and its emails queued in the outbox."""
    run, jobs = ledger.finish(db, bundle.run_id, req.jenkins_build, cancelled=cancelled)
    for job in jobs:
        result.states[job.state] = result.states.get(job.state, 0) + 1
    result.pairs = [{"model": j.model, "benchmark": j.benchmark, "state": j.state, "score": j.score,
                     "stage": j.stage, "reason": j.reason, "job_id": j.slurm_job_id} for j in jobs]
    skipped: dict[str, int] = {}
    for pair in plan.already_scored:
        for s in pair.submitters:
            skipped[s] = skipped.get(s, 0) + 1
    queued = notify_run(settings, db, run, jobs, skipped=skipped, extra_recipients=req.extra_recipients,
                        plugin_problems=problems, standings=_standings(settings, db, result), cancelled=cancelled,
                        only_to=req.only_to, resources=resources_by_submitter(run_attempts(db, run.id)))
    return run, jobs, queued.paths, queued.problems
