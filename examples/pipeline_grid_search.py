"""Pipeline + cross-validation + GridSearchCV, end to end, with metadata routing.

Tunes a preprocessing step, the random-effects structure and REML/ML on lme4's
sleepstudy by conditional predictions of held-out days of known subjects (KFold
over rows, the conditional scorer); scores predictions for subjects the model has
not seen (GroupKFold, population-level); then predicts with the refitted best
pipeline conditional on each subject.

Run: python examples/pipeline_grid_search.py
"""

import sklearn
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sklmm import MixedLinearRegressor, make_conditional_scorer
from sklmm.datasets import load_sleepstudy

# 1. Metadata routing lets Pipeline, cross-validation and searches pass `groups` on.
sklearn.set_config(enable_metadata_routing=True)

X, y, groups = load_sleepstudy(return_X_y_groups=True)  # X: Days; groups: the Subject Series
subject = groups  # a Series (one grouping factor), as GroupKFold takes it

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

# 4. Compare the candidates on held-out days of known subjects (KFold over rows),
#    each predicted with its subject's random effects (the conditional scorer):
#    that is where random-effects structures differ.  `groups` reaches every fit
#    and the scorer.
search = GridSearchCV(pipe, param_grid, cv=KFold(n_splits=5, shuffle=True, random_state=0),
                      scoring=make_conditional_scorer())
search.fit(X, y, groups=subject)
print("best parameters:", search.best_params_)
print(f"best conditional R^2 on held-out days: {search.best_score_:.3f}")

# GroupKFold holds out whole subjects: it scores population-level predictions
# for new subjects (the same for every random-effects structure on these
# balanced data), i.e. how the model does for a subject it has never seen.
new_subjects = cross_val_score(search.best_estimator_, X, y, cv=GroupKFold(n_splits=6), params={"groups": subject})
print(f"best GroupKFold R^2 (new subjects, population-level): {new_subjects.mean():.3f}")

# 5. The refitted best pipeline saw every subject: it predicts conditional on
#    the subject when given groups, population-level without (or for a new subject).
best = search.best_estimator_
print("conditional:", best.predict(X.head(3), groups=subject.head(3)).round(1))
print("population: ", best.predict(X.head(3)).round(1))
conditional_r2 = make_conditional_scorer()(best, X, y, groups=subject)
print(f"in-sample R^2: conditional {conditional_r2:.3f}, population-level {best.score(X, y):.3f}")
assert conditional_r2 > best.score(X, y)
print(best[-1].random_effects_["Subject"].head())
