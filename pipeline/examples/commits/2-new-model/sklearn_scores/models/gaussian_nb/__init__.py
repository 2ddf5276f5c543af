from sklearn.naive_bayes import GaussianNB

from sklearn_scores import model_registry

model_registry['gaussian-nb'] = lambda: GaussianNB()
