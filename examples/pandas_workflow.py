"""pandas in, pandas out.

* X as a DataFrame: random slopes are named by column (``feature_names_in_``).
* groups as a Series (the factor is named after it), a DataFrame (one column per
  factor), strings, integers or categoricals.
* Results are DataFrames indexed by level labels and term names.
* Pipelines keep column names with ``set_output(transform="pandas")``; a
  ColumnTransformer prefixes them ("num__Days") unless
  ``verbose_feature_names_out=False``; with array output the slopes are x0, x1, ...

Run: python examples/pandas_workflow.py
"""

import numpy as np
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sklmm import MixedLinearRegressor
from sklmm.datasets import load_gasoline, load_penicillin, load_sleepstudy

sklearn.set_config(enable_metadata_routing=True)

# Several covariates, a slope named by its column, groups as a Series.
X, y, groups = load_gasoline(return_X_y_groups=True)
country = groups
model = MixedLinearRegressor(random_effects="(1 + time | country)").fit(X, y, groups=country)
print("feature_names_in_:", list(model.feature_names_in_))
print(model.fixed_effects_.round(4))
print(model.random_effects_["country"].head(3))  # index: country labels; columns: terms
print(model.variance_components_)

# Categorical groups work the same as strings; a subset with unused categories too.
categorical = country.astype("category")
same = MixedLinearRegressor(random_effects="(1 + time | country)").fit(X, y, groups=categorical)
assert np.allclose(same.predict(X, groups=categorical), model.predict(X, groups=country))
assert np.allclose(model.predict(X[:5], groups=categorical[:5]), model.predict(X[:5], groups=country[:5]))

# Crossed factors: groups as a DataFrame, one column per factor.
Xp, yp, plates_samples = load_penicillin(return_X_y_groups=True)
crossed = MixedLinearRegressor(random_effects="(1 | plate) + (1 | sample)").fit(Xp, yp, groups=plates_samples)
print({factor: frame.shape for factor, frame in crossed.random_effects_.items()})

# Pipelines: keep the column names, or name slopes by position.
X, y, groups = load_sleepstudy(return_X_y_groups=True)
subject = groups


def requesting(estimator):
    return estimator.set_fit_request(groups=True).set_predict_request(groups=True)


named = Pipeline([
    ("scale", StandardScaler()),
    ("model", requesting(MixedLinearRegressor("(1 + Days | Subject)"))),
]).set_output(transform="pandas").fit(X, y, groups=subject)
print("set_output pandas ->", list(named[-1].feature_names_in_))

prefixed = Pipeline([
    ("prep", ColumnTransformer([("num", StandardScaler(), ["Days"])])),
    ("model", requesting(MixedLinearRegressor("(1 + num__Days | Subject)"))),
]).set_output(transform="pandas").fit(X, y, groups=subject)
print("ColumnTransformer ->", list(prefixed[-1].feature_names_in_))

plain = Pipeline([
    ("prep", ColumnTransformer([("num", StandardScaler(), ["Days"])], verbose_feature_names_out=False)),
    ("model", requesting(MixedLinearRegressor("(1 + Days | Subject)"))),
]).set_output(transform="pandas").fit(X, y, groups=subject)
print("ColumnTransformer(verbose_feature_names_out=False) ->", list(plain[-1].feature_names_in_))

positional = Pipeline([
    ("scale", StandardScaler()),  # NumPy output: the model sees columns x0, x1, ...
    ("model", requesting(MixedLinearRegressor("(1 + x0 | Subject)"))),
]).fit(X, y, groups=subject)
print("array output ->", list(positional[-1].random_effects_["Subject"].columns))

# All four are the same model: the same predictions.
for pipe in (prefixed, plain, positional):
    assert np.allclose(pipe.predict(X, groups=subject), named.predict(X, groups=subject), rtol=1e-6)
