from sklearn_scores import benchmark_registry, load_dataset, load_metric
from sklearn_scores.benchmark_helpers import CrossValidatedBenchmark

benchmark_registry['wine-accuracy'] = lambda: CrossValidatedBenchmark(
    'wine-accuracy',
    data=lambda: load_dataset('wine'),
    metric=lambda: load_metric('accuracy'),
    folds=5,
    seed=0,
    parent='multiclass',  # the leaderboard's tree: average_sklearn_scores > multiclass > this benchmark
    version=1,
)
