from sklearn.dummy import DummyClassifier

from sklearn_scores import load_benchmark


def test_chance_model_scores_between_0_and_1():
    score = load_benchmark('breast_cancer-balanced_accuracy')(DummyClassifier(strategy='most_frequent'))
    assert 0 <= score <= 1
