"""`rerun --failed` keeps the original run's scope and recipients.

A rerun plans the old commit with `--all` narrowed to the failed pairs, so detection sees every plugin of the
repository; a broken plugin elsewhere (a warning in the original run) must stay a warning, and nobody the
original run did not mail hears from the rerun."""

from __future__ import annotations

from sqlalchemy import select

from db.models import Job
from pipeline.database import Database
from pipeline.stages.detect import Change
from pipeline.stages.plan import Plan
from pipeline.catalog.plugins import plugin_key_of


def original_recipients(db: Database, run_id: str, pairs: list[tuple[str, str]]) -> set[str]:
    """Who the original run mailed about these pairs (their job rows' submitters)."""
    wanted = set(pairs)
    with db.sessions() as session:
        rows = session.execute(select(Job.model, Job.benchmark, Job.submitters).where(Job.run_id == run_id)).all()
    return {s for m, b, subs in rows if (m, b) in wanted for s in (subs or [])}


def keep_scope(change: Change, plan: Plan) -> None:
    """Problems of plugins outside the rerun's pairs become warnings: they are not the rerun's business."""
    scope = set()
    for pair in [*plan.to_run, *plan.cannot_run, *plan.already_scored]:
        scope |= {("models", pair.model_plugin), ("benchmarks", pair.benchmark_plugin)}
    for issue in change.issues:
        if issue["severity"] == "error" and plugin_key_of(issue["file"]) not in scope:
            issue["severity"] = "warning"
            issue["message"] += " (outside the rerun's pairs)"
