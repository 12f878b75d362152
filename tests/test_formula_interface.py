"""The formula interface beyond the lme4 numbers (tests/test_formula_reference.py has those).

The X-form fit of sleepstudy, checked against lme4 1.1-31 in test_lme4_reference.py, is the
reference here: a formula fit of the same model must give the same results (1e-7 relative: the same
optimiser on the same cross products) through every method.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GroupKFold, KFold, cross_val_score, cross_validate

import sklmm
from sklmm import MixedLinearRegressor, make_conditional_scorer
from sklmm.datasets import load_sleepstudy


@pytest.fixture(scope="module")
def data():
    return load_sleepstudy()


@pytest.fixture(scope="module")
def pair(data):
    X, y, groups = load_sleepstudy(return_X_y_groups=True)
    x_form = MixedLinearRegressor("(1 + Days | Subject)").fit(X, y, groups=groups)
    formula = sklmm.lmer("Reaction ~ Days + (Days | Subject)", data)
    return x_form, formula


def test_lmer_matches_the_x_form(pair, data):
    x_form, formula = pair
    assert formula.objective_ == pytest.approx(x_form.objective_, rel=1e-9)
    pd.testing.assert_frame_equal(formula.fixed_effects_, x_form.fixed_effects_, rtol=1e-6)
    pd.testing.assert_frame_equal(formula.variance_components_, x_form.variance_components_, rtol=1e-6)
    X, _, groups = load_sleepstudy(return_X_y_groups=True)
    np.testing.assert_allclose(formula.predict(data), x_form.predict(X, groups=groups), rtol=1e-9)


def test_estimator_with_formula_fits_without_groups(pair, data):
    _, formula = pair
    est = MixedLinearRegressor(formula="~ Days + (Days | Subject)").fit(data[["Days", "Subject"]], data["Reaction"])
    assert est.objective_ == pytest.approx(formula.objective_, rel=1e-12)
    assert list(est.feature_names_in_) == ["Days", "Subject"]


def test_methods_agree_with_the_x_form(pair, data):
    x_form, formula = pair
    X, y, groups = load_sleepstudy(return_X_y_groups=True)
    np.testing.assert_allclose(formula.predict_se(data.head(5)), x_form.predict_se(X.head(5), groups=groups.head(5)), rtol=1e-6)
    for key in x_form.random_effects_cov_:
        np.testing.assert_allclose(formula.random_effects_cov_[key], x_form.random_effects_cov_[key], rtol=1e-5)
    np.testing.assert_allclose(formula.simulate(3, random_state=1), x_form.simulate(3, random_state=1), rtol=1e-6)
    pd.testing.assert_frame_equal(formula.confint("wald"), x_form.confint("wald"), rtol=1e-6)
    pd.testing.assert_frame_equal(formula.confint("profile", parm="beta_"), x_form.confint("profile", parm="beta_"), rtol=1e-5)
    boot_f = formula.confint("bootstrap", n_boot=20, random_state=3)
    boot_x = x_form.confint("bootstrap", n_boot=20, random_state=3)
    pd.testing.assert_frame_equal(boot_f, boot_x, rtol=1e-4)


def test_summary_prints_the_formula_as_given(pair):
    _, formula = pair
    text = str(formula.summary())
    assert "Formula: Reaction ~ Days + (Days | Subject)" in text
    est = MixedLinearRegressor(formula="~ Days + (Days | Subject)").fit(load_sleepstudy(), load_sleepstudy()["Reaction"])
    assert "Formula: y ~ Days + (Days | Subject)" in str(est.summary())


def test_anova_between_formula_fits(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m0 = sklmm.lmer("Reaction ~ Days + (1 | Subject)", data)
        m1 = sklmm.lmer("Reaction ~ Days + (Days | Subject)", data)
        table = sklmm.anova(m0, m1)
    # lme4 1.1-31: anova(fm0, fm1): Chisq 42.139, Df 2, deviance 1802.1 / 1751.9
    assert table["Chisq"].iloc[1] == pytest.approx(42.139, abs=1e-3)
    assert "m0: Reaction ~ Days + (1 | Subject)" in str(table)


def test_pickle_and_clone(pair, data):
    _, formula = pair
    restored = pickle.loads(pickle.dumps(formula))
    np.testing.assert_array_equal(restored.predict(data), formula.predict(data))
    fresh = clone(formula)
    assert fresh.formula == "~ Days + (Days | Subject)" and not hasattr(fresh, "coef_")


def test_stateful_transforms_use_the_training_values(data):
    model = sklmm.lmer("Reaction ~ scale(Days) + (1 | Subject)", data)
    # scale() with the training mean and SD: the first rows predicted alone as within all rows
    np.testing.assert_allclose(model.predict(data.head(3)), model.predict(data)[:3], rtol=1e-12)
    unscaled = sklmm.lmer("Reaction ~ Days + (1 | Subject)", data)
    np.testing.assert_allclose(model.predict(data.head(3)), unscaled.predict(data.head(3)), rtol=1e-6)


def test_new_levels_and_missing_columns(data):
    model = sklmm.lmer("Reaction ~ Days + (Days | Subject)", data)
    new_subject = data.head(3).assign(Subject="999")
    np.testing.assert_allclose(model.predict(new_subject), model.fixed_effects_["estimate"].iloc[0] + model.fixed_effects_["estimate"].iloc[1] * data["Days"].head(3))
    with pytest.raises(ValueError, match=r"has no column\(s\) \['Days'\]"):
        model.predict(data.head(3).drop(columns="Days"))
    factor_model = sklmm.lmer("Reaction ~ Days + phase + (1 | Subject)", data.assign(phase=np.where(data["Days"] < 5, "early", "late")))
    with pytest.raises(ValueError, match=r"column 'phase' has level\(s\) \['middle'\] not seen in fit"):
        factor_model.predict(data.head(2).assign(phase="middle"))


def test_misuse_errors(data):
    with pytest.raises(ValueError, match="exclude each other"):
        MixedLinearRegressor(formula="~ Days + (1 | Subject)", random_effects="(1 | Subject)").fit(data, data["Reaction"])
    with pytest.raises(ValueError, match="takes its grouping factors from the columns of X"):
        MixedLinearRegressor(formula="~ Days + (1 | Subject)").fit(data, data["Reaction"], groups=data["Subject"])
    with pytest.raises(TypeError, match="X must be a pandas DataFrame"):
        MixedLinearRegressor(formula="~ Days + (1 | Subject)").fit(data[["Days"]].to_numpy(), data["Reaction"])
    with pytest.raises(ValueError, match="is one-sided"):
        MixedLinearRegressor(formula="Reaction ~ Days + (1 | Subject)").fit(data, data["Reaction"])
    with pytest.raises(ValueError, match="needs a two-sided formula"):
        sklmm.lmer("~ Days + (1 | Subject)", data)
    with pytest.raises(ValueError, match=r"column 'Days', used by the fixed part, has 1 missing value"):
        sklmm.lmer("Reaction ~ Days + (1 | Subject)", data.assign(Days=data["Days"].where(data.index != 4)))
    with pytest.raises(ValueError, match=r"grouping factor 'Patient', which is not a column"):
        sklmm.lmer("Reaction ~ Days + (1 | Patient)", data)
    with pytest.raises(ValueError, match=r"weights='w' is not a column of data"):
        sklmm.lmer("Reaction ~ Days + (1 | Subject)", data, weights="w")


def test_callers_data_unchanged(data):
    frame = data.assign(flag=data["Days"] > 4)
    before = frame.copy()
    sklmm.lmer("Reaction ~ Days + flag + (1 | Subject)", frame).predict(frame)
    pd.testing.assert_frame_equal(frame, before)


def test_cross_validation_needs_no_routing(data):
    """A formula model takes the grouping columns from X: Pipelines and CV need no metadata routing."""
    model = MixedLinearRegressor(formula="~ Days + (Days | Subject)")
    X, y = data[["Days", "Subject"]], data["Reaction"]
    within = cross_val_score(model, X, y, cv=KFold(5, shuffle=True, random_state=0), scoring=make_conditional_scorer())
    assert within.mean() > 0.6
    new_subjects = cross_validate(model, X, y, cv=GroupKFold(3), groups=data["Subject"])
    # held-out subjects are new levels: population-level predictions, as GroupKFold measures
    assert new_subjects["test_score"].mean() < 0.2
