"""Profile and parametric-bootstrap intervals of GLMMs, as lme4's ``confint(glmer, method = ...)``.

Profile references: tests/data/glmer_cbind/reference.json (lme4 1.1-31,
``confint(method = "profile", oldNames = FALSE)``, made by
make_glmer_cbind.R): cbpp (Laplace and nAGQ = 9) and epil (Poisson).  lme4
tabulates the signed root deviance on a grid and interpolates it with a
spline; sklmm solves zeta = -/+ z by Brent's method on the profile itself.
Measured agreement: 4e-5 absolute on every limit of cbpp and epil (at most
3e-4 of a standard error).  Tolerances: the standard deviations' limits
within 1e-3 relative, the fixed effects' within 2e-3 of their standard
error.  A brute check of the profile's definition refits the model with
the fixed effect held as an offset (lme4's own method): the deviance there
is the fit's plus z^2.

Bootstrap: no lme4 numbers (its replicates use R's random numbers); the
checks are reproducibility, that each replicate is the independent fit of
its simulated response, and the percentile rule.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

import sklmm
from sklmm import MixedLogisticRegression

DATA = Path(__file__).parent / "data"
REFERENCE = json.loads((DATA / "glmer_cbind" / "reference.json").read_text())
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
EPIL = "y ~ lbase * trt + lage + V4 + (1 | subject)"


def _cbpp_data():
    return pd.read_csv(DATA / "glmer_cbind" / "cbpp.csv", dtype={"herd": str, "period": str})


def _epil_data():
    return pd.read_csv(DATA / "glmer" / "epil" / "data.csv", dtype={"subject": str})


@pytest.fixture(scope="module")
def cbpp():
    return sklmm.glmer(CBPP, _cbpp_data(), family="binomial")


@pytest.fixture(scope="module")
def epil():
    return sklmm.glmer(EPIL, _epil_data(), family="poisson")


def _check_profile(ci, model, ref):
    assert ci.index.tolist() == [name for name in ref["names"] if name in ci.index]
    lower = dict(zip(ref["names"], ref["lower"]))
    upper = dict(zip(ref["names"], ref["upper"]))
    se = model.fixed_effects_["std_error"]
    for name in ci.index:
        if name.startswith("sd_"):
            assert ci.loc[name, "lower"] == pytest.approx(lower[name], rel=1e-3)
            assert ci.loc[name, "upper"] == pytest.approx(upper[name], rel=1e-3)
        else:
            assert abs(ci.loc[name, "lower"] - lower[name]) < 2e-3 * se[name]
            assert abs(ci.loc[name, "upper"] - upper[name]) < 2e-3 * se[name]


def test_profile_cbpp_matches_lme4(cbpp):
    ci = cbpp.confint("profile")
    assert ci.index.tolist() == REFERENCE["profile_cbpp"]["names"]  # no sigma row, as lme4's
    _check_profile(ci, cbpp, REFERENCE["profile_cbpp"])
    assert ci.attrs["method"] == "profile"


def test_profile_poisson_matches_lme4(epil):
    ci = epil.confint("profile", parm=["sd_(Intercept)|subject", "lbase"])
    _check_profile(ci, epil, REFERENCE["profile_epil"])


@pytest.mark.slow
def test_profile_poisson_all_parameters_match_lme4(epil):
    _check_profile(epil.confint("profile"), epil, REFERENCE["profile_epil"])


@pytest.mark.slow
def test_profile_adaptive_quadrature_matches_lme4():
    model = sklmm.glmer(CBPP, _cbpp_data(), family="binomial", nagq=9)
    _check_profile(model.confint("profile"), model, REFERENCE["profile_cbpp_agq9"])


def test_profile_limit_is_where_the_offset_refit_rises_by_z_squared(cbpp):
    """At the profile limit of period2, the fit with period2 held (an offset) has deviance D_hat + z^2."""
    level = 0.9
    z = norm.ppf(0.5 + level / 2)
    limit = cbpp.confint("profile", level=level, parm="period2").loc["period2", "lower"]
    data = _cbpp_data()
    data["held"] = limit * (data["period"] == "2")
    held = sklmm.glmer(
        "cbind(incidence, size - incidence) ~ I(period == '3') + I(period == '4') + offset(held) + (1 | herd)",
        data, family="binomial",
    )
    # both objectives are optimiser minima (lme4's tolerance, about 1e-6 here); z^2 = 2.706
    assert held.objective_ - cbpp.objective_ == pytest.approx(z**2, abs=2e-4)


def test_profile_errors(cbpp):
    model = sklmm.glmer(CBPP, _cbpp_data(), family="binomial", nagq=0)
    with pytest.raises(ValueError, match="nagq=0"):
        model.confint("profile")
    with pytest.raises(KeyError, match="sigma"):
        cbpp.confint("profile", parm="sigma")
    unpickled = pickle.loads(pickle.dumps(cbpp))
    with pytest.raises(RuntimeError, match="needs the data the model was fitted to"):
        unpickled.confint("profile")
    with pytest.raises(RuntimeError, match="needs the data the model was fitted to"):
        unpickled.confint("bootstrap", n_boot=2)
    with pytest.raises(ValueError, match="level"):
        cbpp.confint("profile", level=95)


def test_bootstrap_replicates_are_independent_fits_of_the_draws(cbpp):
    from sklmm._inference.bootstrap import parametric_bootstrap
    from sklmm._inference.simulate import as_seed_sequence, glmm_simulation_model

    result = parametric_bootstrap(cbpp, n_boot=3, random_state=7)
    assert result.replicates.columns.tolist() == REFERENCE["profile_cbpp"]["names"]
    np.testing.assert_allclose(result.estimates.to_numpy(), [cbpp.variance_components_["sdcor"].iloc[0], cbpp.intercept_, *cbpp.coef_])
    sim = glmm_simulation_model(cbpp, cbpp._training_data)
    data = _cbpp_data()
    for i, seed in enumerate(as_seed_sequence(7).spawn(3)):
        y = sim.draw(np.random.default_rng(seed))
        successes = np.round(y * data["size"].to_numpy())
        np.testing.assert_allclose(successes, y * data["size"].to_numpy(), atol=1e-9)  # whole counts of the trials
        data["sim"] = successes
        refit = sklmm.glmer("cbind(sim, size - sim) ~ period + (1 | herd)", data, family="binomial")
        expected = [refit.variance_components_["sdcor"].iloc[0], refit.intercept_, *refit.coef_]
        np.testing.assert_allclose(result.replicates.iloc[i].to_numpy(), expected, rtol=1e-10, atol=1e-12)


def test_bootstrap_confint_is_reproducible_and_percentile(cbpp):
    from sklmm._inference.bootstrap import parametric_bootstrap

    ci = cbpp.confint("boot", n_boot=4, random_state=3, level=0.5)
    assert ci.attrs["method"] == "bootstrap" and ci.attrs["n_boot"] == 4
    result = parametric_bootstrap(cbpp, n_boot=4, random_state=3)  # the same seed: the same replicates
    pd.testing.assert_frame_equal(result.percentile_intervals(0.5), ci, check_names=False)
    # 4 replicates, level 0.5: (R + 1) alpha = 1.25 and 3.75, between order statistics 1-2 and 3-4 (boot's norm.inter)
    for name in ci.index:
        t = np.sort(result.replicates[name].to_numpy())
        assert t[0] <= ci.loc[name, "lower"] <= t[1]
        assert t[2] <= ci.loc[name, "upper"] <= t[3]
    assert len(np.unique(result.replicates["(Intercept)"])) == 4


def test_bootstrap_of_a_classifier_draws_labels():
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(12), 15)
    x = rng.normal(size=(180, 1))
    y = rng.random(180) < 1 / (1 + np.exp(-(0.3 + x[:, 0] + rng.normal(scale=1.5, size=12)[g])))
    model = MixedLogisticRegression("(1 | group)").fit(x, y, groups=g)
    ci = model.confint("bootstrap", n_boot=3, random_state=0, parm="beta_")
    assert ci.index.tolist() == ["(Intercept)", "x0"]
    assert np.all(ci["lower"] <= ci["upper"])


def test_simulate_with_an_offset_adds_it_once():
    """The mean of Poisson draws is the marginal mean exp(offset + X beta + sd^2 / 2) (10,000 draws)."""
    data = _epil_data()
    data["exposure"] = np.log(np.where(data["V4"] > 0, 2.0, 1.0))
    model = sklmm.glmer("y ~ lbase * trt + lage + V4 + offset(exposure) + (1 | subject)", data, family="poisson")
    population = data.assign(subject="unseen")
    marginal = np.exp(model.predict_linear(population) + model.variance_components_["vcov"].iloc[0] / 2)
    draws = model.simulate(2000, random_state=0)
    # the mean over 2000 x 236 draws: its Monte Carlo error is below 1%; twice the offset would be 20% off
    assert draws.mean() == pytest.approx(marginal.mean(), rel=0.03)


@pytest.mark.slow
def test_bootstrap_is_the_same_for_any_n_jobs(cbpp):
    one = cbpp.confint("bootstrap", n_boot=6, random_state=11)
    two = cbpp.confint("bootstrap", n_boot=6, random_state=11, n_jobs=2)
    pd.testing.assert_frame_equal(one, two)


@pytest.mark.slow
def test_profile_in_parallel_equals_serial(cbpp):
    serial = cbpp.confint("profile", parm="beta_")
    parallel = cbpp.confint("profile", parm="beta_", n_jobs=2)
    np.testing.assert_allclose(parallel.to_numpy(), serial.to_numpy(), rtol=1e-9)
