from sklearn_scores import load_model


def test_model_is_an_unfitted_estimator():
    model = load_model('knn-5')
    assert hasattr(model, 'fit') and hasattr(model, 'predict')
