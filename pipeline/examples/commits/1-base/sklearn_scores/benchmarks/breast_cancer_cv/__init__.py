from sklearn_scores import benchmark_registry, load_dataset, load_metric
from sklearn_scores.benchmark_helpers import CrossValidatedBenchmark

benchmark_registry['breast_cancer-balanced_accuracy'] = lambda: CrossValidatedBenchmark(
    'breast_cancer-balanced_accuracy',
    data=lambda: load_dataset('breast_cancer'),
    metric=lambda: load_metric('balanced_accuracy'),
    folds=5,
    seed=0,
    parent='binary',  # the leaderboard's tree: average_sklearn_scores > binary > this benchmark
    version=1,
)
