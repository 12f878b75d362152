"""The shipped datasets and their classic lme4 models.

Each loader returns a DataFrame, or ``(X, y, groups)`` with
``return_X_y_groups=True``; the printed criteria are lme4's.

Run: python examples/datasets.py
"""

from sklmm import MixedLinearRegressor
from sklmm.datasets import load_dyestuff, load_gasoline, load_pastes, load_penicillin, load_sleepstudy

classic = [
    (load_sleepstudy, "(1 + Days | Subject)", 1743.628),  # lme4: REML criterion at convergence
    (load_dyestuff, "(1 | Batch)", 319.654),
    (load_penicillin, "(1 | plate) + (1 | sample)", 330.861),
    (load_pastes, "(1 | batch/cask)", 246.991),
    (load_gasoline, "(1 | country)", -97.722),
]
for loader, formula, lme4_reml in classic:
    X, y, groups = loader(return_X_y_groups=True)
    model = MixedLinearRegressor(random_effects=formula).fit(X, y, groups=groups)
    print(f"{loader.__name__:16} n={len(y):3}  {y.name} ~ {' + '.join(['1', *X.columns])} + {formula}:"
          f"  REML criterion {model.objective_:.3f} (lme4 {lme4_reml})")
    assert abs(model.objective_ - lme4_reml) < 2e-3
