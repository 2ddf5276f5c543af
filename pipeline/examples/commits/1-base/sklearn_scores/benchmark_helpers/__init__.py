"""Shared benchmark code: stratified k-fold cross-validation with a fixed split.

Scores follow Brain-Score's semantics: a benchmark returns the *ceiled* score, with the
raw score and the ceiling in its `attrs` (brainscore-core's `Score` is an xarray
DataArray; this small float stands in for it, so the examples need only scikit-learn).
"""

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold


class Score(float):
    """A number with Brain-Score's attrs: `raw` (unceiled score) and `ceiling`."""

    def __new__(cls, value, **attrs):
        score = super().__new__(cls, value)
        score.attrs = dict(attrs)
        return score


def ceil_score(raw, ceiling):
    """As brainscore-core's `ceil_score`: the ceiled score, keeping the raw score and the ceiling."""
    return Score(raw / ceiling, raw=raw, ceiling=ceiling)


class CrossValidatedBenchmark:
    """Scores an unfitted scikit-learn estimator by cross-validation on one data set.

    `parent` is where the benchmark hangs on the leaderboard and `version` its version, as in Brain-Score's
    `BenchmarkBase(identifier, version, parent=...)`: score-plugins reads both from this call without running it.
    """

    def __init__(self, identifier, data, metric, folds=5, seed=0, ceiling=1.0, parent=None, version=1):
        self.identifier = identifier
        self.parent = parent
        self.version = version
        self._data = data
        self._metric = metric
        self.folds = folds
        self.seed = seed
        self.ceiling = ceiling

    def __call__(self, model):
        features, labels = self._data()
        metric = self._metric()
        splitter = StratifiedKFold(n_splits=self.folds, shuffle=True, random_state=self.seed)
        values = []
        for train, test in splitter.split(features, labels):
            estimator = clone(model)
            estimator.fit(features[train], labels[train])
            values.append(metric(labels[test], estimator.predict(features[test])))
        return ceil_score(float(np.mean(values)), self.ceiling)
