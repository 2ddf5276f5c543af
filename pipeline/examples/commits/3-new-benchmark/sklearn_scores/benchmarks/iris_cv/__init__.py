from sklearn_scores import benchmark_registry, load_dataset, load_metric
from sklearn_scores.benchmark_helpers import CrossValidatedBenchmark

benchmark_registry['iris-accuracy'] = lambda: CrossValidatedBenchmark(
    'iris-accuracy',
    data=lambda: load_dataset('iris'),
    metric=lambda: load_metric('accuracy'),
    folds=5,
    seed=0,
    parent='multiclass',  # the leaderboard's tree: average_sklearn_scores > multiclass > this benchmark
    version=1,
)
