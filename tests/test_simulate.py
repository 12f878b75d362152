"""``simulate``: responses drawn from the fitted model, as lme4's ``simulate(fit)``.

lme4 draws with R's random numbers, so its draws cannot be reproduced; the
checks are on the distribution instead, against the model's own marginal
moments computed densely (brute force): mean ``X beta`` and covariance
``sigma^2 (Z Lambda Lambda' Z' + W^-1)``.  With 20000 draws the Monte Carlo
standard error of a sample mean is 0.7% of its standard deviation, and of a
sample covariance about 1% of the variances' scale: the tolerances are 5
standard errors (means) and 5% (covariances).
"""

from __future__ import annotations

import numpy as np
import pytest

from dense_lmm import DenseModel
from reference_cases import fitted
from sklmm import MixedLinearRegressor

N_SIM = 20_000


def marginal_moments(model):
    dense = DenseModel(model)
    Lam = dense.Lambda(model.theta_)
    ZL = dense.Z @ Lam
    cov = model.sigma_**2 * (ZL @ ZL.T + np.diag(1.0 / dense.w))
    mean = dense.X[:, : 1 + len(model.coef_)] @ np.concatenate([[model.intercept_], model.coef_])
    return mean, cov


@pytest.mark.parametrize("case", ["dyestuff", "penicillin", "sleepstudy_weighted", "zerocorr_crossed"])
def test_simulated_moments_are_the_models(case):
    model, _ = fitted(case, "reml")
    draws = model.simulate(N_SIM, random_state=0)
    n = len(model._training_data.y)
    assert draws.shape == (n, N_SIM)
    mean, cov = marginal_moments(model)
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(draws.mean(axis=1) - mean) <= 5 * sd / np.sqrt(N_SIM))
    rows = np.unique(np.linspace(0, n - 1, 12).astype(int))  # a sample of rows keeps it fast
    sample = np.cov(draws[rows])
    scale = np.sqrt(np.outer(np.diag(cov)[rows], np.diag(cov)[rows]))
    assert np.max(np.abs(sample - cov[np.ix_(rows, rows)]) / scale) < 0.05


def test_reproducible_and_seed_types():
    model, _ = fitted("dyestuff", "reml")
    a = model.simulate(3, random_state=42)
    np.testing.assert_array_equal(a, model.simulate(3, random_state=42))
    np.testing.assert_array_equal(a, model.simulate(3, random_state=np.random.default_rng(42)))
    assert not np.array_equal(a, model.simulate(3, random_state=43))
    assert model.simulate(random_state=np.random.RandomState(0)).shape == (30, 1)


def test_rows_with_weight_zero_are_nan():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(8), 5)
    X = rng.normal(size=(40, 1))
    y = X[:, 0] + rng.normal(size=8)[g] + rng.normal(size=40)
    w = np.ones(40)
    w[[3, 17]] = 0.0
    model = MixedLinearRegressor(random_effects="(1 | group)").fit(X, y, groups=g, sample_weight=w)
    draws = model.simulate(4, random_state=1)
    assert np.isnan(draws[[3, 17]]).all()
    assert np.isfinite(np.delete(draws, [3, 17], axis=0)).all()


def test_without_random_effects():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2))
    model = MixedLinearRegressor().fit(X, X @ [1.0, 2.0] + rng.normal(size=30))
    draws = model.simulate(5000, random_state=0)
    np.testing.assert_allclose(draws.std(axis=1), model.sigma_, rtol=0.06)
