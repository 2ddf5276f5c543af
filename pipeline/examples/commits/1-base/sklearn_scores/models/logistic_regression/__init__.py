from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_scores import model_registry

model_registry['logreg'] = lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
