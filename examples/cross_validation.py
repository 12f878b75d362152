"""Population-level versus conditional scores: GroupKFold versus KFold.

* GroupKFold holds out whole subjects.  Their levels were not seen in fit, so
  every prediction is population-level: this estimates how well the model
  predicts a *new* subject.
* KFold holds out days of subjects that stay in the training folds.  With the
  conditional scorer the model uses each subject's random effects: this
  estimates how well it predicts a *known* subject.

scikit-learn's "r2" scorer never passes groups to predict, so it is the
population-level score under either splitter.

Run: python examples/cross_validation.py
"""

import sklearn
from sklearn.metrics import mean_absolute_error
from sklearn.model_selection import GroupKFold, KFold, cross_val_score, cross_validate

from sklmm import MixedLinearRegressor, make_conditional_scorer
from sklmm.datasets import load_sleepstudy

sklearn.set_config(enable_metadata_routing=True)

X, y, groups = load_sleepstudy(return_X_y_groups=True)
subject = groups

model = MixedLinearRegressor(random_effects="(1 + Days | Subject)")
model.set_fit_request(groups=True).set_predict_request(groups=True).set_score_request(groups=True)

scoring = {"population_r2": "r2", "conditional_r2": make_conditional_scorer()}
splitters = {"GroupKFold": GroupKFold(n_splits=6), "KFold": KFold(n_splits=6, shuffle=True, random_state=0)}
means = {}
for name, cv in splitters.items():
    # params={"groups": ...} goes to the splitter (GroupKFold asks for it), to
    # every fit, and to the conditional scorer (test rows only).
    result = cross_validate(model, X, y, cv=cv, params={"groups": subject}, scoring=scoring)
    means[name] = {key: result[f"test_{key}"].mean() for key in scoring}
    print(f"{name:>10}: population R^2 {means[name]['population_r2']:.3f}, conditional R^2 {means[name]['conditional_r2']:.3f}")

# New subjects: nothing to condition on, the two scores agree.
assert abs(means["GroupKFold"]["population_r2"] - means["GroupKFold"]["conditional_r2"]) < 1e-12
# Known subjects: their random effects make the conditional predictions far better.
assert means["KFold"]["conditional_r2"] > means["KFold"]["population_r2"] + 0.3

# cross_val_score takes the same arguments; a loss needs greater_is_better=False.
neg_mae = make_conditional_scorer(mean_absolute_error, greater_is_better=False)
for name, cv in splitters.items():
    scores = cross_val_score(model, X, y, cv=cv, params={"groups": subject}, scoring=neg_mae)
    print(f"{name:>10}: mean absolute error {-scores.mean():.1f} ms")

# With the model's own score (scoring=None) and set_score_request(groups=True),
# KFold gives the conditional R^2 too.
own = cross_val_score(model, X, y, cv=splitters["KFold"], params={"groups": subject})
print(f"model.score under KFold: {own.mean():.3f}")
assert abs(own.mean() - means["KFold"]["conditional_r2"]) < 1e-12
