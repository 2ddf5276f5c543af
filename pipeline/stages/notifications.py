"""Turn a run's job rows into one message per submitter, and queue them in the outbox."""

from __future__ import annotations

import logging
from pathlib import Path

from db.models import Job, Run
from db.states import INFRASTRUCTURE
from notify.compose import AddressError, PairOutcome, RunReport, compose
from notify.outbox import Outbox

log = logging.getLogger(__name__)




def queue_run_messages(run: Run, jobs: list[Job], *, profile: str, outbox_dir: Path, sender: str,
                       leaderboard_url: str = "", skipped: dict[str, int] | None = None,
                       extra_recipients: list[str] | None = None, admin_email: str = "",
                       plugin_problems: dict[str, list[str]] | None = None,
                       standings: dict[str, dict] | None = None, cancelled: str | None = None,
                       only_to: set[str] | None = None,
                       resources: dict[str, tuple[dict, list[str]]] | None = None) -> tuple[list[Path], list[str]]:
    """Queue one message per submitter; returns the queued paths and the problems (bad addresses).
    `resources`: per submitter, the usage of their pairs' attempts and one line per escalated pair.

    Never raises for a bad address: it is reported, and everyone else still gets their message.
    """
    by_submitter: dict[str, list[PairOutcome]] = {owner: [] for owner in plugin_problems or {}}
    for job in jobs:
        outcome = PairOutcome(job.model, job.benchmark, job.state, job.score, job.stage, job.reason, job.log_tail)
        for submitter in list(job.submitters or []) + list(extra_recipients or []):
            by_submitter.setdefault(submitter, []).append(outcome)
    outbox = Outbox(outbox_dir)
    paths, problems = [], []
    for submitter, outcomes in sorted(by_submitter.items()):
        if only_to is not None and submitter not in only_to:  # a rerun mails whom its original run mailed
            continue
        models = sorted({o.model for o in outcomes})
        report = RunReport(run.id, run.head_commit, run.domain, profile, outcomes, run.build_url or "",
                           leaderboard_url, (skipped or {}).get(submitter, 0),
                           (plugin_problems or {}).get(submitter, []),
                           standings=[(standings or {})[m] for m in models if m in (standings or {})],
                           cancelled=cancelled or "", sandbox=getattr(run, "sandbox", None) or "bwrap",
                           network=getattr(run, "network", None) or "")
        report.usage, report.attempt_notes = (resources or {}).get(submitter, ({}, []))
        try:
            paths.append(outbox.put(compose(report, submitter, sender)))
        except AddressError as exc:
            problems.append(f"not emailed: {exc}")
            log.warning("not emailed: %s", exc)
    infra = [PairOutcome(j.model, j.benchmark, j.state, j.score, j.stage, j.reason, j.log_tail) for j in jobs
             if j.state in INFRASTRUCTURE]
    if infra and admin_email:
        report = RunReport(run.id, run.head_commit, run.domain, profile, infra, run.build_url or "", leaderboard_url)
        try:
            paths.append(outbox.put(compose(report, admin_email, sender, alert=True)))
        except AddressError as exc:
            problems.append(f"admin not alerted: {exc}")
    return paths, problems


def deliver(outbox_dir: Path, profile: str) -> tuple[dict | None, list[str]]:
    """Send what waits in the outbox if SMTP is configured; never raises (email never fails scoring)."""
    from notify.smtp import SmtpConfigError, flush, smtp_from_environment

    try:
        settings = smtp_from_environment(profile)
    except SmtpConfigError as exc:
        return None, [f"emails wait in the outbox: {exc}"]
    if settings is None:
        return None, []
    try:
        report = flush(Outbox(outbox_dir), settings, attempts=2, first_delay=1.0)
    except Exception as exc:  # noqa: BLE001 - a notify error must not change the run's outcome
        return None, [f"emails wait in the outbox: {type(exc).__name__}"]
    problems = [f"email {name} waits in the outbox: {reason}" for name, reason in report.failed.items()]
    return report.to_json(), problems
