from sklearn.ensemble import RandomForestClassifier

from sklearn_scores import model_registry

model_registry['random-forest'] = lambda: RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1)
