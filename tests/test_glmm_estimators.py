"""The GLMM estimators' behaviour: inference against lme4, predictions, warnings and errors.

lme4 numbers: tests/data/glmer/cbpp_inference.json (lme4 1.1-31, made by
make_glmer_inference.R): the likelihood-ratio anova of two cbpp fits (logLik
to 1e-3, Chisq to 2e-3: both fits' objectives are within 1e-3 of lme4's) and
condVar (2e-2 relative: conditional variances at our theta, 3e-4 from lme4's).
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning

import sklmm
from sklmm import MixedGLMRegressor, MixedLogisticRegression, MixedPoissonRegressor, SingularFitWarning
from sklmm.datasets import load_cbpp

REFERENCE = json.loads((Path(__file__).parent / "data" / "glmer" / "cbpp_inference.json").read_text())


@pytest.fixture(scope="module")
def cbpp_models():
    X, y, groups = load_cbpp(return_X_y_groups=True)
    size = load_cbpp()["size"]
    m1 = MixedGLMRegressor(random_effects="(1 | herd)").fit(X, y, groups=groups, sample_weight=size)
    m0 = MixedGLMRegressor(random_effects="(1 | herd)").fit(X[[]], y, groups=groups, sample_weight=size)
    return m0, m1


def _binary(seed=0, n_groups=30, per=20, sd=0.8):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per).astype(str)
    x = rng.normal(size=(n_groups * per, 1))
    eta = -0.3 + 1.0 * x[:, 0] + rng.normal(scale=sd, size=n_groups)[np.repeat(np.arange(n_groups), per)]
    y = np.where(rng.random(len(eta)) < 1 / (1 + np.exp(-eta)), "yes", "no")
    return pd.DataFrame({"x": x[:, 0]}), y, pd.Series(g, name="g")


def test_anova_matches_lme4(cbpp_models):
    table = sklmm.anova(*cbpp_models)
    ref = REFERENCE["anova"]
    assert table["npar"].tolist() == ref["npar"]
    np.testing.assert_allclose(table["logLik"], ref["logLik"], atol=1e-3)
    assert table["Chisq"].iloc[1] == pytest.approx(ref["Chisq"][1], abs=2e-3)
    assert table["Pr(>Chisq)"].iloc[1] == pytest.approx(ref["p"][1], rel=1e-3)


def test_conditional_variances_match_lme4(cbpp_models):
    cov = cbpp_models[1].random_effects_cov_["herd"]
    levels = list(cbpp_models[1].random_effects_["herd"].index)
    expected = dict(zip(REFERENCE["condvar"]["levels"], REFERENCE["condvar"]["values"]))
    np.testing.assert_allclose(cov[:, 0, 0], [expected[level] for level in levels], rtol=2e-2)


def test_simulate_draws_proportions_of_the_trials(cbpp_models):
    model = cbpp_models[1]
    size = load_cbpp()["size"].to_numpy()
    draws = model.simulate(200, random_state=0)
    assert draws.shape == (56, 200)
    counts = draws * size[:, None]
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)
    assert np.array_equal(draws, model.simulate(200, random_state=0))
    # The mean proportion over draws is near the marginal mean (a loose check: 200 draws).
    assert abs(draws.mean() - (load_cbpp()["incidence"].sum() / size.sum())) < 0.05


def test_summary_and_confint(cbpp_models):
    text = str(cbpp_models[1].summary())
    assert "(Laplace\n  Approximation)" in text and " Family: binomial  ( logit )" in text
    assert "Residual" not in text
    ci = cbpp_models[1].confint()
    assert ci.index.tolist() == ["sd_(Intercept)|herd", "(Intercept)", "period2", "period3", "period4"]
    with pytest.raises(ValueError, match="use 'wald', 'profile' or 'bootstrap'"):
        cbpp_models[1].confint("likelihood")


def test_classifier_predictions_are_consistent():
    X, y, g = _binary()
    model = MixedLogisticRegression("(1 | g)").fit(X, y, groups=g)
    assert model.classes_.tolist() == ["no", "yes"]
    proba = model.predict_proba(X, groups=g)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    eta = model.decision_function(X, groups=g)
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-eta)), rtol=1e-12)
    assert np.array_equal(model.predict(X, groups=g), np.where(eta > 0, "yes", "no"))
    # New levels (and no groups) give the population-level prediction; an offset shifts eta.
    new = pd.Series(["unseen"] * len(X), name="g")
    np.testing.assert_allclose(model.decision_function(X, groups=new), model.decision_function(X))
    np.testing.assert_allclose(model.decision_function(X, offset=np.full(len(X), 0.5)), model.decision_function(X) + 0.5)
    assert model.score(X, y, groups=g) >= model.score(X, y) - 0.05
    # Pickled without the training data: predictions unchanged.
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(clone.predict_proba(X, groups=g), proba)


def test_sample_weight_counts_rows_and_offset_enters_eta():
    X, y, g = _binary(seed=1, n_groups=15, per=10)
    w = np.tile([1, 2], len(y) // 2)
    rows = np.repeat(np.arange(len(y)), w)
    weighted = MixedLogisticRegression("(1 | g)").fit(X, y, groups=g, sample_weight=w)
    repeated = MixedLogisticRegression("(1 | g)").fit(X.iloc[rows], y[rows], groups=g.iloc[rows])
    assert weighted.objective_ == pytest.approx(repeated.objective_, abs=1e-6)
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, atol=1e-5)
    # An offset of c on every row moves the intercept by -c.
    shifted = MixedLogisticRegression("(1 | g)").fit(X, y, groups=g, offset=np.full(len(y), 0.7))
    plain = MixedLogisticRegression("(1 | g)").fit(X, y, groups=g)
    assert shifted.intercept_ == pytest.approx(plain.intercept_ - 0.7, abs=1e-4)


def test_poisson_regressor_and_links():
    rng = np.random.default_rng(2)
    g = np.repeat(np.arange(25), 12)
    x = rng.normal(size=(300, 1))
    y = rng.poisson(np.exp(0.4 + 0.3 * x[:, 0] + rng.normal(scale=0.5, size=25)[g]))
    model = MixedPoissonRegressor(random_effects="(1 | group)").fit(x, y, groups=g)
    assert model.family_ == "poisson" and model.link_ == "log"
    assert model.get_params()["link"] is None and "family" not in model.get_params()
    np.testing.assert_allclose(model.predict(x, groups=g), np.exp(model.predict_linear(x, groups=g)))
    assert model.variance_components_["sdcor"].iloc[0] == pytest.approx(0.5, abs=0.2)
    same = MixedGLMRegressor(family="poisson", random_effects="(1 | group)").fit(x, y, groups=g)
    assert same.objective_ == pytest.approx(model.objective_, abs=1e-9)


def test_errors_name_the_problem():
    X, y, g = _binary(n_groups=10, per=6)
    with pytest.raises(ValueError, match="single, scalar"):
        MixedLogisticRegression("(1 + x | g)", nagq=5).fit(X, y, groups=g)
    with pytest.raises(ValueError, match="Only binary"):
        MixedLogisticRegression("(1 | g)").fit(X, np.arange(len(y)) % 3, groups=g)
    with pytest.raises(ValueError, match="proportion in \\[0, 1\\]"):
        MixedGLMRegressor(random_effects="(1 | g)").fit(X, np.full(len(y), 2.0), groups=g)
    with pytest.raises(ValueError, match="non-negative count"):
        MixedPoissonRegressor(random_effects="(1 | g)").fit(X, -np.ones(len(y)), groups=g)
    with pytest.raises(ValueError, match="link 'probit' is not available for family='poisson'"):
        MixedGLMRegressor(family="poisson", link="probit").fit(X, np.ones(len(y)))
    with pytest.raises(ValueError, match="offset"):
        MixedLogisticRegression().fit(X, y, offset=np.ones(3))


def test_warnings_singular_and_not_converged():
    X, y, g = _binary(seed=4, n_groups=8, per=10, sd=0.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = MixedLogisticRegression("(1 | g)").fit(X, y, groups=g)
    if model.singular_:
        assert any(w.category is SingularFitWarning for w in caught)
    X, y, g = _binary(seed=5)
    with pytest.warns(ConvergenceWarning):
        MixedLogisticRegression("(1 | g)", max_iter=2).fit(X, y, groups=g)


def test_plots_draw_glmm_residuals_and_modes(cbpp_models):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    model = cbpp_models[1]
    figure = sklmm.plot_residuals(model)
    points = figure.axes[0].collections[0].get_offsets()
    # Pearson residuals of the binomial: (y - mu) sqrt(size / (mu (1 - mu))), at the fitted means.
    herds = load_cbpp()
    y, size = (herds["incidence"] / herds["size"]).to_numpy(), herds["size"].to_numpy()
    mu = model.predict(herds[["period2", "period3", "period4"]], groups=herds[["herd"]])
    np.testing.assert_allclose(points[:, 0], mu)
    np.testing.assert_allclose(points[:, 1], (y - mu) * np.sqrt(size / (mu * (1 - mu))))
    assert len(sklmm.plot_caterpillar(model).axes) == 1


def test_glmer_formula_matches_the_estimator_on_columns():
    herds = load_cbpp()
    herds["prop"] = herds["incidence"] / herds["size"]
    formula_model = sklmm.glmer("prop ~ period + (1 | herd)", herds, family="binomial", weights="size")
    X, y, groups = load_cbpp(return_X_y_groups=True)
    column_model = MixedGLMRegressor(random_effects="(1 | herd)").fit(X, y, groups=groups, sample_weight=herds["size"])
    assert formula_model.objective_ == pytest.approx(column_model.objective_, abs=1e-8)
    np.testing.assert_allclose(formula_model.predict(herds), column_model.predict(X, groups=groups), atol=1e-8)
    # A factor response (strings) as R reads it: the first level is failure.
    herds["any"] = np.where(herds["incidence"] > 0, "yes", "no")
    binary = sklmm.glmer("any ~ period + (1 | herd)", herds, family="binomial")
    assert binary.predict(herds).min() > 0 and binary.fixed_effects_.index[0] == "(Intercept)"
