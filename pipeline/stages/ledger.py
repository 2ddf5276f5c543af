"""The ledger: every change of a run's or a job's state, one function per transition.

Run, watch, reconcile and cancel all write through here, so the rules (what "closed unfinished" means,
which reason a pair gets, when a run is over) are said once. The states themselves are `db.states`.

    open_run ──> record_bundle ──> submitted ──> (retried | escalated | outgrown)* ──> close_unfinished ──> finish
        └──> drop_run (claimed nothing)         cancelled (score-plugins cancel)     reconciled (coordinator gone)

Results (a pair's score or failure, read from the spool) are written by ingest, in batches: the one
transition outside this module, because a result row is data, not bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable

from sqlalchemy import bindparam, delete, select, update

from db.ingest import ensure_rows
from db.models import Job, Run, Submission, User
from db.queries import run_jobs
from db.session import session_scope
from db.states import OPEN, RunStatus, State
from db.upsert import insert_for, insert_many
from pipeline.database import Database
from pipeline.executors.base import TaskState
from pipeline.job.spool import tail

if TYPE_CHECKING:
    from pipeline.stages.bundle import Bundle
    from pipeline.stages.plan import Plan


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class RunInfo:
    """What a run row records about where it came from."""

    repo: str
    head: str
    domain: str
    executor: str
    base: str | None = None
    jenkins_build: str | None = None
    build_url: str | None = None
    sandbox: str | None = None  # bwrap | off (named in status and emails)
    memory_limit: str | None = None  # local executor: cgroup v1 | cgroup v2 | rlimit (named in status)
    network: str | None = None  # the plugins' network: on (the outside, not the node) | off | host (named so)


def open_run(db: Database, run_id: str, plan: Plan, info: RunInfo, state: State = State.PENDING) -> dict[str, str]:
    """Open the run and claim its pairs, atomically: a pair's PENDING row can exist in one run only
    (a partial unique index), so of two coordinators started at once on the same change, each pair goes
    to exactly one. Returns the pairs another run holds (key -> that run), which this run must not score.
    `state=RENDERED` records a hand-submitted bundle's pairs without claiming them. Pairs that cannot run
    are recorded at `env_build` at once: FAILED when it is the plugins' doing, INFRA_FAIL when their environment
    could not be had for an infrastructure reason (an unreachable index...)."""
    now = _now()
    with session_scope(db.sessions) as session:
        session.add(Run(id=run_id, status=RunStatus.PENDING, repo=info.repo, base_commit=info.base,
                        head_commit=info.head, domain=info.domain, executor=info.executor, run_dir="",
                        jenkins_build=info.jenkins_build, build_url=info.build_url,
                        sandbox=info.sandbox, memory_limit=info.memory_limit, network=info.network))
        session.flush()
        rows = [{"run_id": run_id, "pair_key": p.key, "model": p.model, "benchmark": p.benchmark,
                 "submitters": p.submitters, "state": state, "attempt": 1} for p in plan.to_run]
        if rows:
            session.connection().execute(insert_for(session, Job).on_conflict_do_nothing(), rows)
        for pair in plan.cannot_run:
            session.add(Job(run_id=run_id, pair_key=pair.key, model=pair.model, benchmark=pair.benchmark,
                            submitters=pair.submitters, state=State.INFRA_FAIL if pair.outage else State.FAILED,
                            stage="env_build", reason=pair.problem,
                            started_at=now, ended_at=now))
        for pair in plan.held:  # not claimed, not run: waits for an administrator's approval (reason says how)
            session.add(Job(run_id=run_id, pair_key=pair.key, model=pair.model, benchmark=pair.benchmark,
                            submitters=pair.submitters, state=State.HELD, reason=pair.problem, ended_at=now))
        session.flush()
        mine = set(session.scalars(select(Job.pair_key).where(Job.run_id == run_id)))
        lost = [p.key for p in plan.to_run if p.key not in mine]
        holders = dict(session.execute(select(Job.pair_key, Job.run_id).where(
            Job.pair_key.in_(lost), Job.state.in_(OPEN))).all()) if lost else {}
    return {key: holders.get(key, "another run") for key in lost}


def drop_run(db: Database, run_id: str) -> None:
    """A run that claimed nothing (every pair was taken by another coordinator) leaves no trace."""
    with session_scope(db.sessions) as session:
        session.execute(delete(Job).where(Job.run_id == run_id))
        session.execute(delete(Run).where(Run.id == run_id))


def record_bundle(db: Database, bundle: Bundle) -> None:
    """The run's folder and each claimed pair's array task, once the bundle is rendered."""
    with session_scope(db.sessions) as session:
        session.execute(update(Run).where(Run.id == bundle.run_id).values(run_dir=str(bundle.run_dir)))
        table = Job.__table__
        stmt = (update(table).where(table.c.run_id == bindparam("b_run"), table.c.pair_key == bindparam("b_key"))
                .values(array_index=bindparam("b_index")))  # one executemany, not one ORM statement per pair
        rows = [{"b_run": bundle.run_id, "b_key": key, "b_index": index} for key, index in bundle.task_of().items()]
        if rows:
            session.connection().execute(stmt, rows)


def submitted(db: Database, run_id: str, job_id: str) -> None:
    """The executor accepted the run: it is RUNNING, and its waiting pairs carry the executor's job id."""
    with session_scope(db.sessions) as session:
        session.execute(update(Run).where(Run.id == run_id).values(status=RunStatus.RUNNING))
        session.execute(update(Job).where(Job.run_id == run_id, Job.state == State.PENDING)
                        .values(slurm_job_id=job_id))


def retried(db: Database, run_id: str, keys: Iterable[str], job_id: str, attempt: int) -> None:
    """Pairs resubmitted after an infrastructure failure: PENDING again under the new job id, their attempt
    counted up (`attempt` is the retry round; a pair a tier escalation already moved counts from where it is)."""
    with session_scope(db.sessions) as session:
        session.execute(update(Job).where(Job.run_id == run_id, Job.pair_key.in_(list(keys)))
                        .values(slurm_job_id=job_id, attempt=Job.attempt + 1, state=State.PENDING))


def escalated(db: Database, bundle: Bundle, keys: Iterable[str], moved: set[str], job_id: str) -> None:
    """Pairs an escalation round runs again: PENDING under the new job id and their new task; the attempt of those
    that made one counts up (a neighbour that never started keeps its number: it made no attempt)."""
    task_of = bundle.task_of()
    with session_scope(db.sessions) as session:
        for key in keys:
            session.execute(update(Job).where(Job.run_id == bundle.run_id, Job.pair_key == key).values(
                state=State.PENDING, slurm_job_id=job_id, attempt=Job.attempt + (1 if key in moved else 0),
                array_index=task_of[key], stage=None, reason=None, ended_at=None))


def outgrown(db: Database, run_id: str, reasons: dict[str, str]) -> None:
    """Pairs no tier can hold (the largest failed too): FAILED, with the reason."""
    if not reasons:
        return
    with session_scope(db.sessions) as session:
        for key, reason in reasons.items():
            session.execute(update(Job).where(Job.run_id == run_id, Job.pair_key == key)
                            .values(state=State.FAILED, reason=reason[:4000]))


def running(db: Database, run_id: str, keys: Iterable[str], node: str | None = None) -> None:
    """Pairs whose task the executor reports running: RUNNING (so `status` agrees with the executor)."""
    with session_scope(db.sessions) as session:
        session.execute(update(Job).where(Job.run_id == run_id, Job.pair_key.in_(list(keys)),
                                          Job.state == State.PENDING)
                        .values(state=State.RUNNING, node=node or None, started_at=_now()))


def open_job_ids(db: Database, run_id: str) -> set[str]:
    """The executor job ids of a run's pairs that are still open."""
    with db.sessions() as session:
        return {j for j in session.scalars(select(Job.slurm_job_id).where(Job.run_id == run_id,
                                                                           Job.state.in_(OPEN))) if j}


def close_unfinished(db: Database, bundle: Bundle, states: dict[int, TaskState], *,
                     cancelled: str | None = None) -> dict[str, int]:
    """Bring the run's open pairs in line with what the executor says of their tasks; returns the count per
    new state. A task still pending or running keeps its pair open (in that state); an ended task whose pair
    has no result closes it, with the reason: the executor's state, or LOST when the task finished without
    writing a result or the executor has no record of it. `cancelled` (why the run was cancelled) closes the
    pairs it stopped as CANCELLED (a task that ended without their result included)."""
    task_of = bundle.task_of()
    changed: dict[str, int] = {}
    with session_scope(db.sessions) as session:
        for job in session.scalars(select(Job).where(Job.run_id == bundle.run_id, Job.state.in_(OPEN))):
            index = task_of.get(job.pair_key)
            state = states.get(index) if index is not None else None
            # a cancelled run's task that "completed" without this pair's result was stopped by the cancel: right
            # after `scancel` accounting may not list the task yet (the executor holds it as running a while, or
            # squeue no longer lists it, which reads as ended); only a definite failure (out of memory, a timeout,
            # the node) keeps its own state
            if cancelled and (state is None or state.state in (State.CANCELLED, State.COMPLETED, *OPEN)):
                job.state, job.reason = State.CANCELLED, cancelled
            elif state is not None and not state.done:
                if job.state != state.state:
                    job.state = state.state
                    changed[job.state] = changed.get(job.state, 0) + 1
                continue
            elif state is None:
                job.state, job.reason = State.LOST, "the executor has no record of its task"
            elif state.state == State.COMPLETED:
                job.state, job.reason = State.LOST, "its task finished without writing a result for this pair"
            else:
                job.state = state.state
                job.reason = state.reason or f"array task {index} ended as {state.state}"
            log = bundle.log_dir / f"task-{index}.out"
            if index is not None and log.exists():
                job.log_path, job.log_tail = str(log), tail(log)
            job.array_index = index
            job.ended_at = _now()
            changed[job.state] = changed.get(job.state, 0) + 1
    return changed


def close_hand_submitted(db: Database, bundle: Bundle, states: dict[int, TaskState], job_id: str) -> dict[str, int]:
    """A hand-submitted bundle's pairs (RENDERED) whose task ended without a result: closed with the task's state
    and reason (LOST when it ended well but left no result), under the Slurm job ids its submit line recorded;
    pairs whose task is still pending or running stay RENDERED (they never claim a pair). Returns the counts per
    new state."""
    task_of = bundle.task_of()
    changed: dict[str, int] = {}
    with session_scope(db.sessions) as session:
        for job in session.scalars(select(Job).where(Job.run_id == bundle.run_id, Job.state == State.RENDERED)):
            index = task_of.get(job.pair_key)
            state = states.get(index) if index is not None else None
            if state is None or not state.done:
                continue
            if state.state == State.COMPLETED:
                job.state, job.reason = State.LOST, "its task finished without writing a result for this pair"
            else:
                job.state = state.state
                job.reason = state.reason or f"array task {index} ended as {state.state}"
            job.slurm_job_id, job.array_index, job.ended_at = job_id, index, _now()
            job.node = state.node or job.node
            changed[job.state] = changed.get(job.state, 0) + 1
    return changed


def reconciled(db: Database, run_id: str) -> bool:
    """A run whose coordinator is gone, once none of its pairs is open: RECONCILED. Returns whether it closed."""
    with session_scope(db.sessions) as session:
        run = session.get(Run, run_id)
        still_open = session.scalar(select(Job.id).where(Job.run_id == run_id, Job.state.in_(OPEN)).limit(1))
        if still_open is None and run.status in (RunStatus.PENDING, RunStatus.RUNNING):
            run.status, run.ended_at = RunStatus.RECONCILED, _now()
            return True
    return False


def open_pair_ids(db: Database, run_id: str) -> set[int]:
    """The row ids of a run's pairs that are still open."""
    with db.sessions() as session:
        return set(session.scalars(select(Job.id).where(Job.run_id == run_id, Job.state.in_(OPEN))))


def cancelled(db: Database, run_id: str, reason: str, among: set[int] | None = None) -> int:
    """Close a run's open pairs as CANCELLED (with `reason`) and the run itself; returns how many pairs.
    With `among` (the pairs open when the cancel began), the count is of those now CANCELLED, whoever closed
    them: the run's own coordinator may record its stopped tasks first."""
    n = 0
    with session_scope(db.sessions) as session:
        for job in session.scalars(select(Job).where(Job.run_id == run_id, Job.state.in_(OPEN))):
            job.state, job.reason, job.ended_at = State.CANCELLED, reason, _now()
            n += 1
        run = session.get(Run, run_id)
        if run is None:  # stopped while it was being opened or dropped: there is nothing to close
            return n
        if n or run.status in (RunStatus.PENDING, RunStatus.RUNNING):  # a run already over keeps its status
            run.status, run.ended_at = RunStatus.CANCELLED, _now()
        if among is not None:
            session.flush()
            n = len(set(session.scalars(select(Job.id).where(Job.run_id == run_id,
                                                                Job.state == State.CANCELLED))) & among)
    return n


def finish(db: Database, run_id: str, jenkins_build: str | None, cancelled: str | None = None
           ) -> tuple[Run, list[Job]]:
    """The run is over: COMPLETED or COMPLETED_WITH_FAILURES (CANCELLED when `cancelled` says why: a signal
    stopped it), and one submission row per submitter with its outcome (Brain-Score's submission table).
    Returns the run and its pairs, for the report and the emails."""
    with session_scope(db.sessions) as session:
        run = session.get(Run, run_id)
        jobs = run_jobs(session, run_id)
        ok = all(j.state in (State.COMPLETED, State.HELD) for j in jobs)  # held: waits, did not fail
        run.status = (RunStatus.CANCELLED if cancelled else
                      RunStatus.COMPLETED if ok else RunStatus.COMPLETED_WITH_FAILURES)
        run.ended_at = _now()
        _record_submissions(session, run, jobs, jenkins_build)
    return run, jobs


def _record_submissions(session, run: Run, jobs: list[Job], jenkins_build: str | None) -> None:  # noqa: ANN001
    outcome: dict[str, bool] = {}
    for job in jobs:
        if job.state == State.INFRA_FAIL:  # an outage is no outcome of the submitter's: the next build retries it
            continue
        for email in job.submitters or []:
            outcome[email] = outcome.get(email, True) and job.state == State.COMPLETED
    if not outcome:
        return
    users = ensure_rows(session, User, "email", {e: {"email": e, "display_name": ""} for e in outcome})
    now = _now()
    insert_many(session, Submission, [
        {"run_id": run.id, "user_id": users[email], "jenkins_build": jenkins_build,
         "status": RunStatus.COMPLETED if ok else RunStatus.CANCELLED if run.status == RunStatus.CANCELLED
         else RunStatus.COMPLETED_WITH_FAILURES, "created_at": run.created_at,
         "ended_at": now}
        for email, ok in sorted(outcome.items())], conflict=["run_id", "user_id"], update=["status", "ended_at"])


def open_runs(db: Database) -> list[Run]:
    """Runs with a pair still open, and hand-submitted runs not closed yet (what `reconcile` looks at)."""
    with db.sessions() as session:
        run_ids = set(session.scalars(select(Job.run_id).where(Job.state.in_(OPEN))))
        run_ids |= set(session.scalars(select(Job.run_id).join(Run, Run.id == Job.run_id).where(
            Job.state == State.RENDERED, Run.status.in_((RunStatus.PENDING, RunStatus.RUNNING)))))
        return [session.get(Run, r) for r in sorted(run_ids)]


def get_run(db: Database, run_id: str) -> Run | None:
    with db.sessions() as session:
        return session.get(Run, run_id)


def unfinished_pairs(db: Database, run_id: str) -> list[tuple[str, str]]:
    """(model, benchmark) of every pair of the run that did not complete (what `rerun --failed` runs)."""
    with db.sessions() as session:
        rows = session.execute(select(Job.model, Job.benchmark).where(
            Job.run_id == run_id, Job.state != State.COMPLETED)).all()
    return sorted((m, b) for m, b in rows)
