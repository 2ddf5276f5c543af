"""Turn a run's job rows into one message per submitter, and queue them in the outbox."""

from __future__ import annotations

import logging
from pathlib import Path

from db.models import Job, Run
from notify.compose import AddressError, PairOutcome, RunReport, compose
from notify.outbox import Outbox

log = logging.getLogger(__name__)


def queue_run_messages(run: Run, jobs: list[Job], *, profile: str, outbox_dir: Path, sender: str,
                       leaderboard_url: str = "", skipped: dict[str, int] | None = None,
                       extra_recipients: list[str] | None = None) -> tuple[list[Path], list[str]]:
    """Queue one message per submitter; returns the queued paths and the problems (bad addresses).

    Never raises for a bad address: it is reported, and everyone else still gets their message.
    """
    by_submitter: dict[str, list[PairOutcome]] = {}
    for job in jobs:
        outcome = PairOutcome(job.model, job.benchmark, job.state, job.score, job.stage, job.reason, job.log_tail)
        for submitter in list(job.submitters or []) + list(extra_recipients or []):
            by_submitter.setdefault(submitter, []).append(outcome)
    outbox = Outbox(outbox_dir)
    paths, problems = [], []
    for submitter, outcomes in sorted(by_submitter.items()):
        report = RunReport(run.id, run.head_commit, run.domain, profile, outcomes, run.build_url or "",
                           leaderboard_url, (skipped or {}).get(submitter, 0))
        try:
            paths.append(outbox.put(compose(report, submitter, sender)))
        except AddressError as exc:
            problems.append(f"not emailed: {exc}")
            log.warning("not emailed: %s", exc)
    return paths, problems
