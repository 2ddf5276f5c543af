from sklearn_scores import load_metric


def test_accuracy_of_perfect_prediction():
    assert load_metric('accuracy')([0, 1, 1], [0, 1, 1]) == 1.0
