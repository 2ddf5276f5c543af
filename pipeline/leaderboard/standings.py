"""The leaderboard by model, as brain-score.org computes it: each domain's tree (pipeline/hierarchy), each
model's leaf values from the database (newest score on the benchmark's latest version; X when its newest
job failed through the plugin's fault), aggregates and ranks (pipeline/aggregate)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from db.queries import benchmark_tree_rows, latest_version_scores, newest_job_states
from db.states import State
from pipeline.leaderboard import aggregate as agg
from pipeline.database import Database
from pipeline.leaderboard.hierarchy import Tree, hierarchy_for, load_hierarchies

# A pair that ended in one of these did not fail through its plugins: it counts as never scored (and
# `plan --backfill` takes it again), not as X.
INFRASTRUCTURE_ENDS = (State.NODE_FAIL, State.PREEMPTED, State.LOST, State.CANCELLED, State.INFRA_FAIL)


@dataclass
class DomainBoard:
    domain: str
    tree: Tree
    leaves: list[str]  # the leaves that count: some model has a result for them
    nodes: list[str]  # every counted node, depth-first from the roots (the page's column order)
    models: list[dict] = field(default_factory=list)


Pair = tuple[str, str]  # (model, benchmark)


def _results(db: Database) -> tuple[list[tuple], dict[Pair, tuple[float | None, float | None]], set[Pair]]:
    """Benchmark types, each pair's newest score of the latest version (ceiled, raw), and the pairs without one
    whose newest job failed through its plugins."""
    with db.sessions() as session:
        types = benchmark_tree_rows(session)
        scores = {(m, b): (ceiled, raw) for m, _, b, ceiled, raw, _ in latest_version_scores(session)}
        jobs = newest_job_states(session)
    failed = {pair for pair, (state, _, _) in jobs.items() if pair not in scores and state != State.COMPLETED
              and state not in INFRASTRUCTURE_ENDS}
    return types, scores, failed


def standings(db: Database, hierarchy_file: Path | None = None) -> list[DomainBoard]:
    """One board per domain that has benchmarks, each with its models ranked."""
    hierarchies = load_hierarchies(hierarchy_file)
    types, scores, failed = _results(db)
    by_domain: dict[str, list[tuple]] = {}
    for identifier, domain, parent, note, _ in types:
        by_domain.setdefault(domain, []).append((identifier, parent, note))
    boards = []
    for domain, rows in sorted(by_domain.items()):
        tree = hierarchy_for(domain, hierarchies).tree({i: p for i, p, _ in rows}, {i: n for i, _, n in rows})
        leaf_ids = {i for i, _, _ in rows}
        per_model: dict[str, dict[str, agg.Value]] = {}
        for (model, benchmark), (ceiled, raw) in scores.items():
            if benchmark in leaf_ids:
                per_model.setdefault(model, {})[benchmark] = agg.leaf_value(
                    ceiled, raw, engineering=benchmark in tree.engineering)
        for model, benchmark in failed:
            if benchmark in leaf_ids:
                per_model.setdefault(model, {})[benchmark] = agg.X
        counted = sorted({b for vals in per_model.values() for b, v in vals.items() if v is not None})
        children = tree.children()
        keep = agg.included_nodes(children, tree.roots, counted)
        nodes: list[str] = []

        def walk(node: str) -> None:
            if node in keep and node not in nodes:
                nodes.append(node)
                for child in children.get(node, ()):
                    if node not in tree.leaves:
                        walk(child)

        for root in tree.roots:
            walk(root)
        board = DomainBoard(domain, tree, counted, nodes)
        results = {}
        for model, vals in per_model.items():
            if not any(v is not None for v in vals.values()):
                continue  # no score at all in this domain: not listed
            results[model] = agg.aggregate(children, tree.roots, vals, counted)
        ranks = agg.rank({m: values.get(tree.average) if tree.average else None for m, values in results.items()})
        for model, values in results.items():
            vals = per_model[model]
            board.models.append({
                "model": model, "domain": domain, "rank": ranks.get(model),
                "average": _out(agg.rounded(values.get(tree.average))) if tree.average else None,
                "aggregates": {n: _out(values.get(n)) for n in nodes},
                "coverage": agg.coverage(vals, counted),
                "never_scored": [b for b in counted if vals.get(b) is None],
                "failed": [b for b in counted if vals.get(b) == agg.X],
            })
        board.models.sort(key=lambda r: (r["rank"] is None, r["rank"] or 0, r["model"]))
        boards.append(board)
    return boards


def _out(value: agg.Value) -> agg.Value:
    """A value as JSON shows it: numbers to 6 decimals (no float noise like 0.30000000000000004)."""
    return round(value, 6) if agg.is_number(value) else value


def standing_of(boards: list[DomainBoard]) -> dict[str, dict]:
    """model -> what its submitter hears: the domain average and its name, rank among how many, coverage and
    what is still missing or failed."""
    out = {}
    for board in boards:
        for row in board.models:
            out[row["model"]] = {"model": row["model"], "node": board.tree.average, "average": row["average"],
                                 "rank": row["rank"], "ranked": sum(1 for r in board.models if r["rank"]),
                                 "coverage": row["coverage"], "never_scored": row["never_scored"],
                                 "failed": row["failed"]}
    return out


def model_rows(boards: list[DomainBoard]) -> list[dict]:
    """`leaderboard --view models --format json`: one object per model, every domain."""
    return [row for board in boards for row in board.models]
