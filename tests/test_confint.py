"""``confint`` against lme4 1.1-31's ``confint.merMod``.

Expected values: tests/data/lme4_inference/<case>.json, made by make_inference.R
there: ``confint(fit, method = "Wald", oldNames = FALSE, level = 0.95 / 0.90)``,
``confint(fit, method = "profile", oldNames = FALSE)`` and, in bootstrap.json,
``confint(fit, method = "boot", nsim = 500, seed = 1, oldNames = FALSE)`` for
sleepstudy ``Reaction ~ 1 + Days + (1 + Days | Subject)`` (REML).  chem97 and
hsb82 have no profile there (n > 1000); their profile intervals come from the
shared corpus, tests/data/lme4/<case>/reference.json ``confint_profile``
(the same lme4 version and call); chem97 has none anywhere.

Tolerances and exceptions:

* Wald: 1e-4 relative, every case and level (nested_slope ML: 2e-4, where
  lme4's optimiser stopped 4.6e-7 of deviance short of sklmm's optimum).
* Profile: 1e-3 relative (the issue asks for 1e-2), with a floor of 1e-3
  absolute for limits near 0 (correlations).  sklmm finds each limit on the
  exact profile (Brent's method on zeta) where lme4 interpolates a spline
  through a grid, so the two differ by lme4's interpolation error: below
  2.5e-4 on every case except
  - nested_slope ``cor_x.(Intercept)|a``: lme4 warns of a non-monotonic
    profile and a bad spline fit and falls back to linear interpolation;
    its limits are off by 5e-3 and 1e-2 relative, so the test checks that
    sklmm's zeta is -/+1.96 there by a brute-force dense computation instead;
  - hsb82 ``sd_cses|school`` and ``cor_cses.(Intercept)|school``: lme4 off
    by 7e-3 and 6e-3 (a Nelder-Mead check of the profile at lme4's lower
    limit gives zeta = -1.947, not -1.960), checked at 1e-2 (slow test).
  - sleepstudy_weighted and weighted_slope: lme4's profiles of weighted
    fits are wrong (lme4 issue #192: its profiling deviance ignores the
    prior weights), so sklmm's limits are checked against a brute-force
    dense computation of the weighted deviance instead;
  - a synthetic fit with an estimated correlation of +1 (not a reference
    case), where lme4's limits are off by up to 30% (its upper limit for
    sd_x has zeta 2.66): checked by brute force.
* Profile of a REML fit equals that of the ML fit (lme4 profiles the ML
  deviance, lme4 issue #838): 1e-6 relative.
* Bootstrap: lme4's random numbers differ, so its limits are matched within
  Monte Carlo error: 25% of lme4's interval width for 200 replicates (the
  standard error of the difference of two such limits is about 6% of the
  width).  Reproducibility is exact.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq, minimize
from scipy.stats import norm

from dense_lmm import DenseModel
from reference_cases import CASES, fitted, load_case, sklmm_group_name
from sklmm import MixedLinearRegressor, bootstrap

INFERENCE = Path(__file__).parent / "data" / "lme4_inference"
METHODS = ["reml", "ml"]
PARAMS = [pytest.param(case, method, id=f"{case}-{method}") for case in CASES for method in METHODS]
Z95 = norm.ppf(0.975)


def inference_reference(case: str, method: str) -> dict:
    return json.loads((INFERENCE / f"{case}.json").read_text())[method]


def sklmm_name(r_name: str, factor_names: set[str]) -> str:
    """lme4's parameter name in sklmm's spelling of the grouping factor."""
    if "|" not in r_name:
        return r_name
    head, group = r_name.rsplit("|", 1)
    return f"{head}|{sklmm_group_name(group, factor_names)}"


def reference_frame(block: dict, model) -> pd.DataFrame:
    names = [sklmm_name(n, set(model.random_effects_)) for n in block["names"]]
    lower = [np.nan if v is None else v for v in block["lower"]]
    upper = [np.nan if v is None else v for v in block["upper"]]
    return pd.DataFrame({"lower": lower, "upper": upper}, index=names)


# -- Wald -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case, method", PARAMS)
def test_wald_matches_lme4(case, method):
    model, _ = fitted(case, method)
    rel = 2e-4 if (case, method) == ("nested_slope", "ml") else 1e-4
    for level, block in inference_reference(case, method)["confint_wald"].items():
        expected = reference_frame(block, model)
        mine = model.confint("wald", level=float(level))
        assert list(mine.index) == list(expected.index)  # lme4's rows, variance parameters first
        assert list(mine.columns) == ["lower", "upper"]
        np.testing.assert_allclose(mine.to_numpy(), expected.to_numpy(), rtol=rel)  # NaN where lme4 has NA


def test_wald_parm_selection():
    model, _ = fitted("sleepstudy", "reml")
    assert list(model.confint("wald", parm="beta_").index) == ["(Intercept)", "Days"]
    assert list(model.confint("wald", parm="theta_").index) == [
        "sd_(Intercept)|Subject", "cor_Days.(Intercept)|Subject", "sd_Days|Subject", "sigma",
    ]
    assert list(model.confint("wald", parm=["Days", "sigma"]).index) == ["Days", "sigma"]
    frame = model.confint("Wald", parm="Days", level=0.9)
    assert frame.attrs == {"method": "wald", "level": 0.9}
    with pytest.raises(KeyError, match="unknown parameter"):
        model.confint("wald", parm="Nights")
    with pytest.raises(ValueError, match="method="):
        model.confint("likelihood")
    with pytest.raises(ValueError, match="level="):
        model.confint("wald", level=95)


# -- profile ----------------------------------------------------------------------------------

#: fast enough for the default run (each well under a second on an idle core)
FAST_PROFILES = ["dyestuff", "dyestuff2", "sleepstudy", "pastes", "sleepstudy_slope_only"]
#: lme4's profile is not the reference here (see the module docstring)
WEIGHTED = {"sleepstudy_weighted", "weighted_slope"}
LME4_SPLINE_OFF = {("nested_slope", "cor_x.(Intercept)|a"): None, ("hsb82", "sd_cses|school"): 1e-2, ("hsb82", "cor_cses.(Intercept)|school"): 1e-2}


def profile_reference(case: str, method: str, model) -> pd.DataFrame:
    block = inference_reference(case, method)["confint_profile"]
    if "skipped" in block:
        block = load_case(case).reference[method]["confint_profile"]
    if "names" not in block:
        pytest.skip(f"lme4 has no profile intervals for {case} (n = {len(model._training_data.y)})")
    return reference_frame(block, model)


def check_profile(case: str, method: str):
    model, _ = fitted(case, method)
    expected = profile_reference(case, method, model)
    mine = model.confint("profile")
    assert list(mine.index) == list(expected.index)
    for name, row in expected.iterrows():
        key = (case, name)
        if key in LME4_SPLINE_OFF and LME4_SPLINE_OFF[key] is None:
            continue  # checked by brute force below
        rel = LME4_SPLINE_OFF.get(key) or 1e-3
        for side in ("lower", "upper"):
            assert mine.loc[name, side] == pytest.approx(row[side], rel=rel, abs=1e-3 if abs(row[side]) < 1 else 0), (name, side)


@pytest.mark.parametrize("case", FAST_PROFILES)
def test_profile_matches_lme4(case):
    check_profile(case, "reml")


@pytest.mark.slow
@pytest.mark.parametrize("case, method", [p for p in PARAMS if p.values[0] not in WEIGHTED])
def test_profile_matches_lme4_every_case(case, method):
    check_profile(case, method)


def test_profile_of_a_reml_fit_is_the_ml_profile():
    reml, _ = fitted("sleepstudy", "reml")
    ml, _ = fitted("sleepstudy", "ml")
    a = reml.confint("profile", parm=["sd_Days|Subject", "sigma", "Days"])
    b = ml.confint("profile", parm=["sd_Days|Subject", "sigma", "Days"])
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-6)


def test_profile_boundary_limits():
    # dyestuff2: the Batch standard deviation is estimated at 0: its lower limit is 0, as lme4's
    model, _ = fitted("dyestuff2", "reml")
    frame = model.confint("profile", parm="theta_")
    assert frame.loc["sd_(Intercept)|Batch", "lower"] == 0.0
    assert frame.loc["sd_(Intercept)|Batch", "upper"] == pytest.approx(2.08404, rel=1e-4)


@pytest.mark.slow  # joblib's worker start-up dominates (2-5 s)
def test_profile_in_parallel_is_the_same():
    model, _ = fitted("dyestuff", "reml")
    pd.testing.assert_frame_equal(model.confint("profile"), model.confint("profile", n_jobs=2))


# -- brute force: a dense weighted ML deviance, minimised by Nelder-Mead -----------------------


class DenseDeviance:
    """-2 log-likelihood from dense matrices: V = sigma^2 (Z Lambda Lambda' Z' + W^-1), beta by GLS.

    V^-1 and log det V by the Woodbury identity on the q x q matrix
    I + Lambda' Z' W Z Lambda (an independent formula, not sklmm's blocked one).
    """

    def __init__(self, model):
        from sklmm._model.parameters import sdcor_to_theta, term_sizes

        self.dense = DenseModel(model)
        self.sizes = term_sizes(self.dense.terms)
        self.to_theta = sdcor_to_theta

    def __call__(self, psi, fixed=None):
        """Deviance at sdcor parameters psi (sigma last); ``fixed=(j, v)`` fixes beta_j = v."""
        d = self.dense
        sigma = psi[-1]
        U = d.Z @ d.Lambda(self.to_theta(np.asarray(psi, dtype=float), self.sizes))
        X, y, w = d.X, d.y, d.w
        if fixed is not None:
            j, v = fixed
            y = y - v * X[:, j]
            X = np.delete(X, j, axis=1)
        K = np.eye(U.shape[1]) + U.T @ (w[:, None] * U)
        Kc = np.linalg.cholesky(K)

        def vinv(M):  # sigma^2 V^-1 M = W M - W U K^-1 U' W M
            WM = w[:, None] * M if M.ndim == 2 else w * M
            return WM - (w[:, None] * U) @ np.linalg.solve(K, U.T @ WM)

        beta = np.linalg.solve(X.T @ vinv(X), X.T @ vinv(y))
        r = y - X @ beta
        logdet = len(y) * np.log(sigma**2) - np.sum(np.log(w)) + 2.0 * np.sum(np.log(np.diag(Kc)))
        return float(len(y) * np.log(2 * np.pi) + logdet + r @ vinv(r) / sigma**2)


def brute_zeta(dense: DenseDeviance, psi_hat, base, k=None, value=None, fixed=None):
    """Root deviance with parameter k at value (or a fixed effect fixed), the rest by Nelder-Mead."""
    from sklmm._model.parameters import is_correlation

    correlation = is_correlation(dense.sizes)  # sigma last, not a correlation
    free = [i for i in range(len(psi_hat)) if i != k]

    def f(x):
        psi = np.array(psi_hat, dtype=float)
        psi[free] = x
        if k is not None:
            psi[k] = value
        if np.any(psi[~correlation] < 0) or psi[-1] <= 0 or np.any(np.abs(psi[correlation]) > 1):
            return np.inf
        return dense(psi, fixed)

    from threadpoolctl import threadpool_limits

    options = {"xatol": 1e-9, "fatol": 1e-10, "maxiter": 40_000, "maxfev": 40_000}
    with threadpool_limits(limits=1, user_api="blas"):
        result = minimize(f, np.asarray(psi_hat, dtype=float)[free], method="Nelder-Mead", options=options)
    return np.sqrt(max(result.fun - base, 0.0))


@pytest.mark.parametrize("case", ["sleepstudy_weighted", "weighted_slope"])
def test_weighted_profile_by_brute_force(case):
    """Where lme4's weighted profiles are wrong, sklmm's limits satisfy zeta = -/+1.96 on the dense deviance."""
    model, _ = fitted(case, "ml")
    from sklmm._model.parameters import theta_to_sdcor, term_sizes

    dense = DenseDeviance(model)
    psi_hat = theta_to_sdcor(model.theta_, term_sizes(model._fitted_terms), model.sigma_)
    base = dense(psi_hat)
    assert base == pytest.approx(model.objective_, rel=1e-9)  # the dense deviance is sklmm's ML criterion
    frame = model.confint("profile")
    n_var = len(psi_hat)
    for k, name in enumerate(frame.index[:n_var]):
        if name.startswith("sigma") or name.startswith("cor_"):
            continue  # standard deviations are enough to exercise the weights; sigma is below
        for side in ("lower", "upper"):
            zeta = brute_zeta(dense, psi_hat, base, k=k, value=frame.loc[name, side])
            assert zeta == pytest.approx(Z95, abs=2e-3), (name, side)
    # the fixed effects, where lme4's weighted intervals are far too narrow
    for j, name in enumerate(model.fixed_effects_.index):
        for side in ("lower", "upper"):
            zeta = brute_zeta(dense, psi_hat, base, fixed=(j, frame.loc[name, side]))
            assert zeta == pytest.approx(Z95, abs=2e-3), (name, side)
        wald = model.confint("wald", parm=name)
        assert frame.loc[name, "lower"] < wald.loc[name, "lower"] + 0.2 * model.fixed_effects_.loc[name, "std_error"]


def test_nested_slope_correlation_by_brute_force():
    """lme4's correlation interval is a linear fallback; sklmm's limits are where the dense zeta is 1.96."""
    model, _ = fitted("nested_slope", "ml")
    from sklmm._model.parameters import theta_to_sdcor, term_sizes

    dense = DenseDeviance(model)
    psi_hat = theta_to_sdcor(model.theta_, term_sizes(model._fitted_terms), model.sigma_)
    base = dense(psi_hat)
    name = "cor_x.(Intercept)|a"
    frame = model.confint("profile", parm=name)
    k = list(model.confint("wald").index).index(name)
    for side in ("lower", "upper"):
        assert brute_zeta(dense, psi_hat, base, k=k, value=frame.loc[name, side]) == pytest.approx(Z95, abs=2e-3)


def test_profile_without_random_effects_is_exact():
    """Least squares: the profile limits have closed forms (ML deviance n log(RSS/n) + const)."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 2))
    y = 1.0 + X @ [0.5, -0.25] + rng.normal(size=40)
    model = MixedLinearRegressor(reml=False).fit(X, y)
    frame = model.confint("profile")
    n = len(y)
    design = np.column_stack([np.ones(n), X])
    beta, rss = np.linalg.lstsq(design, y, rcond=None)[:2]
    C = np.linalg.inv(design.T @ design)
    half = np.sqrt(np.diag(C) * rss[0] * (np.exp(Z95**2 / n) - 1.0))
    np.testing.assert_allclose(frame.loc[["(Intercept)", "x0", "x1"], "lower"], beta - half, rtol=1e-6)
    np.testing.assert_allclose(frame.loc[["(Intercept)", "x0", "x1"], "upper"], beta + half, rtol=1e-6)
    s2 = rss[0] / n

    def excess(sigma):
        return n * np.log(sigma**2 / s2) + n * s2 / sigma**2 - n - Z95**2

    lower = brentq(excess, 1e-3 * np.sqrt(s2), np.sqrt(s2))
    upper = brentq(excess, np.sqrt(s2), 10 * np.sqrt(s2))
    assert frame.loc["sigma", "lower"] == pytest.approx(lower, rel=1e-6)
    assert frame.loc["sigma", "upper"] == pytest.approx(upper, rel=1e-6)


def test_profile_needs_the_training_data():
    model, _ = fitted("dyestuff", "reml")
    restored = pickle.loads(pickle.dumps(model))
    pd.testing.assert_frame_equal(restored.confint("wald"), model.confint("wald"))
    with pytest.raises(RuntimeError, match="fit the model again"):
        restored.confint("profile")
    with pytest.raises(RuntimeError, match="fit the model again"):
        restored.confint("bootstrap", n_boot=2)


# -- bootstrap -----------------------------------------------------------------------------------


def test_norm_inter_matches_boot():
    from sklmm._inference.bootstrap import _norm_inter

    cases = json.loads((Path(__file__).parent / "data" / "r_format" / "format_cases.json").read_text())["norm_inter"]
    for case in cases:
        np.testing.assert_allclose(_norm_inter(np.asarray(case["t"]), np.asarray(case["alpha"])), case["out"], rtol=1e-12)


def test_bootstrap_is_reproducible_and_independent_of_n_jobs():
    model, _ = fitted("dyestuff", "reml")
    a = bootstrap(model, n_boot=24, random_state=7)
    b = bootstrap(model, n_boot=24, random_state=7, n_jobs=2)
    c = bootstrap(model, n_boot=24, random_state=8)
    pd.testing.assert_frame_equal(a.replicates, b.replicates)
    assert not a.replicates.equals(c.replicates)
    assert list(a.replicates.columns) == ["sd_(Intercept)|Batch", "sigma", "(Intercept)"]
    assert a.estimates["sigma"] == pytest.approx(model.sigma_)
    frame = model.confint("bootstrap", n_boot=24, random_state=7)
    np.testing.assert_array_equal(frame.to_numpy(), a.percentile_intervals().to_numpy())
    assert frame.attrs["n_boot"] == 24 and frame.attrs["method"] == "bootstrap"
    seq = np.random.SeedSequence(7)
    pd.testing.assert_frame_equal(bootstrap(model, n_boot=24, random_state=seq).replicates, a.replicates)


def test_bootstrap_counts_failed_refits(monkeypatch):
    import sklmm._inference.bootstrap as module

    model, _ = fitted("dyestuff", "reml")
    real = module._refit_problem  # each replicate's refit (batched bootstrap)
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise np.linalg.LinAlgError("simulated failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "_refit_problem", flaky)
    with pytest.warns(RuntimeWarning, match="3 of 9 refits failed"):
        result = bootstrap(model, n_boot=9, random_state=0)
    assert result.n_failed == 3
    assert result.replicates.isna().all(axis=1).sum() == 3
    assert np.isfinite(result.percentile_intervals().to_numpy()).all()


def check_bootstrap_against_lme4(n_boot: int, width_fraction: float):
    reference = json.loads((INFERENCE / "bootstrap.json").read_text())
    model, _ = fitted("sleepstudy", "reml")
    frame = model.confint("bootstrap", n_boot=n_boot, random_state=1)
    expected = reference_frame(reference, model)
    assert list(frame.index) == list(expected.index)
    width = expected["upper"] - expected["lower"]
    for side in ("lower", "upper"):
        assert np.all(np.abs(frame[side] - expected[side]) <= width_fraction * width), (side, frame, expected)


def test_bootstrap_agrees_with_lme4_within_monte_carlo_error():
    check_bootstrap_against_lme4(200, 0.25)


@pytest.mark.slow
def test_bootstrap_500_agrees_with_lme4():
    check_bootstrap_against_lme4(500, 0.2)


def test_a_zero_lower_limit_means_the_term_is_not_significant():
    """pastes: the batch standard deviation's lower limit is 0 (lme4: 0) because dropping the
    term raises the ML deviance by less than 1.96^2 (checked with a refit without it)."""
    model, _ = fitted("pastes", "ml")
    frame = model.confint("profile", parm="sd_(Intercept)|batch")
    assert frame.loc["sd_(Intercept)|batch", "lower"] == 0.0
    X, y, groups, _ = load_case("pastes").arrays()
    without = MixedLinearRegressor(random_effects="(1 | batch:cask)", reml=False).fit(X, y, groups=groups)
    assert 0.0 <= without.objective_ - model.objective_ < Z95**2


def _correlation_one_data():
    """12 groups whose slopes are half their intercepts: the ML fit has correlation +1 (singular)."""
    rng = np.random.default_rng(5)
    for trial in range(5):
        g = np.repeat(np.arange(12), 6)
        x = rng.normal(size=72)
        b0 = rng.normal(size=12) * [1.0, 0.0, 0.5, 2.0, 0.3][trial]
        b1 = b0 * 0.5 if trial == 4 else rng.normal(size=12) * 0.3 * (trial % 2)
        y = 1 + 0.5 * x + b0[g] + b1[g] * x + rng.normal(size=72)
    return pd.DataFrame({"x": x}), y, pd.Series([f"g{v:02d}" for v in g], name="g")


def test_singular_correlation_profile_by_brute_force():
    """A fit with correlation +1: lme4 1.1-31 (lmer(y ~ x + (1 + x | g), REML = FALSE), confint)
    gives sd_x|g up to 0.767, where the dense deviance's zeta is 2.66, not 1.96; sklmm's
    limits are where the brute-force zeta is 1.96."""
    import warnings

    X, y, groups = _correlation_one_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MixedLinearRegressor(random_effects="(1 + x | g)", reml=False).fit(X, y, groups=groups)
    from sklmm._model.parameters import term_sizes, theta_to_sdcor

    psi_hat = theta_to_sdcor(model.theta_, term_sizes(model._fitted_terms), model.sigma_)
    assert psi_hat[1] == pytest.approx(1.0)  # the estimated correlation
    frame = model.confint("profile")
    assert frame.loc["cor_x.(Intercept)|g", "upper"] == 1.0
    dense = DenseDeviance(model)
    base = dense(psi_hat)
    for k, name in [(0, "sd_(Intercept)|g"), (2, "sd_x|g")]:
        for side in ("lower", "upper"):
            if frame.loc[name, side] > 0:
                zeta = brute_zeta(dense, psi_hat, base, k=k, value=frame.loc[name, side])
                assert zeta == pytest.approx(Z95, abs=2e-3), (name, side)
    assert brute_zeta(dense, psi_hat, base, k=2, value=0.767) > 2.5  # lme4's upper limit
    for j, name in enumerate(model.fixed_effects_.index):
        for side in ("lower", "upper"):
            assert brute_zeta(dense, psi_hat, base, fixed=(j, frame.loc[name, side])) == pytest.approx(Z95, abs=2e-3)
