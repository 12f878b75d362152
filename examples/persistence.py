"""Saving and loading fitted models with pickle and joblib.

A fitted MixedLinearRegressor, or a Pipeline ending in one, round-trips through
pickle and joblib with identical predictions (and keeps its metadata requests).
Load only files you trust: unpickling runs code.

Run: python examples/persistence.py
"""

import pickle
import tempfile
from pathlib import Path

import joblib
import numpy as np
import sklearn
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sklmm import MixedLinearRegressor
from sklmm.datasets import load_sleepstudy

sklearn.set_config(enable_metadata_routing=True)

X, y, groups = load_sleepstudy(return_X_y_groups=True)
subject = groups
model = MixedLinearRegressor(random_effects="(1 + Days | Subject)")
model.set_fit_request(groups=True).set_predict_request(groups=True)
pipe = Pipeline([("scale", StandardScaler()), ("model", model)]).set_output(transform="pandas")
pipe.fit(X, y, groups=subject)

with tempfile.TemporaryDirectory() as folder:
    joblib_path = Path(folder) / "sleepstudy_pipeline.joblib"
    joblib.dump(pipe, joblib_path)
    from_joblib = joblib.load(joblib_path)

    pickle_path = Path(folder) / "sleepstudy_pipeline.pkl"
    with open(pickle_path, "wb") as handle:
        pickle.dump(pipe, handle)
    with open(pickle_path, "rb") as handle:
        from_pickle = pickle.load(handle)

for loaded in (from_joblib, from_pickle):
    assert np.array_equal(loaded.predict(X, groups=subject), pipe.predict(X, groups=subject))
    assert np.array_equal(loaded.predict(X), pipe.predict(X))
    assert loaded[-1].random_effects_["Subject"].equals(pipe[-1].random_effects_["Subject"])
print("pickle and joblib round-trips give identical predictions:",
      from_joblib.predict(X.head(2), groups=subject.head(2)))
