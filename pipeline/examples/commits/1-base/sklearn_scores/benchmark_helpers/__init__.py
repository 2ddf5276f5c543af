"""Shared benchmark code: stratified k-fold cross-validation with a fixed split."""

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold


class CrossValidatedBenchmark:
    """Scores an unfitted scikit-learn estimator by cross-validation on one data set."""

    def __init__(self, identifier, data, metric, folds=5, seed=0, ceiling=1.0):
        self.identifier = identifier
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
        return float(np.mean(values))
