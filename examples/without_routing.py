"""What works without metadata routing (scikit-learn's default), and what does not.

Without ``sklearn.set_config(enable_metadata_routing=True)``:

* ``Pipeline.fit`` takes step parameters: ``pipe.fit(X, y, model__groups=groups)``;
  ``Pipeline.predict(X, groups=groups)`` forwards groups to the last step;
  ``Pipeline.score(X, y, groups=groups)`` silently drops them (population R^2).
* ``cross_validate`` / ``cross_val_score``: ``params={"groups": groups}`` reaches
  every fit, ``groups=groups`` the splitter; scorers get no groups.
* ``GridSearchCV.fit(X, y, groups=groups)`` gives groups to the splitter only;
  with a Pipeline add ``model__groups=groups`` to reach the model's fit.  A bare
  MixedLinearRegressor cannot get groups in a search's fit: it raises an error
  that says to enable routing.
* ``make_conditional_scorer(groups=all_groups)`` scores conditionally by looking
  the test rows up through X's index.

Run: python examples/without_routing.py
"""

import sklearn
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold, cross_validate
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sklmm import MixedLinearRegressor, make_conditional_scorer
from sklmm.datasets import load_sleepstudy

assert not sklearn.get_config()["enable_metadata_routing"]

X, y, groups = load_sleepstudy(return_X_y_groups=True)
subject = groups
formula = "(1 + Days | Subject)"

# Pipelines: step parameters.
pipe = Pipeline([("scale", StandardScaler()), ("model", MixedLinearRegressor(formula))]).set_output(transform="pandas")
pipe.fit(X, y, model__groups=subject)
conditional = pipe.predict(X, groups=subject)
print(f"Pipeline: conditional R^2 {r2_score(y, conditional):.3f}; "
      f"pipe.score(X, y, groups=...) {pipe.score(X, y, groups=subject):.3f} (groups dropped)")

# cross_validate: params reach fit; the conditional scorer looks groups up by X's index.
kfold = KFold(n_splits=6, shuffle=True, random_state=0)
result = cross_validate(
    MixedLinearRegressor(formula), X, y, cv=kfold, params={"groups": subject},
    scoring={"population_r2": "r2", "conditional_r2": make_conditional_scorer(groups=subject)},
)
print(f"KFold: population R^2 {result['test_population_r2'].mean():.3f}, "
      f"conditional R^2 {result['test_conditional_r2'].mean():.3f}")
assert result["test_conditional_r2"].mean() > result["test_population_r2"].mean()

# Grid search over a Pipeline: groups= for the splitter, model__groups= for fit.
search = GridSearchCV(pipe, {"model__reml": [True, False]}, cv=GroupKFold(n_splits=3))
search.fit(X, y, groups=subject, model__groups=subject)
print("Pipeline search, best:", search.best_params_)

# Grid search over a bare estimator cannot pass groups to fit: a clear error.
try:
    GridSearchCV(MixedLinearRegressor(formula), {"reml": [True, False]}, cv=GroupKFold(n_splits=3)).fit(
        X, y, groups=subject
    )
except ValueError as error:
    message = str(error)
    assert "enable_metadata_routing=True" in message and "set_fit_request(groups=True)" in message
    print("bare estimator search fails, as expected:", message.strip().splitlines()[-1][:160], "...")
else:
    raise AssertionError("expected a ValueError")
