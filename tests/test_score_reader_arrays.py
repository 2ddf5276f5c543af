"""The score reader (pipeline/job/score_reader.py) on real xarray and numpy values, the shapes brainscore-core's
Score takes (a DataArray subclass): the old `aggregation` coordinate with a center and an error, a 0-d Score with
attrs, a raw score with one value per split. Fast (no service, no subprocess): one of scripts/mutation's runners.
"""

from __future__ import annotations

import math

import numpy
import pytest
import xarray

from pipeline.job.score_reader import MAX_RAW_VALUES, read_score
from pipeline.job.spool import StageError


def score(value: object, dims: tuple[str, ...] = (), coords: dict | None = None, **attrs) -> xarray.DataArray:
    return xarray.DataArray(value, dims=dims, coords=coords, attrs=attrs)


def refused(value: object, ceiling: object = None) -> str:
    with pytest.raises(StageError) as caught:
        read_score(value, benchmark_ceiling=ceiling)
    assert caught.value.stage == "score"
    return caught.value.reason


def test_the_aggregation_dimension_gives_the_center_and_the_error():
    """The old Score shape: `aggregation` a dimension of center and error. The selected error keeps `aggregation`
    as a scalar coordinate; it is read as the number it is (an earlier reader looked for the coordinate, selected
    again, and dropped every such error bar)."""
    old_style = score([0.6, 0.05], ("aggregation",), {"aggregation": ["center", "error"]})
    got = read_score(old_style)
    assert (got["score_ceiled"], got["score_raw"], got["raw_values"], got["error"]) == (0.6, 0.6, None, 0.05)
    # `aggregation` as a coordinate along another dimension, and as a level of its index: brainscore-core selects
    # the center there too (never the mean of center and error)
    along = score([0.4, 0.05], ("x",), {"aggregation": ("x", ["center", "error"])})
    assert (read_score(along)["score_ceiled"], read_score(along)["error"]) == (0.4, 0.05)
    levels = score([0.4, 0.05], ("x",), {"aggregation": ("x", ["center", "error"]), "split": ("x", [0, 0])}
                   ).set_index(x=["aggregation", "split"])
    assert (read_score(levels)["score_ceiled"], read_score(levels)["error"]) == (0.4, 0.05)
    # a Score whose center was already selected keeps `aggregation` as a 0-d coordinate: the number it holds
    assert read_score(old_style.sel(aggregation="center"))["score_ceiled"] == 0.6
    assert read_score(score([0.7], ("aggregation",), {"aggregation": ["center"]}))["score_ceiled"] == 0.7
    with pytest.raises(KeyError):  # a coordinate without a center is not a score (the job records the failure)
        read_score(score([0.1, 0.2], ("aggregation",), {"aggregation": ["low", "high"]}))


def test_a_0d_score_is_read_through_item_with_its_attrs():
    plain = score(0.4, raw=score(0.3), ceiling=score(0.75), error=score(0.02))
    got = read_score(plain, benchmark_ceiling=0.9)
    assert (got["score_ceiled"], got["score_raw"], got["ceiling"], got["error"], got["raw_values"]) == (
        0.4, 0.3, 0.75, 0.02, None)  # a 0-d raw has no values to keep
    assert read_score(numpy.float32(0.25))["score_ceiled"] == 0.25  # a numpy scalar, not a float subclass
    assert read_score(numpy.array(0.5))["score_ceiled"] == 0.5
    assert refused(score(True)) == "the score the benchmark returned is bool 'True', not a number"
    assert refused(score(math.inf)) == "the score the benchmark returned is inf, not a finite number"
    assert refused(0.5, score(-1.0)) == "benchmark ceiling -1.0 is not a positive number"


def test_an_array_score_is_its_mean_ignoring_nan_and_must_hold_numbers():
    assert read_score(score([0.2, 0.4, math.nan], ("split",)))["score_ceiled"] == pytest.approx(0.3)
    assert read_score(score([0.2, 0.6], ("split",)))["score_ceiled"] == pytest.approx(0.4)  # two values
    assert read_score(score(numpy.array([0.2, None, 0.4], dtype=object), ("split",)))["score_ceiled"] == \
        pytest.approx(0.3)  # Python objects read as floats (None is missing)
    assert read_score(score([[0.1, 0.3], [0.5, 0.7]], ("split", "neuroid")))["score_ceiled"] == pytest.approx(0.4)
    with pytest.raises(ValueError):  # text is not a score: numpy refuses to read it as numbers
        read_score(score(["a", "b"], ("split",)))


def test_an_array_raw_keeps_its_values_capped_with_nan_as_none():
    raw = score([0.1, math.nan, 0.3], ("split",))
    got = read_score(score(0.2, raw=raw))
    assert got["score_raw"] == pytest.approx(0.2) and got["raw_values"] == [0.1, None, 0.3]
    assert read_score(score(0.2, raw=score([0.1, 0.3], ("split",))))["raw_values"] == [0.1, 0.3]
    assert read_score(score(0.2, raw=score(numpy.array([0.1, None], dtype=object), ("split",))))["raw_values"] == \
        [0.1, None]
    many = read_score(score(0.5, raw=score(numpy.linspace(0, 1, MAX_RAW_VALUES + 500), ("split",))))
    assert len(many["raw_values"]) == MAX_RAW_VALUES and many["raw_values"][:2] == [0.0, pytest.approx(1 / 1499)]
    assert read_score(score(0.5, raw=score(0.5)))["raw_values"] is None


def test_a_score_like_object_without_xarray_coordinates_is_read_as_its_number():
    """A plugin's own Score-like class: `coords` that is not a mapping, or an `aggregation` entry that is not an
    array, is no aggregation dimension; the value is read through `item()`."""

    class ListCoords:
        coords = ["aggregation"]
        size = 1

        def item(self) -> float:
            return 0.3

    class PlainCoords(ListCoords):
        coords = {"aggregation": "center"}

    assert read_score(ListCoords())["score_ceiled"] == 0.3
    assert read_score(PlainCoords())["score_ceiled"] == 0.3
