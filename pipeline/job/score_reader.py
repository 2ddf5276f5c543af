"""Reading a benchmark's Score the way brainscore-core does: its center, error and raw values, refused when they
are not finite numbers."""

from __future__ import annotations

import math
import numbers

from .spool import StageError


MAX_RAW_VALUES = 1000


def _aggregated(value: object) -> bool:
    """Whether the value has `aggregation` along a dimension (its own, a coordinate of another, or a level of
    its index): what brainscore-core selects `center` from. A value already selected keeps `aggregation` as a 0-d
    coordinate and is read as the number it is."""
    coords = getattr(value, "coords", None)
    coord = coords.get("aggregation") if coords is not None and hasattr(coords, "get") else None
    return coord is not None and getattr(coord, "ndim", 0) > 0


def _center(value: object, what: str) -> float:
    """The one number a Score stands for, the way brainscore-core reads it (`_retrieve_score_center`):
    `aggregation='center'` when that dimension exists, else the scalar; a non-scalar raw is averaged."""
    if _aggregated(value):
        value = value.sel(aggregation="center")  # type: ignore[union-attr]
    size = getattr(value, "size", None)
    if isinstance(size, int) and size > 1 and hasattr(value, "values"):
        import numpy

        value = float(numpy.nanmean(numpy.asarray(value.values, dtype=float)))  # type: ignore[union-attr]
    elif hasattr(value, "item") and callable(value.item) and size in (None, 1) and not isinstance(value, float):
        value = value.item()  # numpy scalars, 0-d arrays and 0-d Scores
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise StageError("score", f"{what} is {type(value).__name__} {str(value)[:80]!r}, not a number")
    number = float(value)
    if not math.isfinite(number):
        raise StageError("score", f"{what} is {number}, not a finite number")
    return number


def _error(value: object) -> float | None:
    try:
        if _aggregated(value):
            return _center(value.sel(aggregation="error"), "score error")  # type: ignore[union-attr]
        attrs = getattr(value, "attrs", None) or {}
        return _center(attrs["error"], "score error") if "error" in attrs else None
    except (StageError, KeyError, ValueError, TypeError):
        return None  # the error bar is informative only; a bad one is dropped, not fatal


def _raw_values(raw: object) -> list[float] | None:
    """A non-scalar raw score's values (capped), kept next to its aggregate."""
    size = getattr(raw, "size", None)
    if not (isinstance(size, int) and size > 1 and hasattr(raw, "values")):
        return None
    try:
        import numpy

        flat = numpy.asarray(raw.values, dtype=float).ravel()[:MAX_RAW_VALUES]  # type: ignore[union-attr]
        return [float(v) if math.isfinite(v) else None for v in flat]  # type: ignore[misc]
    except (TypeError, ValueError):
        return None


def read_score(value: object, benchmark_ceiling: object = None) -> dict:
    """What a benchmark returned, read with Brain-Score's semantics.

    The returned value is the leaderboard score, already ceiled (brainscore-core's `ceil_score`);
    `attrs['raw']` holds the unceiled score and `attrs['ceiling']` the ceiling when present. A plain
    number is its own raw score. The benchmark's `ceiling` property is recorded when the Score does
    not carry one, and never divides the score again.
    """
    if value is None or isinstance(value, (str, bytes, list, tuple, dict, set)):
        raise StageError("score", f"benchmark returned {type(value).__name__} {str(value)[:80]!r}, not a number "
                         "or a Score")
    score = _center(value, "the score the benchmark returned")
    attrs = getattr(value, "attrs", None)
    attrs = attrs if isinstance(attrs, dict) else {}
    raw = _center(attrs["raw"], "the score's attrs['raw']") if "raw" in attrs else score
    ceiling_source = attrs["ceiling"] if "ceiling" in attrs else benchmark_ceiling
    ceiling = None
    if ceiling_source is not None:
        ceiling = _center(ceiling_source, "the benchmark ceiling")
        if ceiling <= 0:
            raise StageError("score", f"benchmark ceiling {ceiling} is not a positive number")
    if not -1e-9 <= score <= 1 + 1e-9:
        raise StageError("score", f"score {score} is outside [0, 1]")
    return {"score_ceiled": min(max(score, 0.0), 1.0), "score_raw": raw, "ceiling": ceiling,
            "error": _error(value), "raw_values": _raw_values(attrs.get("raw"))}
