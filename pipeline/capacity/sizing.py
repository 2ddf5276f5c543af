"""Each planned pair's first tier, and why: measured peaks first, then the plugins' declarations, then the
smallest tier. A declaration no tier can hold is refused here, at plan time, with the reason (an error on the
plugin's metadata file when the change touches it), not hours later on the cluster."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from sqlalchemy import case, func, select

from db.models import Attempt
from pipeline.config import Settings
from pipeline.database import Database
from pipeline.stages.detect import Change
from pipeline.stages.plan import Plan, PlannedPair
from pipeline.catalog.plugins import Catalog, Plugin
from pipeline.tiers import GB, Need, Tier, first_tier, too_large


def measured_peaks(db: Database) -> dict[tuple[str, str], int]:
    """(model, benchmark) -> the most memory it is known to need: the peak of a finished attempt, or just over
    the request of an attempt that ran out of memory (it needed more than that)."""
    need = case((Attempt.failure_kind.is_(None), Attempt.max_rss_bytes),
                (Attempt.failure_kind == "OOM", Attempt.req_mem_bytes + 1), else_=None)
    with db.sessions() as session:
        rows = session.execute(select(Attempt.model, Attempt.benchmark, func.max(need))
                               .group_by(Attempt.model, Attempt.benchmark)).all()
    return {(m, b): int(n) for m, b, n in rows if n is not None}


def shipped(name: str) -> int:
    """A setting's shipped default: what `Estimates` assumes and what benchmarks/tier_bench.py measures."""
    return next(f.default for f in fields(Settings) if f.name == name)


# what an unseen model (or benchmark) is assumed to need: this share of those measured need no more
QUANTILE = shipped("tier_unseen_percentile") / 100
MARGIN = shipped("tier_margin_percent") / 100


@dataclass
class Estimates:
    """Peaks as the sum of a model's part and a benchmark's fixed cost, learnt from measured pairs.

    A benchmark's fixed cost is the least any model needed on it; a model's part is the most it needed beyond a
    benchmark's fixed cost. Taken raw, "the model's largest benchmark" puts every model on the 70 GB tier once
    one benchmark costs 70 GB by itself (benchmarks/tier_bench.py measures both): the fixed cost is subtracted
    first. The side never measured counts as the `tier_unseen_percentile` of those measured (or its declaration):
    the 75th by default, the leanest that keeps >= 90 % of pairs succeeding on their first attempt in
    benchmarks/tier_bench.py (the 90th asks for ~10 % more GB-hours to save a few retries)."""

    pairs: dict[tuple[str, str], int]
    fixed: dict[str, int]
    model_part: dict[str, int]
    q: float = QUANTILE

    @classmethod
    def learn(cls, peaks: dict[tuple[str, str], int], q: float = QUANTILE) -> "Estimates":
        fixed: dict[str, int] = {}
        for (_, b), n in peaks.items():
            fixed[b] = min(fixed.get(b, n), n)
        part: dict[str, int] = {}
        for (m, b), n in peaks.items():
            part[m] = max(part.get(m, 0), n - fixed[b])
        return cls(peaks, fixed, part, q)

    def estimate(self, model: str, benchmark: str) -> tuple[int | None, str]:
        """(bytes, whose measurement) for a pair; (None, '') when neither plugin was ever measured."""
        own = self.pairs.get((model, benchmark))
        if own is not None:
            return own, "this pair"
        known_m, known_b = model in self.model_part, benchmark in self.fixed
        if not (known_m or known_b):
            return None, ""
        part = self.model_part[model] if known_m else quantile(self.model_part.values(), self.q)
        fixed = self.fixed[benchmark] if known_b else quantile(self.fixed.values(), self.q)
        whose = "its model and its benchmark" if known_m and known_b else "its model" if known_m else "its benchmark"
        return part + fixed, whose


    def explain(self, model: str, benchmark: str) -> str:
        """What `estimate` is made of, in words (the parts and where each comes from); '' when nothing is known."""
        own = self.pairs.get((model, benchmark))
        if own is not None:
            return f"peak {own / GB:.2f} GB of this very pair"
        known_m, known_b = model in self.model_part, benchmark in self.fixed
        if not (known_m or known_b):
            return ""
        pct = f"{self.q:.0%}".replace("%", "th percentile")
        part = (f"its model's part {self.model_part[model] / GB:.2f} GB (the most it needed beyond a benchmark's "
                "fixed cost)" if known_m else
                f"the {pct} of the measured models' parts {quantile(self.model_part.values(), self.q) / GB:.2f} GB "
                "(its model was never measured)")
        fixed = (f"its benchmark's fixed cost {self.fixed[benchmark] / GB:.2f} GB (the least any model needed on it)"
                 if known_b else
                 f"the {pct} of the measured benchmarks' fixed costs {quantile(self.fixed.values(), self.q) / GB:.2f}"
                 " GB (its benchmark was never measured)")
        return f"{part} + {fixed}"


def quantile(values, q: float = QUANTILE) -> int:  # noqa: ANN001 - any iterable of ints
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * (len(ordered) - 1)))] if ordered else 0


def declared(plugin: Plugin, identifier: str) -> Need:
    return plugin.resources.get(identifier) or plugin.resources.get("") or Need()


def assign_tiers(plan: Plan, catalog: Catalog, change: Change, db: Database, tiers: list[Tier],
                 margin: float = MARGIN, q: float = QUANTILE) -> None:
    """Set each pair's `tier` and `tier_why`; pairs whose declaration exceeds every tier leave the plan, and
    the declaring plugin gets the reason as an issue."""
    estimates = Estimates.learn(measured_peaks(db), q)
    models, benchmarks = catalog.by_identifier("models"), catalog.by_identifier("benchmarks")
    refused: set[tuple[str, str]] = set()
    kept: list[PlannedPair] = []
    for pair in plan.to_run:
        sides = ((models[pair.model], pair.model), (benchmarks[pair.benchmark], pair.benchmark))
        refusals = [(plugin, identifier, why) for plugin, identifier in sides
                    if (why := too_large(tiers, declared(plugin, identifier)))]
        for plugin, identifier, why in refusals:
            if plugin.key not in refused:
                refused.add(plugin.key)
                touched = change.base is None or plugin.name in change.changed_plugins.get(plugin.type, [])
                change.issues.append({"file": f"{plugin.path}/metadata.yml", "line": 0,
                                      "severity": "error" if touched else "warning",
                                      "message": f"resources: {identifier} {why}; its pairs are not scored"})
        if refusals:
            continue
        need = declared(*sides[0]).merge(declared(*sides[1]))
        peak, whose = estimates.estimate(pair.model, pair.benchmark)
        tier, why = first_tier(tiers, peak, need, margin, exact=whose == "this pair")
        if why.startswith("measured") and peak is not None:  # say what the estimate is made of
            why = f"measured: {estimates.explain(pair.model, pair.benchmark)} = {peak / GB:.2f} GB, + {margin:.0%} margin"
        pair.tier, pair.tier_why = tier.name, why
        kept.append(pair)
    plan.to_run = kept
