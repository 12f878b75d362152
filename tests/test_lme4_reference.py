"""sklmm against lme4 1.1-31 on every stored reference case, REML and ML.

Expected values: tests/data/lme4/*/reference.json (the project's corpus) and
tests/data/lme4_extra/*/reference.json (made by make_reference.R there).

Tolerances (from the issue that specifies the estimator):

* objective no worse than lme4's by more than 1e-4 (lower is better and fine);
* fixed effects within 1e-3 of their standard error;
* sigma within 1e-3 relative;
* random-effect standard deviations within 2e-2 relative, correlations within
  2e-2 absolute.  A standard deviation that lme4 puts on the boundary (its
  theta below lme4's isSingular tolerance 1e-4) is not determined to relative
  precision: there both must be below 1e-3 sigma;
* BLUPs within 2e-2 of the spread (standard deviation) of lme4's BLUPs of
  that column.

Standard errors, vcov, AIC, BIC and log-likelihood: 1e-3 relative.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reference_cases import CASES, as_list, fitted, load_case, ranef_frames, sklmm_group_name

METHODS = ["reml", "ml"]
PARAMS = [pytest.param(case, method, id=f"{case}-{method}") for case in CASES for method in METHODS]


def _reference(case: str, method: str) -> dict:
    return load_case(case).reference[method]


@pytest.mark.parametrize("case, method", PARAMS)
def test_objective_at_least_as_good_as_lme4(case, method):
    model, _ = fitted(case, method)
    ref = _reference(case, method)
    assert model.objective_ <= ref["objective"] + 1e-4
    # and not implausibly better: the same model, the same data
    assert model.objective_ >= ref["objective"] - 1e-2
    assert model.log_likelihood_ == pytest.approx(ref["loglik"], rel=1e-6, abs=1e-4)


@pytest.mark.parametrize("case, method", PARAMS)
def test_fixed_effects(case, method):
    model, _ = fitted(case, method)
    ref = _reference(case, method)
    coef = ref["coef"]
    se = ref["coef_se"]
    estimates = model.fixed_effects_["estimate"]
    for name, value in coef.items():
        assert abs(estimates[name] - value) <= 1e-3 * se[name], name
        assert model.fixed_effects_.loc[name, "std_error"] == pytest.approx(se[name], rel=1e-3)
    assert model.intercept_ == pytest.approx(coef["(Intercept)"], abs=1e-3 * se["(Intercept)"])
    names = list(coef)
    vcov = np.asarray(ref["vcov"], dtype=float).reshape(len(names), len(names))
    mine = model.fixed_effects_cov_.loc[names, names].to_numpy()
    # 1e-3 relative on the scale of each entry: sqrt(v_ii v_jj) (a covariance
    # near zero is compared on the scale of the variances it is made of).
    scale = np.sqrt(np.outer(np.diag(vcov), np.diag(vcov)))
    assert np.all(np.abs(mine - vcov) <= 1e-3 * scale)


@pytest.mark.parametrize("case, method", PARAMS)
def test_sigma_aic_bic(case, method):
    model, _ = fitted(case, method)
    ref = _reference(case, method)
    assert model.sigma_ == pytest.approx(ref["sigma"], rel=1e-3)
    assert model.aic_ == pytest.approx(ref["aic"], rel=1e-3)
    assert model.bic_ == pytest.approx(ref["bic"], rel=1e-3)


def _varcorr_key(row: dict, factor_names: set[str]):
    return (sklmm_group_name(row["grp"], factor_names), row.get("var1"), row.get("var2"))


@pytest.mark.parametrize("case, method", PARAMS)
def test_variance_components(case, method):
    model, _ = fitted(case, method)
    ref = _reference(case, method)
    vc = model.variance_components_
    factor_names = set(model.random_effects_)
    ours = {
        (row.group, None if pd.isna(row.var1) else row.var1, None if pd.isna(row.var2) else row.var2): row
        for row in vc.itertuples()
    }
    assert len(ours) == len(ref["varcorr"])
    sigma = ref["sigma"]
    for row in ref["varcorr"]:
        key = _varcorr_key(row, factor_names)
        mine = ours[key]
        if key[2] is not None:  # a correlation
            assert abs(mine.sdcor - row["sdcor"]) <= 2e-2, key
        elif row["sdcor"] < 1e-4 * sigma * 10 and ref["singular"]:
            # on the boundary: both essentially zero
            assert mine.sdcor < 1e-3 * sigma, key
        else:
            assert mine.sdcor == pytest.approx(row["sdcor"], rel=2e-2), key


@pytest.mark.parametrize("case, method", PARAMS)
def test_random_effects_blups(case, method):
    model, _ = fitted(case, method)
    ref = _reference(case, method)
    expected = ranef_frames(ref, set(model.random_effects_))
    assert set(expected) == set(model.random_effects_)
    for factor, frame in expected.items():
        mine = model.random_effects_[factor]
        mine = mine.set_axis(mine.index.astype(str))
        assert sorted(mine.index) == sorted(frame.index), factor
        assert list(mine.columns) == list(frame.columns), factor
        mine = mine.loc[frame.index]
        for column in frame.columns:
            spread = frame[column].std()
            if spread < 1e-6 * ref["sigma"]:  # a zero-variance term: all BLUPs ~ 0
                assert np.abs(mine[column]).max() < 1e-3 * ref["sigma"]
                continue
            err = np.abs(mine[column].to_numpy() - frame[column].to_numpy()).max()
            assert err <= 2e-2 * spread, (factor, column, err, spread)


@pytest.mark.parametrize("case, method", PARAMS)
def test_fitted_values(case, method):
    """predict on the training rows with their groups is lme4's fitted()."""
    model, _ = fitted(case, method)
    ref = _reference(case, method)
    X, y, groups, _ = load_case(case).arrays()
    head = np.asarray(ref["fitted_head"])
    prediction = model.predict(X.iloc[: len(head)], groups=groups.iloc[: len(head)])
    scale = max(ref["sigma"], 1e-12)
    np.testing.assert_allclose(prediction, head, atol=2e-2 * scale)


@pytest.mark.parametrize("case, method", PARAMS)
def test_theta_layout_and_singularity(case, method):
    """theta_ is in lme4's order and reproduces the variance components."""
    model, caught = fitted(case, method)
    ref = _reference(case, method)
    theta_ref = np.asarray(as_list(ref["theta"]), dtype=float)
    assert model.theta_.shape == theta_ref.shape
    # Same order: each element close, or both near zero on the boundary.
    np.testing.assert_allclose(model.theta_, theta_ref, atol=2e-2 * max(1.0, np.abs(theta_ref).max()))
    assert model.singular_ == bool(ref["singular"])
    from sklmm import SingularFitWarning

    warned = any(issubclass(w.category, SingularFitWarning) for w in caught)
    assert warned == bool(ref["singular"])
