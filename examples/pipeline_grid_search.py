"""Pipeline + GroupKFold + GridSearchCV, end to end, with metadata routing.

Tunes a preprocessing step, the random-effects structure and REML/ML on lme4's
sleepstudy, validating on subjects the model has not seen (GroupKFold), then
predicts with the refitted best pipeline conditional on each subject.

Run: python examples/pipeline_grid_search.py
"""

import sklearn
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sklmm import MixedLinearRegressor, make_conditional_scorer
from sklmm.datasets import load_sleepstudy

# 1. Metadata routing lets Pipeline, cross-validation and searches pass `groups` on.
sklearn.set_config(enable_metadata_routing=True)

X, y, groups = load_sleepstudy(return_X_y_groups=True)  # X: Days; groups: a DataFrame
subject = groups["Subject"]  # a Series: GroupKFold needs 1-D groups

# 2. The model asks for groups in fit, predict and score.
model = MixedLinearRegressor(random_effects="(1 + Days | Subject)")
model.set_fit_request(groups=True).set_predict_request(groups=True).set_score_request(groups=True)

# 3. set_output(transform="pandas") keeps the column name "Days", which the
#    random slope names.  A scaler put in by the grid must be configured the same way.
pipe = Pipeline([("scale", StandardScaler()), ("model", model)]).set_output(transform="pandas")
param_grid = {
    "scale": [StandardScaler().set_output(transform="pandas"), "passthrough"],
    "model__random_effects": ["(1 | Subject)", "(1 + Days | Subject)", "(1 + Days || Subject)"],
    "model__reml": [True, False],
}

# 4. GroupKFold holds out whole subjects, so the scores are those of predictions
#    for new subjects: population-level.  `groups` reaches the splitter and every fit.
search = GridSearchCV(pipe, param_grid, cv=GroupKFold(n_splits=3), scoring="r2")
search.fit(X, y, groups=subject)
print("best parameters:", search.best_params_)
print(f"best GroupKFold R^2 (new subjects, population-level): {search.best_score_:.3f}")

# 5. The refitted best pipeline saw every subject: it predicts conditional on
#    the subject when given groups, population-level without (or for a new subject).
best = search.best_estimator_
print("conditional:", best.predict(X.head(3), groups=subject.head(3)).round(1))
print("population: ", best.predict(X.head(3)).round(1))
conditional_r2 = make_conditional_scorer()(best, X, y, groups=subject)
print(f"in-sample R^2: conditional {conditional_r2:.3f}, population-level {search.score(X, y):.3f}")
assert conditional_r2 > search.score(X, y)
print(best[-1].random_effects_["Subject"].head())
