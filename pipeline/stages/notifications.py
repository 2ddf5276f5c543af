"""Turn a run's job rows into one message per submitter, and queue them in the outbox.

Mail follows the profile (notify.policy): a profile that does not email submitters writes their messages to the
outbox's `held/` folder. A pair key's failure is told to each person once (`mailed_failures`): a later run that
fails the same key again (same code, same lock) leaves it out of their message, and sends none when nothing
else is new.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from db.models import Job, Run
from db.states import INFRASTRUCTURE, State
from notify.compose import AddressError, PairOutcome, RunReport, compose
from notify.outbox import Outbox
from notify.policy import MailPolicy, mail_policy

if TYPE_CHECKING:
    from pipeline.config import Settings
    from pipeline.database import Database

log = logging.getLogger(__name__)

PLUGIN_FAILURES = (State.FAILED, State.TIMEOUT, State.OUT_OF_MEMORY)  # the plugin's, told once per pair key


@dataclass
class Queued:
    paths: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    told: list[tuple[str, str]] = field(default_factory=list)  # (pair key, recipient) failures now told


def queue_run_messages(run: Run, jobs: list[Job], **kwargs) -> tuple[list[Path], list[str]]:  # noqa: ANN003
    """Queue one message per submitter; returns the queued paths and the problems (see `queue_messages`)."""
    queued = queue_messages(run, jobs, **kwargs)
    return queued.paths, queued.problems


def queue_messages(run: Run, jobs: list[Job], *, profile: str, outbox_dir: Path, sender: str,
                   leaderboard_url: str = "", skipped: dict[str, int] | None = None,
                   extra_recipients: list[str] | None = None, admin_email: str = "",
                   plugin_problems: dict[str, list[str]] | None = None,
                   standings: dict[str, dict] | None = None, cancelled: str | None = None,
                   only_to: set[str] | None = None,
                   resources: dict[str, tuple[dict, list[str]]] | None = None,
                   policy: MailPolicy | None = None, told: set[tuple[str, str]] | None = None) -> Queued:
    """Queue one message per submitter: the queued paths, the problems (bad addresses) and the failures told.
    `resources`: per submitter, the usage of their pairs' attempts and one line per escalated pair. `policy`:
    whom this profile may email (the others' messages are held); `told`: (pair key, recipient) failures already
    mailed, left out.

    Never raises for a bad address: it is reported, and everyone else still gets their message.
    """
    told = told or set()
    by_submitter: dict[str, list[PairOutcome]] = {owner: [] for owner in plugin_problems or {}}
    failures: dict[str, list[str]] = {}
    for job in jobs:
        if job.state == State.INFRA_FAIL:  # an outage is the admin's news (below), never the submitter's
            continue
        outcome = PairOutcome(job.model, job.benchmark, job.state, job.score, job.stage, job.reason, job.log_tail)
        for submitter in dict.fromkeys(list(job.submitters or []) + list(extra_recipients or [])):
            if job.state in PLUGIN_FAILURES:
                if (job.pair_key, submitter.strip().lower()) in told:
                    continue  # told when it first failed: not again
                failures.setdefault(submitter, []).append(job.pair_key)
            by_submitter.setdefault(submitter, []).append(outcome)
    outbox = Outbox(outbox_dir)
    result = Queued()
    paths, problems = result.paths, result.problems
    for submitter, outcomes in sorted(by_submitter.items()):
        if only_to is not None and submitter not in only_to:  # a rerun mails whom its original run mailed
            continue
        if not outcomes and not (plugin_problems or {}).get(submitter):
            continue  # everything it would say was said before
        models = sorted({o.model for o in outcomes})
        report = RunReport(run.id, run.head_commit, run.domain, profile, outcomes, run.build_url or "",
                           leaderboard_url, (skipped or {}).get(submitter, 0),
                           (plugin_problems or {}).get(submitter, []),
                           standings=[(standings or {})[m] for m in models if m in (standings or {})],
                           cancelled=cancelled or "", sandbox=getattr(run, "sandbox", None) or "bwrap",
                           network=getattr(run, "network", None) or "")
        report.usage, report.attempt_notes = (resources or {}).get(submitter, ({}, []))
        hold = "" if policy is None or policy.allows(submitter) else \
            f"the {profile} profile does not email submitters (settings mail_submitters, mail_allow)"
        try:
            paths.append(outbox.put(compose(report, submitter, sender), hold=hold))
        except AddressError as exc:
            problems.append(f"not emailed: {exc}")
            log.warning("not emailed: %s", exc)
            continue
        if not hold:
            result.told.extend((key, submitter.strip().lower()) for key in failures.get(submitter, []))
    infra = [PairOutcome(j.model, j.benchmark, j.state, j.score, j.stage, j.reason, j.log_tail) for j in jobs
             if j.state in INFRASTRUCTURE]
    if infra and admin_email:
        report = RunReport(run.id, run.head_commit, run.domain, profile, infra, run.build_url or "", leaderboard_url)
        try:
            paths.append(outbox.put(compose(report, admin_email, sender, alert=True)))
        except AddressError as exc:
            problems.append(f"admin not alerted: {exc}")
    return result


def policy_of(settings: Settings, profile: str) -> MailPolicy:
    return mail_policy(profile, settings.mail_submitters, settings.mail_allow, settings.admin_email)


def told_before(db: Database, jobs: list[Job], recipients: list[str]) -> set[tuple[str, str]]:
    """Of these jobs' failed pair keys, which (key, recipient) were mailed by an earlier run."""
    from sqlalchemy import select

    from db.models import MailedFailure

    keys = sorted({j.pair_key for j in jobs if j.state in PLUGIN_FAILURES})
    if not keys:
        return set()
    people = sorted({r.strip().lower() for r in recipients})
    with db.sessions() as session:
        return {(k, r) for k, r in session.execute(select(MailedFailure.pair_key, MailedFailure.recipient).where(
            MailedFailure.pair_key.in_(keys), MailedFailure.recipient.in_(people)))}


def remember_told(db: Database, run_id: str, told: list[tuple[str, str]]) -> None:
    from db.models import MailedFailure
    from db.session import session_scope
    from db.upsert import insert_for

    rows = [{"pair_key": k, "recipient": r[:320], "run_id": run_id} for k, r in dict.fromkeys(told)]
    if rows:
        with session_scope(db.sessions) as session:
            session.connection().execute(insert_for(session, MailedFailure).on_conflict_do_nothing(), rows)


def notify_run(settings: Settings, db: Database, run: Run, jobs: list[Job], **kwargs) -> Queued:  # noqa: ANN003
    """Queue a run's messages under its profile's policy, leaving out failures told before, and remember the
    failures told now (keyword arguments as `queue_messages`)."""
    recipients = [s for j in jobs for s in (j.submitters or [])] + list(kwargs.get("extra_recipients") or [])
    queued = queue_messages(run, jobs, profile=db.profile.name, outbox_dir=settings.outbox_dir,
                            sender=settings.sender_email, leaderboard_url=settings.leaderboard_url,
                            admin_email=settings.admin_email, policy=policy_of(settings, db.profile.name),
                            told=told_before(db, jobs, recipients), **kwargs)
    remember_told(db, run.id, queued.told)
    return queued


def deliver(settings: Settings, profile: str) -> tuple[dict | None, list[str]]:
    """Send what waits in the outbox if SMTP is configured, after setting aside what this profile may not send
    and the stale or superseded backlog (notify.backlog); never raises (email never fails scoring)."""
    from notify.smtp import SmtpConfigError, smtp_from_environment

    try:
        smtp = smtp_from_environment(profile)
    except SmtpConfigError as exc:
        return None, [f"emails wait in the outbox: {exc}"]
    if smtp is None:
        return None, []
    try:
        report = flush_outbox(settings, profile, smtp, attempts=2)
    except Exception as exc:  # noqa: BLE001 - a notify error must not change the run's outcome
        return None, [f"emails wait in the outbox: {type(exc).__name__}"]
    problems = [f"email {name} waits in the outbox: {reason}" for name, reason in report["failed"].items()]
    return report, problems


def flush_outbox(settings: Settings, profile: str, smtp, attempts: int = 3) -> dict:  # noqa: ANN001 - SmtpSettings
    """Triage the outbox under `profile`'s policy, then send what is left: the flush report, with what was
    held and expired."""
    from notify.backlog import triage
    from notify.smtp import flush

    outbox = Outbox(settings.outbox_dir)

    def allows(message_profile: str | None, address: str) -> bool:  # both the writer's and the flusher's policy
        return all(policy_of(settings, name).allows(address) for name in {message_profile or profile, profile})

    sorted_out = triage(outbox, allows, settings.mail_max_age_hours)
    report = flush(outbox, smtp, attempts=attempts, first_delay=1.0).to_json()
    report.update(held=sorted_out.held, expired=sorted_out.expired)
    return report


def notify_closed_runs(settings: Settings, db: Database, run_ids: list[str]) -> tuple[list[str], list[str]]:
    """Mail the runs that `ingest` (a hand-submitted bundle, now complete) or `reconcile` (a run whose coordinator
    was gone) has just closed, as their own coordinator would have: once (a message's id is its run's and its
    recipient's, so the outbox keeps one). Returns the queued paths and the problems."""
    from db.queries import run_jobs
    from db.states import RunStatus

    paths: list[str] = []
    problems: list[str] = []
    for run_id in run_ids:
        with db.sessions() as session:
            run = session.get(Run, run_id)
            if run is None or run.status in (RunStatus.PENDING, RunStatus.RUNNING):
                continue  # still open: its messages come when it closes
            jobs = run_jobs(session, run_id)
        cancelled = next((j.reason or "cancelled" for j in jobs if j.state == State.CANCELLED), "cancelled") \
            if run.status == RunStatus.CANCELLED else None
        queued = notify_run(settings, db, run, jobs, cancelled=cancelled)
        paths.extend(str(p) for p in queued.paths)
        problems.extend(queued.problems)
    if paths:
        _, more = deliver(settings, db.profile.name)
        problems.extend(more)
    return paths, problems
