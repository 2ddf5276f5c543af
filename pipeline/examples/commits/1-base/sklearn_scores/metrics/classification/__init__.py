from sklearn import metrics

from sklearn_scores import metric_registry

metric_registry['accuracy'] = lambda: metrics.accuracy_score
metric_registry['balanced_accuracy'] = lambda: metrics.balanced_accuracy_score
