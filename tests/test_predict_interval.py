"""predict_interval against a dense brute-force prediction-error variance.

For a new observation y0 = x0'beta + z0'b + e0 predicted by a'y (the BLUP:
a' = x0'Gh + z0s' D Z'V^-1 (I - X Gh), Gh = (X'V^-1X)^-1 X'V^-1, z0s the
row's random-effects design restricted to the seen levels), with
Var(y) = V = Z D Z' + sigma^2 W^-1 and Cov(y, b) = Z D, the error variance is
a'Va - 2 a'Z D z0 + z0'D z0 + sigma^2 (z0: all the row's random effects, new
levels included).  Built densely on small data; agreement to 1e-8 relative.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.linalg import block_diag

from dense_lmm import DenseModel
from sklmm import MixedLinearRegressor


def dense_error_variance(model, X_new, groups_new):
    dense = DenseModel(model)
    sigma2 = model.sigma_**2
    Lam = dense.Lambda(model.theta_)
    D = sigma2 * Lam @ Lam.T
    V = dense.Z @ D @ dense.Z.T + sigma2 * np.diag(1.0 / dense.w)
    Vi = np.linalg.inv(V)
    Xd = dense.X
    Gh = np.linalg.solve(Xd.T @ Vi @ Xd, Xd.T @ Vi)
    out = []
    frame = groups_new
    for i in range(len(X_new)):
        x0 = np.concatenate([[1.0], X_new[i]])
        z_all, z_seen, offset = [], [], 0
        for term, fitted in zip(dense.terms, model._fitted_terms):
            zrow = np.zeros(term.q)
            zrow_seen = np.zeros(term.q)
            values = [1.0 if c is None else X_new[i, c] for c in fitted.slope_index]
            key = ":".join(str(frame[f].iloc[i]) for f in fitted.factors)
            level_index = list(fitted.levels.astype(str)).index(key) if key in set(fitted.levels.astype(str)) else None
            if level_index is not None:
                zrow[level_index * len(values) : (level_index + 1) * len(values)] = values
                zrow_seen[:] = zrow
                z_all.append(zrow)
                z_seen.append(zrow_seen)
            else:
                # a new level: its own random effect, independent of the data, variance Sigma_t
                z_all.append(np.zeros(term.q))
                z_seen.append(np.zeros(term.q))
            offset += term.q
        z0 = np.concatenate(z_all)
        z0s = np.concatenate(z_seen)
        a = x0 @ Gh + z0s @ D @ dense.Z.T @ Vi @ (np.eye(len(dense.y)) - Xd @ Gh)
        var = a @ V @ a - 2 * a @ dense.Z @ D @ z0 + z0 @ D @ z0 + sigma2
        # the new levels' random effects
        for fitted in model._fitted_terms:
            key = ":".join(str(frame[f].iloc[i]) for f in fitted.factors)
            if key not in set(fitted.levels.astype(str)):
                zt = np.array([1.0 if c is None else X_new[i, c] for c in fitted.slope_index])
                var += zt @ (sigma2 * fitted.lam @ fitted.lam.T) @ zt
        out.append(var)
    return np.array(out)


@pytest.mark.parametrize("random_effects", ["(1 + x | g)", "(1 | g) + (1 | h)"])
def test_prediction_interval_matches_dense(random_effects):
    rng = np.random.default_rng(3)
    n = 120
    g = rng.integers(0, 10, size=n)
    h = rng.integers(0, 4, size=n)
    x = rng.normal(size=n)
    y = 2 + x + rng.normal(size=10)[g] + 1.0 * rng.normal(size=10)[g] * x + rng.normal(size=4)[h] + rng.normal(size=n)
    X = pd.DataFrame({"x": x})
    groups = pd.DataFrame({"g": g.astype(str), "h": h.astype(str)})
    model = MixedLinearRegressor(random_effects=random_effects).fit(X, y, groups=groups)
    X_new = pd.DataFrame({"x": [0.3, -1.2, 0.8, 1.5]})
    groups_new = pd.DataFrame({"g": ["1", "new", "4", "new"], "h": ["0", "2", "new", "new"]})
    result = model.predict_interval(X_new, groups=groups_new, level=0.9)
    expected = dense_error_variance(model, X_new.to_numpy(), groups_new)
    np.testing.assert_allclose(result["se"] ** 2, expected, rtol=1e-8)
    np.testing.assert_allclose(result["fit"], model.predict(X_new, groups=groups_new))
    half = stats.norm.ppf(0.95) * np.sqrt(expected)
    np.testing.assert_allclose(result["upper"] - result["fit"], half, rtol=1e-8)
    np.testing.assert_allclose(result["fit"] - result["lower"], half, rtol=1e-8)
    # without groups: every level is new
    population = model.predict_interval(X_new)
    all_new = pd.DataFrame({"g": ["new"] * 4, "h": ["new"] * 4})
    np.testing.assert_allclose(population["se"] ** 2, dense_error_variance(model, X_new.to_numpy(), all_new), rtol=1e-8)


def test_prediction_interval_level_is_checked():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=40)})
    g = np.repeat(np.arange(8), 5)
    model = MixedLinearRegressor(random_effects="(1 | group)").fit(X, rng.normal(size=40), groups=g)
    with pytest.raises(ValueError, match="level=1.5"):
        model.predict_interval(X, level=1.5)


def test_formula_fit_gives_the_x_form_intervals():
    import sklmm
    from sklmm.datasets import load_sleepstudy

    data = load_sleepstudy()
    formula_model = sklmm.lmer("Reaction ~ Days + (Days | Subject)", data)
    X, y, groups = load_sleepstudy(return_X_y_groups=True)
    x_model = MixedLinearRegressor(random_effects="(Days | Subject)").fit(X, y, groups=groups)
    new = data.iloc[[0, 15, 40]]
    seen = formula_model.predict_interval(new)
    np.testing.assert_allclose(seen.to_numpy(), x_model.predict_interval(X.iloc[[0, 15, 40]], groups=groups.iloc[[0, 15, 40]]).to_numpy(), rtol=1e-6)
    with pytest.warns(UserWarning, match="population-level"):  # predict's warning: no Subject column
        unseen = formula_model.predict_interval(new.drop(columns="Subject"))
    np.testing.assert_allclose(unseen.to_numpy(), x_model.predict_interval(X.iloc[[0, 15, 40]]).to_numpy(), rtol=1e-6)
    assert list(seen.index) == [0, 15, 40]
