from sklearn import datasets

from sklearn_scores import data_registry

data_registry['digits'] = lambda: datasets.load_digits(return_X_y=True)
data_registry['wine'] = lambda: datasets.load_wine(return_X_y=True)
data_registry['breast_cancer'] = lambda: datasets.load_breast_cancer(return_X_y=True)
data_registry['iris'] = lambda: datasets.load_iris(return_X_y=True)
