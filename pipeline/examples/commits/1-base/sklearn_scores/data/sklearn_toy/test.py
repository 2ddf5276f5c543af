from sklearn_scores import load_dataset


def test_digits_shape():
    features, labels = load_dataset('digits')
    assert features.shape == (1797, 64)
    assert len(labels) == 1797
