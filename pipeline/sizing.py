"""Each planned pair's first tier, and why: measured peaks first, then the plugins' declarations, then the
smallest tier. A declaration no tier can hold is refused here, at plan time, with the reason (an error on the
plugin's metadata file when the change touches it), not hours later on the cluster."""

from __future__ import annotations

from sqlalchemy import case, func, select

from db.models import Attempt
from pipeline.database import Database
from pipeline.detect import Change
from pipeline.plan import Plan, PlannedPair
from pipeline.plugins import Catalog, Plugin
from pipeline.tiers import Need, Tier, first_tier, too_large


def measured_peaks(db: Database) -> dict[tuple[str, str], int]:
    """(model, benchmark) -> the most memory it is known to need: the peak of a finished attempt, or just over
    the request of an attempt that ran out of memory (it needed more than that)."""
    need = case((Attempt.failure_kind.is_(None), Attempt.max_rss_bytes),
                (Attempt.failure_kind == "OOM", Attempt.req_mem_bytes + 1), else_=None)
    with db.sessions() as session:
        rows = session.execute(select(Attempt.model, Attempt.benchmark, func.max(need))
                               .group_by(Attempt.model, Attempt.benchmark)).all()
    return {(m, b): int(n) for m, b, n in rows if n is not None}


def peak_for(peaks: dict[tuple[str, str], int], by_model: dict[str, int], by_benchmark: dict[str, int],
             model: str, benchmark: str) -> tuple[int | None, str]:
    """The peak a pair is sized from: its own, else the larger of its model's and its benchmark's."""
    own = peaks.get((model, benchmark))
    if own is not None:
        return own, "this pair"
    known = [(v, w) for v, w in ((by_model.get(model), "its model"), (by_benchmark.get(benchmark), "its benchmark"))
             if v is not None]
    if not known:
        return None, ""
    return max(known)


def declared(plugin: Plugin, identifier: str) -> Need:
    return plugin.resources.get(identifier) or plugin.resources.get("") or Need()


def assign_tiers(plan: Plan, catalog: Catalog, change: Change, db: Database, tiers: list[Tier],
                 margin: float) -> None:
    """Set each pair's `tier` and `tier_why`; pairs whose declaration exceeds every tier leave the plan, and
    the declaring plugin gets the reason as an issue."""
    peaks = measured_peaks(db)
    by_model: dict[str, int] = {}
    by_benchmark: dict[str, int] = {}
    for (m, b), n in peaks.items():
        by_model[m] = max(by_model.get(m, 0), n)
        by_benchmark[b] = max(by_benchmark.get(b, 0), n)
    models, benchmarks = catalog.by_identifier("models"), catalog.by_identifier("benchmarks")
    refused: set[tuple[str, str]] = set()
    kept: list[PlannedPair] = []
    for pair in plan.to_run:
        need = Need()
        for plugin, identifier in ((models[pair.model], pair.model), (benchmarks[pair.benchmark], pair.benchmark)):
            own = declared(plugin, identifier)
            problem = too_large(tiers, own)
            if problem:
                if plugin.key not in refused:
                    refused.add(plugin.key)
                    touched = change.base is None or plugin.name in change.changed_plugins.get(plugin.type, [])
                    change.issues.append({"file": f"{plugin.path}/metadata.yml", "line": 0,
                                          "severity": "error" if touched else "warning",
                                          "message": f"resources: {identifier} {problem}; its pairs are not "
                                                     "scored"})
                need = None  # type: ignore[assignment]
                break
            need = need.merge(own)
        if need is None:
            continue
        peak, whose = peak_for(peaks, by_model, by_benchmark, pair.model, pair.benchmark)
        tier, why = first_tier(tiers, peak, need, margin)
        pair.tier, pair.tier_why = tier.name, why + (f" ({whose})" if whose else "")
        kept.append(pair)
    plan.to_run = kept
