"""The leaderboard by model: each domain's tree (pipeline/leaderboard/hierarchy), each model's leaf values from
the database, aggregates and ranks (pipeline/leaderboard/aggregate), under the domain's rules
(pipeline/leaderboard/rules: brain-score.org's or a lab's). Which score of a pair counts, which benchmark types and
models are shown, which models are listed and how values round all follow those rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from db.queries import benchmark_tree_rows, latest_version_score_rows, model_flags, newest_job_states
from db.states import State
from pipeline.database import Database
from pipeline.leaderboard import aggregate as agg
from pipeline.leaderboard.hierarchy import Tree, hierarchy_for, load_hierarchies
from pipeline.leaderboard.rules import Rules, shown

# A pair that ended in one of these did not fail through its plugins: it counts as never scored (and
# `plan --backfill` takes it again), not as X.
INFRASTRUCTURE_ENDS = (State.NODE_FAIL, State.PREEMPTED, State.LOST, State.CANCELLED, State.INFRA_FAIL)
AUDIENCES = ("all", "public")  # all: an admin's board (brain-score.org's superuser view); public: a visitor's


@dataclass
class DomainBoard:
    domain: str
    tree: Tree
    leaves: list[str]  # the leaves that count in the averages
    nodes: list[str]  # every node shown, depth-first from the roots (the page's column order)
    rules: Rules | None = None
    models: list[dict] = field(default_factory=list)
    hidden: set[str] = field(default_factory=set)  # leaves and nodes not shown to the public; hidden leaves count in
    # no average
    names: dict[str, list[str]] = field(default_factory=dict)  # board identifier -> registry names


Pair = tuple[str, str]  # (model, benchmark)


def _pick(rows: list[tuple], rule: str) -> tuple:
    """The score of a pair that counts: the highest raw score, whatever its date (mv.sql 336-341: a number
    before none, then highest; the newer of equal ones), or the newest."""
    def when(row: tuple) -> tuple:
        return (0, row[5]) if row[4] is None else (1, row[4], row[5])

    if rule == "highest_raw":
        return max(rows, key=lambda r: (r[3] is not None, r[3] if r[3] is not None else 0.0, when(r)))
    return max(rows, key=when)


def standings(db: Database, hierarchy_file: Path | None = None, rules: str | None = None,
              audience: str = "all") -> list[DomainBoard]:
    """One board per domain that has benchmarks, each with its models ranked. `rules` names a preset for every
    domain (default: each hierarchy's own); `audience` 'public' keeps public models and shown benchmarks only."""
    hierarchies = load_hierarchies(hierarchy_file)
    with db.sessions() as session:
        types = benchmark_tree_rows(session)
        score_rows = latest_version_score_rows(session)
        jobs = newest_job_states(session)
        flags = model_flags(session)
    by_domain: dict[str, list[tuple]] = {}
    for row in types:
        by_domain.setdefault(row[1], []).append(row)
    scored_pairs = {(m, b) for m, b, *_ in score_rows}
    failed = {pair for pair, (state, _, _) in jobs.items() if pair not in scored_pairs
              and state != State.COMPLETED and state not in INFRASTRUCTURE_ENDS}
    boards = []
    for domain, rows in sorted(by_domain.items()):
        hierarchy = hierarchy_for(domain, hierarchies)
        board_rules = hierarchy.rules(rules)
        key_of: dict[str, str] = {}
        names: dict[str, list[str]] = {}
        declared: dict[str, str | None] = {}
        notes: dict[str, str | None] = {}
        explicit: dict[str, bool] = {}
        for identifier, _, parent, note, _, runtime, visible in rows:
            key = runtime if board_rules.identifiers == "runtime" and runtime else identifier
            key_of[identifier] = key
            names.setdefault(key, []).append(identifier)
            if declared.get(key) is None:
                declared[key], notes[key] = parent, note
            if visible is not None:
                explicit[key] = explicit.get(key, False) or visible
        aka = {key: next((n for n in ids if n != key), "") for key, ids in names.items()}
        tree = hierarchy.tree(declared, notes, aka)
        hidden = set()
        for key in declared:
            if key in explicit:
                show = explicit[key]
            else:
                named = hierarchy.shown(key, *names[key])
                show = named if named is not None else board_rules.new_types == "shown"
            if not show:
                hidden.add(key)
        hidden |= {n for n in tree.parents if n not in declared and hierarchy.shown(n) is False}

        own = [m for m in {m for m, _ in scored_pairs | failed}
               if board_rules.other_domains or flags.get(m, (domain, True))[0] in (domain, "")]
        if audience == "public":
            own = [m for m in own if flags.get(m, ("", True))[1]]
        wanted = set(own)
        picked: dict[Pair, list[tuple]] = {}
        for row in score_rows:
            if row[0] in wanted and row[1] in key_of:
                picked.setdefault((row[0], key_of[row[1]]), []).append(row)
        per_model: dict[str, dict[str, agg.Value]] = {}
        for (model, key), candidates in picked.items():
            _, _, ceiled, raw, _, _ = _pick(candidates, board_rules.leaf)
            per_model.setdefault(model, {})[key] = agg.leaf_value(ceiled, raw, engineering=key in tree.engineering)
        for model, benchmark in failed:
            if model in wanted and benchmark in key_of and key_of[benchmark] not in per_model.get(model, {}):
                per_model.setdefault(model, {})[key_of[benchmark]] = agg.X

        leaf_keys = [k for k in declared if k not in hidden]
        if board_rules.unscored == "drop":
            counted = sorted({b for vals in per_model.values() for b, v in vals.items()
                              if v is not None and b not in hidden})
        else:
            counted = sorted(leaf_keys)
        shown_hidden = set() if audience == "public" else {
            b for vals in per_model.values() for b, v in vals.items() if v is not None and b in hidden}
        children = tree.children()
        keep = agg.included_nodes(children, tree.roots, set(counted) | shown_hidden)
        if audience == "public":
            keep -= hidden
        nodes: list[str] = []

        def walk(node: str) -> None:
            if node in keep and node not in nodes:
                nodes.append(node)
                for child in children.get(node, ()):
                    if node not in tree.leaves:
                        walk(child)

        for root in tree.roots:
            walk(root)
        board = DomainBoard(domain, tree, counted, nodes, board_rules, hidden=hidden & set(nodes), names=names)
        results = {}
        for model, vals in per_model.items():
            if not any(v is not None for v in vals.values()):
                continue  # no score at all in this domain: not listed
            values = agg.aggregate(children, tree.roots, {b: v for b, v in vals.items() if b not in hidden}, counted)
            values.update({b: v for b, v in vals.items() if b in shown_hidden})
            average = values.get(tree.average) if tree.average else None
            if average is None and not board_rules.list_without_average:
                continue  # no domain average: brain-score.org does not list it (index.py 227-231)
            results[model] = values
        ranks = agg.rank({m: values.get(tree.average) if tree.average else None for m, values in results.items()},
                         lambda v: shown(v, board_rules))
        for model, values in results.items():
            vals = {b: v for b, v in per_model[model].items() if b not in hidden}
            average = values.get(tree.average) if tree.average else None
            board.models.append({
                "model": model, "domain": domain, "rank": ranks.get(model),
                "average": _out(shown(average, board_rules)) if agg.is_number(average) else average,
                "public": flags.get(model, ("", True))[1],
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
