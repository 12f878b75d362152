"""``cbind(successes, failures)`` responses in ``sklmm.glmer``, against lme4 1.1-31.

References: tests/data/glmer_cbind/reference.json, made by
tests/data/glmer_cbind/make_glmer_cbind.R from cbpp.csv (lme4's cbpp) and
trials.csv (simulated binomial counts with replicate weights ``w`` and rows
of zero trials).  Tolerances as issue 12's: objective no worse than lme4's
by 1e-3 (lower is fine), fixed effects within 1e-2 of lme4's standard
error, random-effect standard deviations within 2e-2 relative (the
correlation 2e-2 absolute), conditional modes within 2e-2 of their spread,
fitted values within 1e-3; AIC and BIC offsets from the objective exact
(lme4's ``nobs`` counts the rows of zero trials).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sklmm

DATA = Path(__file__).parent / "data" / "glmer_cbind"
REFERENCE = json.loads((DATA / "reference.json").read_text())
CASES = {
    "cbpp": ("cbpp.csv", "cbind(incidence, size - incidence) ~ period + (1 | herd)", None, {"herd": str, "period": str}),
    "trials": ("trials.csv", "cbind(succ, trials - succ) ~ x + (1 + x | g)", "w", {"g": str}),
    "trials_intercept": ("trials.csv", "cbind(succ, trials - succ) ~ x + (1 | g)", None, {"g": str}),
}


def _data(name):
    return pd.read_csv(DATA / CASES[name][0], dtype=CASES[name][3])


def _fit(name):
    _, formula, weights, _ = CASES[name]
    return sklmm.glmer(formula, _data(name), family="binomial", weights=weights)


@pytest.mark.parametrize("name", list(CASES))
def test_cbind_matches_lme4(name):
    ref = REFERENCE[name]
    model = _fit(name)
    assert ref["objective"] - 0.5 <= model.objective_ <= ref["objective"] + 1e-3
    assert model.n_obs_ == ref["nobs"]
    assert model.aic_ - model.objective_ == pytest.approx(ref["aic"] - ref["objective"], abs=1e-9)
    assert model.bic_ - model.objective_ == pytest.approx(ref["bic"] - ref["objective"], abs=1e-9)
    fe = model.fixed_effects_
    assert fe.index.tolist() == ref["coef_names"]
    np.testing.assert_array_less(np.abs(fe["estimate"].to_numpy() - ref["coef"]), 1e-2 * np.asarray(ref["coef_se"]))
    np.testing.assert_allclose(fe["std_error"].to_numpy(), ref["coef_se"], rtol=2e-2)
    vc = model.variance_components_
    sd = vc["sdcor"].to_numpy()
    is_sd = vc["var2"].isna().to_numpy()
    ref_sd = np.atleast_1d(np.asarray(ref["sd"], dtype=float))
    np.testing.assert_allclose(sd[is_sd], ref_sd[is_sd], rtol=2e-2)
    np.testing.assert_allclose(sd[~is_sd], ref_sd[~is_sd], atol=2e-2)
    for factor, r in ref["ranef"].items():
        frame = model.random_effects_[factor]
        expected = np.asarray(r["values"]).reshape(frame.shape[1], -1).T  # R: column-major
        got = frame.loc[r["levels"]].to_numpy()
        spread = expected.std(axis=0)
        assert np.all(np.abs(got - expected) < 2e-2 * spread)
    # lme4's fitted() covers every row, those with zero trials included
    np.testing.assert_allclose(model.predict(_data(name)), ref["fitted"], atol=1e-3)


def test_cbind_equals_proportion_with_trials_as_weights():
    """cbind(k, n - k) is the proportion k / n with weights n (R's binomial initialize)."""
    data = _data("cbpp")
    data["prop"] = data["incidence"] / data["size"]
    counts = _fit("cbpp")
    proportion = sklmm.glmer("prop ~ period + (1 | herd)", data, family="binomial", weights="size")
    assert counts.objective_ == pytest.approx(proportion.objective_, abs=1e-10)
    np.testing.assert_allclose(counts.coef_, proportion.coef_, atol=1e-10)
    np.testing.assert_allclose(counts.theta_, proportion.theta_, atol=1e-10)


def test_cbind_weights_multiply_the_totals():
    """weights= multiply the totals (lme4); with replicate weights the fit equals the expanded data's.

    The deviance and estimates of cbind with integer weights w equal those of
    the data with each row repeated w times; the objective differs by
    the binomial coefficients, which R's aic counts w times per row (so it is
    the expanded data's objective exactly).
    """
    data = _data("trials")
    formula = "cbind(succ, trials - succ) ~ x + (1 | g)"
    weighted = sklmm.glmer(formula, data, family="binomial", weights="w")
    expanded = data.loc[data.index.repeat(data["w"])].reset_index(drop=True)
    repeated = sklmm.glmer(formula, expanded, family="binomial")
    assert weighted.objective_ == pytest.approx(repeated.objective_, abs=2e-4)
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, atol=2e-3 * weighted.fixed_effects_["std_error"].iloc[1])
    np.testing.assert_allclose(weighted.theta_, repeated.theta_, rtol=2e-3)


def test_cbind_expressions_and_zero_totals():
    data = _data("cbpp")
    data["failures"] = data["size"] - data["incidence"]
    by_column = sklmm.glmer("cbind(incidence, failures) ~ period + (1 | herd)", data, family="binomial")
    by_expression = _fit("cbpp")
    assert by_column.objective_ == pytest.approx(by_expression.objective_, abs=1e-10)
    # a row of zero trials: weight 0, out of the fit, counted by n_obs_ (lme4: nobs 57, the same deviance)
    extra = pd.concat([data, pd.DataFrame({"herd": ["1"], "incidence": [0], "size": [0], "period": ["1"], "failures": [0]})], ignore_index=True)
    with_zero = sklmm.glmer("cbind(incidence, failures) ~ period + (1 | herd)", extra, family="binomial")
    assert with_zero.objective_ == pytest.approx(by_column.objective_, abs=1e-8)
    ref = REFERENCE["zero_total"]
    assert with_zero.n_obs_ == ref["nobs"] == 57
    assert with_zero.bic_ - with_zero.objective_ == pytest.approx(ref["bic"] - ref["objective"], abs=1e-9)
    # the summary as lme4's: no weights line (none given), the zero row's Pearson residual 0 in the quantiles
    summary = with_zero.summary()
    assert "Weights" not in str(summary) and "Number of obs: 57" in str(summary)
    np.testing.assert_allclose(summary.scaled_residuals.to_numpy(), ref["scaled_residuals"], atol=2e-3)


def test_cbind_errors():
    data = _data("cbpp")
    formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
    with pytest.raises(ValueError, match="needs family='binomial'"):
        sklmm.glmer(formula, data, family="poisson")
    bad = data.copy()
    bad.loc[3, "incidence"] = -1
    with pytest.raises(ValueError, match=r"'incidence' has 1 negative count\(s\) \(first at row 3"):
        sklmm.glmer(formula, bad, family="binomial")
    bad = data.copy()
    bad.loc[0, "size"] = 1  # 2 cases of 1: size - incidence < 0
    with pytest.raises(ValueError, match="'size - incidence' has 1 negative"):
        sklmm.glmer(formula, bad, family="binomial")
    with pytest.raises(ValueError, match="takes two columns"):
        sklmm.glmer("cbind(incidence, size, herd) ~ period + (1 | herd)", data, family="binomial")
    with pytest.raises(ValueError, match="is not a column|could not be built"):
        sklmm.glmer("cbind(incidence, nope) ~ period + (1 | herd)", data, family="binomial")
    fractional = data.astype({"incidence": float})
    fractional.loc[0, "incidence"] = 2.5
    with pytest.warns(UserWarning, match="non-integer counts in a binomial glm") as record:
        model = sklmm.glmer(formula, fractional, family="binomial")
    assert len(record) == 1
    # lme4 fits them too (reference "noninteger"); its log-likelihood rounds the counts at the
    # fitted means, sklmm's deviance does not: the estimates agree within 0.1 standard error
    ref = REFERENCE["noninteger"]
    np.testing.assert_array_less(np.abs(model.fixed_effects_["estimate"].to_numpy() - ref["coef"]), 0.1 * np.asarray(ref["coef_se"]))


def test_cbind_no_warning_for_integer_counts():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fit("cbpp")
