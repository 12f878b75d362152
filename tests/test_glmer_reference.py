"""GLMMs against lme4 1.1-31's glmer (tests/data/glmer; see tests/glmer_cases.py).

Tolerances (issue 12): objective (-2 logLik) no worse than lme4's by 1e-3
(lower is fine); fixed effects within 1e-2 of lme4's standard error;
random-effect standard deviations within 2e-2 relative (correlations 2e-2
absolute); conditional modes within 2e-2 of their spread; fitted values
(response scale) within 1e-3.  Standard errors, from the Hessian of the
objective as lme4's default, within 2e-2 relative (both are finite
differences); Wald intervals within 2e-2 standard errors.
"""

from __future__ import annotations

import numpy as np
import pytest

from glmer_cases import CASES, SLOW, fitted, load

PARAMS = [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name for name in CASES]


@pytest.mark.parametrize("name", PARAMS)
def test_objective_and_fixed_effects(name):
    case, model = load(name), fitted(name)
    ref = case.reference
    assert model.objective_ <= ref["objective"] + 1e-3
    assert model.objective_ >= ref["objective"] - 0.5  # the same criterion, not a different scale
    assert model.log_likelihood_ == pytest.approx(-0.5 * model.objective_)
    assert model.aic_ - model.objective_ == pytest.approx(ref["aic"] - ref["objective"])
    assert model.bic_ - model.objective_ == pytest.approx(ref["bic"] - ref["objective"])
    coef = np.array(list(ref["coef"].values()))
    se = np.array(list(ref["coef_se"].values()))
    fe = model.fixed_effects_
    np.testing.assert_array_less(np.abs(fe["estimate"].to_numpy() - coef), 1e-2 * se)
    np.testing.assert_allclose(fe["std_error"].to_numpy(), se, rtol=2e-2)
    z = np.asarray(ref["z_table"]["z"])
    np.testing.assert_allclose(fe["z_value"].to_numpy(), z, rtol=3e-2)
    assert model.singular_ == ref["singular"]


@pytest.mark.parametrize("name", PARAMS)
def test_variance_components_and_modes(name):
    case, model = load(name), fitted(name)
    ref = case.reference
    vc = model.variance_components_
    assert "Residual" not in vc["group"].tolist()
    assert len(vc) == len(ref["varcorr"])
    ours = {(r.group, r.var1, r.var2 if isinstance(r.var2, str) else None): r.sdcor for r in vc.itertuples()}
    for row in ref["varcorr"]:
        key = (row["grp"], row["var1"], row["var2"])
        value = ours.get(key)
        assert value is not None, key
        if row["var2"] is None:
            assert value == pytest.approx(row["sdcor"], rel=2e-2)
        else:
            assert value == pytest.approx(row["sdcor"], abs=2e-2)
    for factor, r in ref["ranef"].items():
        frame = model.random_effects_[factor]
        expected = np.asarray(r["values"], dtype=float)
        got = frame.loc[[str(level) for level in r["levels"]]].to_numpy()
        spread = expected.std(axis=0)
        assert np.all(np.abs(got - expected) <= 2e-2 * spread), factor


@pytest.mark.parametrize("name", PARAMS)
def test_fitted_values_and_predictions(name):
    case, model = load(name), fitted(name)
    ref = case.reference
    X, y, groups, weights, offset = case.arrays()
    head = slice(0, 20)
    off = None if offset is None else offset[head]
    if hasattr(model, "predict_proba"):
        conditional = model.predict_proba(X[head], groups=groups[head], offset=off)[:, 1]
        population = model.predict_proba(X[head], offset=off)[:, 1]
    else:
        conditional = model.predict(X[head], groups=groups[head], offset=off)
        population = model.predict(X[head], offset=off)
    np.testing.assert_allclose(conditional, ref["fitted_head"], atol=1e-3)
    np.testing.assert_allclose(population, ref["predict_population_head"], atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("name", PARAMS)
def test_wald_intervals(name):
    case, model = load(name), fitted(name)
    ref = case.reference["confint_wald"]
    se = np.array(list(case.reference["coef_se"].values()))
    ci = model.confint("wald").dropna()
    np.testing.assert_array_less(np.abs(ci["lower"].to_numpy() - np.asarray(ref["lower"])), 4e-2 * se)
    np.testing.assert_array_less(np.abs(ci["upper"].to_numpy() - np.asarray(ref["upper"])), 4e-2 * se)


@pytest.mark.parametrize("name", PARAMS)
def test_glmer_formula_interface(name):
    """The same case through sklmm.glmer(formula, data): lme4's formula and raw columns, same tolerances."""
    import sklmm

    case = load(name)
    spec, ref = case.spec, case.reference
    data = case.data
    model = sklmm.glmer(spec["formula"], data, family=spec["family"], link=spec["link"], weights=spec.get("weights"), nagq=int(spec["nAGQ"]))
    assert model.objective_ <= ref["objective"] + 1e-3
    fe = model.fixed_effects_
    assert fe.index.tolist() == list(ref["coef"])
    coef = np.array(list(ref["coef"].values()))
    se = np.array(list(ref["coef_se"].values()))
    np.testing.assert_array_less(np.abs(fe["estimate"].to_numpy() - coef), 1e-2 * se)
    sd = {(r.group, r.var1): r.sdcor for r in model.variance_components_.itertuples() if not isinstance(r.var2, str)}
    for row in ref["varcorr"]:
        if row["var2"] is None:
            assert sd[(row["grp"], row["var1"])] == pytest.approx(row["sdcor"], rel=2e-2)
    np.testing.assert_allclose(model.predict(data.head(20)), ref["fitted_head"], atol=1e-3)
