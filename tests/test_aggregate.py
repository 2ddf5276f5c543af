"""Brain-Score's leaderboard arithmetic (pipeline/leaderboard/aggregate.py): the issue's examples as golden cases, taken
from Brain-Score's own tests and data, and properties that hold for any tree and any scores."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from pipeline.leaderboard.aggregate import X, aggregate, children_of, combine, coverage, leaf_value, rank, rounded

VISION = {"average_vision": None, "neural_vision": "average_vision", "behavior_vision": "average_vision",
          "V1": "neural_vision", "IT": "neural_vision", "engineering_vision": None,
          "a": "V1", "b": "V1", "c": "IT", "d": "behavior_vision", "e": "behavior_vision", "f": "engineering_vision"}
ROOTS = ["average_vision", "engineering_vision"]


def test_group_of_two_leaves():
    tree = {"average_vision": None, "group": "average_vision", "x": "group", "y": "group"}
    values = aggregate(children_of(tree), ["average_vision"], {"x": 0.9, "y": 0.5}, ["x", "y"])
    assert values["group"] == 0.7 and values["average_vision"] == 0.7


def test_domain_average_leaves_engineering_out():
    tree = {"average_vision": None, "neural_vision": "average_vision", "behavior_vision": "average_vision",
            "engineering_vision": None}
    values = aggregate(children_of(tree), ROOTS, {"neural_vision": 0.33, "behavior_vision": 0.53,
                                                  "engineering_vision": 0.63},
                       ["neural_vision", "behavior_vision", "engineering_vision"])
    assert round(values["average_vision"], 10) == 0.43 and values["engineering_vision"] == 0.63


def test_half_up_rounding_and_ranking():
    tree = {"average_vision": None, "neural_vision": "average_vision", "behavior_vision": "average_vision"}
    values = aggregate(children_of(tree), ["average_vision"], {"neural_vision": 0.28, "behavior_vision": 0.11},
                       ["neural_vision", "behavior_vision"])
    assert abs(values["average_vision"] - 0.195) < 1e-12
    assert rounded(values["average_vision"]) == 0.20
    assert rounded(0.185) == 0.19 and rounded(0.125) == 0.13 and rounded(X) == X  # half-up, not half-even
    # 0.195 ranks as 0.20: level with a model at 0.2, ahead of one at 0.199 -> 0.20 too; 0.194 is third
    assert rank({"m": values["average_vision"], "n": 0.2, "o": 0.199, "p": 0.194}) == {"m": 1, "n": 1, "o": 1,
                                                                                       "p": 4}


def test_tree_with_missing_and_failed_leaves():
    leaves = {"a": 0.6, "c": 0.4, "d": 0.5, "e": X, "f": 0.7}  # b never scored
    values = aggregate(children_of(VISION), ROOTS, leaves, list("abcdef"))
    assert values["b"] is None and values["e"] == X
    assert round(values["V1"], 10) == 0.30 and round(values["IT"], 10) == 0.40
    assert round(values["neural_vision"], 10) == 0.35 and round(values["behavior_vision"], 10) == 0.25
    assert round(values["average_vision"], 10) == 0.30 and values["engineering_vision"] == 0.70


def test_tree_with_a_whole_region_never_scored():
    values = aggregate(children_of(VISION), ROOTS, {"c": 0.4, "d": 0.5, "e": X, "f": 0.7}, list("abcdef"))
    assert values["V1"] is None and round(values["neural_vision"], 10) == 0.20


def test_parent_of_failures_and_empties():
    assert combine([X, None]) == X and combine([None, None]) is None and combine([X, X]) == X
    assert combine([X, 0.8]) == 0.4 and combine([None, 0.8]) == 0.4


def test_leaf_values():
    assert leaf_value(1.3) == 1.0 and leaf_value(-0.2) == 0.0 and leaf_value(None) is None
    assert leaf_value(float("nan")) == X and leaf_value(0.5, failed=True) == X
    assert leaf_value(0.5, 73.2, engineering=True) == 73.2  # engineering: raw, no ceiling, no clamp


def test_a_leaf_nobody_scored_stays_out():
    """The documented difference: a new leaf with no result for any model neither zeroes V1 nor is listed."""
    values = aggregate(children_of(VISION), ROOTS, {"a": 0.6, "c": 0.4}, ["a", "c"])
    assert values["V1"] == 0.6 and "b" not in values and "behavior_vision" not in values
    assert values["average_vision"] == values["neural_vision"] == 0.5


def test_ranks_ties_failures_and_empties():
    assert rank({"a": 0.5, "b": 0.5, "c": 0.3, "d": X, "e": X, "f": None}) == {
        "a": 1, "b": 1, "c": 3, "d": 4, "e": 4, "f": None}
    assert rank({"a": 0.304, "b": 0.3}) == {"a": 1, "b": 1}  # ranked by what is shown


def test_coverage_counts():
    assert coverage({"a": 0.6, "e": X}, list("abe")) == {"scored": 1, "failed": 1, "never_scored": 1, "total": 3}


# --- properties -----------------------------------------------------------------------------------------

leaf_values = st.one_of(st.floats(0.0, 1.0), st.just(X), st.none())


@st.composite
def trees(draw):
    """A random tree: nodes n0..nk, each node's parent an earlier node; the nodes without children are leaves."""
    size = draw(st.integers(2, 14))
    parents = {"n0": None}
    for i in range(1, size):
        parents[f"n{i}"] = f"n{draw(st.integers(0, i - 1))}"
    kids = children_of(parents)
    leaves = [n for n in parents if n not in kids]
    values = {leaf: draw(leaf_values) for leaf in leaves}
    return parents, kids, leaves, values


@settings(max_examples=300, deadline=None)
@given(trees())
def test_a_parent_lies_between_zero_and_its_largest_child(tree):
    parents, kids, leaves, values = tree
    out = aggregate(kids, ["n0"], values, leaves)
    for node, children in kids.items():
        numbers = [out[c] for c in children if isinstance(out.get(c), float)]
        if numbers:
            assert 0.0 <= out[node] <= max(numbers) + 1e-12
        else:
            assert out[node] in (X, None)


@settings(max_examples=300, deadline=None)
@given(trees(), st.data())
def test_adding_a_score_never_lowers_a_parent_whose_other_children_are_numeric(tree, data):
    parents, kids, leaves, values = tree
    leaf = data.draw(st.sampled_from(leaves))
    parent = parents[leaf]
    siblings = [c for c in kids[parent] if c != leaf]
    # the other children are unchanged and numeric: make them numeric leaves
    for s in siblings:
        if s in values:
            values[s] = data.draw(st.floats(0.0, 1.0))
    if any(s not in values for s in siblings):
        return  # a sibling is an inner node: its value is not set directly
    before = dict(values)
    before[leaf] = data.draw(st.one_of(st.none(), st.just(X)))
    after = dict(values)
    after[leaf] = data.draw(st.floats(0.0, 1.0))
    low = aggregate(kids, ["n0"], before, leaves)[parent]
    high = aggregate(kids, ["n0"], after, leaves)[parent]
    if siblings:
        assert high >= low - 1e-12
    else:
        assert isinstance(high, float) and low in (X, None)
