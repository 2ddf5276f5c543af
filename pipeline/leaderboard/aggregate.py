"""Brain-Score's leaderboard arithmetic, as a pure module: leaf values, parent aggregates, ranks.

The rules are those of brain-score.org's materialized views and ranking code (see README, "Aggregates and
ranks"): a leaf is its ceiled score clamped to [0, 1] (an engineering leaf: its raw score); a failed pair is
X; a pair never scored is empty (None). A parent is the equal-weight mean of its direct children, where an
empty or X child counts as 0 as soon as any child has a number; a parent with no numeric child is X if any
child is X, else empty. Ranks go by the domain average rounded half-up to 2 decimals, ties share a rank
(1, 1, 3), X ranks last, a model with no value at all gets none.

One documented difference: a leaf no model has a result for is left out (its node too, if nothing below it
is left), so a new benchmark does not zero every model while it is being scored.
Nothing here reads a database or a file: callers pass plain mappings.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal
from typing import Callable, Iterable, Mapping, Sequence, Union

X = "X"  # a failed pair, and a node whose children have no number but some X
Value = Union[float, str, None]  # a number, X, or None (never scored / empty)


def is_number(value: Value) -> bool:
    return isinstance(value, float)


def leaf_value(score_ceiled: float | None, score_raw: float | None = None, *, engineering: bool = False,
               failed: bool = False) -> Value:
    """A leaf's value for one model: engineering leaves keep their raw score (they have no ceiling), others
    their ceiled score clamped to [0, 1]; NaN or a failure is X; no score is None."""
    if failed:
        return X
    number = score_raw if engineering else score_ceiled
    if number is None:
        return None
    number = float(number)
    if math.isnan(number):
        return X
    return number if engineering else min(max(number, 0.0), 1.0)


def combine(children: Sequence[Value]) -> Value:
    """A parent's value from its direct children's values (equal weights)."""
    numbers = [v for v in children if is_number(v)]
    if numbers:
        return sum(numbers) / len(children)  # an empty or X child counts as 0
    if any(v == X for v in children):
        return X
    return None


def children_of(parents: Mapping[str, str | None]) -> dict[str, list[str]]:
    """node -> its direct children (sorted), from child -> parent."""
    out: dict[str, list[str]] = {}
    for child, parent in parents.items():
        if parent is not None:
            out.setdefault(parent, []).append(child)
    return {k: sorted(v) for k, v in out.items()}


def included_nodes(children: Mapping[str, Sequence[str]], roots: Iterable[str], leaves: Iterable[str]) -> set[str]:
    """The nodes that count: the given leaves, and every node with one of them below it."""
    wanted = set(leaves)
    keep: set[str] = set()

    def visit(node: str, path: frozenset[str]) -> bool:
        if node in path:
            return False  # a cycle adds nothing
        below = [visit(c, path | {node}) for c in children.get(node, ())]
        if node in wanted or any(below):
            keep.add(node)
            return True
        return False

    for root in roots:
        visit(root, frozenset())
    return keep


def aggregate(children: Mapping[str, Sequence[str]], roots: Iterable[str], leaf_values: Mapping[str, Value],
              leaves: Iterable[str]) -> dict[str, Value]:
    """Every counted node's value for one model: `leaves` are the leaves that count (those some model has a
    result for), `leaf_values` this model's values for them (absent: never scored). Nodes with no counted
    leaf below them are left out. A leaf is a node of `leaves`; its own children, if any, are ignored."""
    leaf_set = set(leaves)
    keep = included_nodes(children, roots, leaf_set)
    out: dict[str, Value] = {}

    def value(node: str, path: frozenset[str]) -> Value:
        if node in out:
            return out[node]
        if node in leaf_set:
            result = leaf_values.get(node)
        else:
            kids = [c for c in children.get(node, ()) if c in keep and c not in path]
            result = combine([value(c, path | {node}) for c in kids])
        out[node] = result
        return result

    for root in roots:
        if root in keep:
            value(root, frozenset())
    return out


def rounded(value: Value, places: int = 2) -> Value:
    """The value as brain-score.org shows and ranks it: half-up to `places` decimals (0.195 -> 0.2).

    The float is first read at 9 decimals, so float noise (0.19499999999999998 from 0.28 and 0.11) does not
    turn a half into a half-minus."""
    if not is_number(value):
        return value
    exact = Decimal(repr(value)).quantize(Decimal("1e-9"), rounding=ROUND_HALF_UP)
    return float(exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def rank(averages: Mapping[str, Value], shown: Callable[[float], float] | None = None) -> dict[str, int | None]:
    """Competition ranks (1, 1, 3) by the average as shown (`shown`, default: rounded half-up to 2 decimals),
    highest first; every X shares the last rank after the numbers (index.py 248-283); a model whose average is
    empty gets None."""
    shown = shown or rounded
    numbers = {m: shown(v) for m, v in averages.items() if is_number(v)}  # type: ignore[arg-type]
    ordered = sorted(numbers.values(), reverse=True)
    ranks: dict[str, int | None] = {}
    for model, v in numbers.items():
        ranks[model] = ordered.index(v) + 1
    for model, v in averages.items():
        if v == X:
            ranks[model] = len(numbers) + 1
        elif model not in ranks:
            ranks[model] = None
    return ranks


def coverage(leaf_values: Mapping[str, Value], leaves: Iterable[str]) -> dict[str, int]:
    """How many counted leaves this model has a number for, has failed, has never been scored on."""
    counts = {"scored": 0, "failed": 0, "never_scored": 0, "total": 0}
    for leaf in leaves:
        v = leaf_values.get(leaf)
        counts["total"] += 1
        counts["scored" if is_number(v) else "failed" if v == X else "never_scored"] += 1
    return counts
