from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_scores import model_registry

model_registry['knn-5'] = lambda: make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=5))
