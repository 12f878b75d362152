"""Behaviour of MixedLinearRegressor: inputs, prediction, equivalences, errors.

Expected numbers come from other fits of sklmm that must agree (equivalent
model formulations), from scikit-learn's LinearRegression, or from the lme4
reference cases in tests/data (lme4 1.1-31).
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LinearRegression

from reference_cases import load_case
from sklmm import FormulaError, MixedLinearRegressor, RankDeficientWarning


@pytest.fixture(scope="module")
def sleepstudy():
    X, y, groups, _ = load_case("sleepstudy").arrays()
    return X, y, groups


@pytest.fixture(scope="module")
def sleep_model(sleepstudy):
    X, y, groups = sleepstudy
    return MixedLinearRegressor(random_effects="(1 + Days | Subject)").fit(X, y, groups=groups)


# -- least squares without groups ---------------------------------------------


def test_without_groups_is_weighted_least_squares():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3))
    y = X @ [1.0, -2.0, 0.5] + 3.0 + rng.normal(size=50)
    w = rng.uniform(0.5, 2.0, size=50)
    ours = MixedLinearRegressor().fit(X, y, sample_weight=w)
    theirs = LinearRegression().fit(X, y, sample_weight=w)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=1e-10)
    assert ours.intercept_ == pytest.approx(theirs.intercept_, rel=1e-10)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-10)
    assert ours.random_effects_ == {}
    assert list(ours.variance_components_["group"]) == ["Residual"]
    # ML sigma of least squares: sqrt(weighted RSS / n)
    rss = np.sum(w * (y - theirs.predict(X)) ** 2)
    assert MixedLinearRegressor(reml=False).fit(X, y, sample_weight=w).sigma_ == pytest.approx(np.sqrt(rss / 50), rel=1e-10)
    assert ours.sigma_ == pytest.approx(np.sqrt(rss / 46), rel=1e-10)


# -- prediction -------------------------------------------------------------------


def test_predict_known_new_and_no_groups(sleepstudy, sleep_model):
    X, y, groups = sleepstudy
    population = sleep_model.predict(X)
    np.testing.assert_allclose(population, sleep_model.intercept_ + sleep_model.coef_[0] * X["Days"].to_numpy())
    # a level never seen in fit contributes zero
    new = pd.DataFrame({"Subject": ["new-subject"] * len(X)})
    np.testing.assert_allclose(sleep_model.predict(X, groups=new), population)
    # known levels add their intercept and slope
    conditional = sleep_model.predict(X, groups=groups)
    b = sleep_model.random_effects_["Subject"].loc[groups["Subject"]]
    expected = population + b["(Intercept)"].to_numpy() + b["Days"].to_numpy() * X["Days"].to_numpy()
    np.testing.assert_allclose(conditional, expected)
    # a mix of known and unknown levels, row by row
    mixed = groups.copy()
    mixed.loc[::2, "Subject"] = "unknown"
    out = sleep_model.predict(X, groups=mixed)
    np.testing.assert_allclose(out[::2], population[::2])
    np.testing.assert_allclose(out[1::2], conditional[1::2])


def test_predict_accepts_unnamed_groups_by_position(sleepstudy, sleep_model):
    X, _, groups = sleepstudy
    expected = sleep_model.predict(X, groups=groups)
    np.testing.assert_allclose(sleep_model.predict(X, groups=groups["Subject"].to_numpy()), expected)
    np.testing.assert_allclose(sleep_model.predict(X, groups=groups.to_numpy()), expected)


def test_predict_categorical_groups_in_another_category_order(sleepstudy, sleep_model):
    X, _, groups = sleepstudy
    expected = sleep_model.predict(X, groups=groups)
    categories = sorted(groups["Subject"].unique(), reverse=True) + ["extra"]
    shuffled = pd.DataFrame({"Subject": pd.Categorical(groups["Subject"], categories=categories)})
    np.testing.assert_allclose(sleep_model.predict(X, groups=shuffled), expected)


def test_score_conditional_beats_population(sleepstudy, sleep_model):
    X, y, groups = sleepstudy
    assert sleep_model.score(X, y, groups=groups) > sleep_model.score(X, y) + 0.2


# -- scikit-learn plumbing ----------------------------------------------------------


def test_clone_params_and_pickle(sleepstudy, sleep_model):
    X, y, groups = sleepstudy
    params = sleep_model.get_params()
    assert params == {"random_effects": "(1 + Days | Subject)", "reml": True, "fit_intercept": True, "max_iter": 10_000, "formula": None}
    fresh = clone(sleep_model)
    assert not hasattr(fresh, "coef_")
    fresh.set_params(reml=False)
    assert fresh.get_params()["reml"] is False
    restored = pickle.loads(pickle.dumps(sleep_model))
    np.testing.assert_array_equal(restored.predict(X, groups=groups), sleep_model.predict(X, groups=groups))
    # a fitted model holds no per-row arrays: its pickle does not grow with n
    assert len(pickle.dumps(sleep_model)) < 40_000


def test_feature_names_and_array_slope_names(sleepstudy):
    X, y, groups = sleepstudy
    model = MixedLinearRegressor("(1 + Days | Subject)").fit(X, y, groups=groups)
    assert list(model.feature_names_in_) == ["Days"]
    assert model.n_features_in_ == 1
    array_model = MixedLinearRegressor("(1 + x0 | group)").fit(X.to_numpy(), y, groups=groups["Subject"].to_numpy())
    assert not hasattr(array_model, "feature_names_in_")
    assert list(array_model.random_effects_) == ["group"]
    assert list(array_model.random_effects_["group"].columns) == ["(Intercept)", "x0"]
    assert array_model.objective_ == pytest.approx(model.objective_, abs=1e-6)


def test_caller_data_not_modified(sleepstudy):
    X, y, groups = sleepstudy
    X2, y2, g2 = X.copy(), y.copy(), groups.copy()
    w = np.linspace(1, 2, len(y))
    w2 = w.copy()
    MixedLinearRegressor("(1 + Days | Subject)").fit(X2, y2, groups=g2, sample_weight=w2)
    pd.testing.assert_frame_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    pd.testing.assert_frame_equal(g2, groups)
    np.testing.assert_array_equal(w2, w)


# -- equivalent formulations ----------------------------------------------------------


def test_default_random_effects_is_intercept_per_factor():
    X, y, groups, _ = load_case("penicillin").arrays()
    default = MixedLinearRegressor().fit(X, y, groups=groups)
    explicit = MixedLinearRegressor("(1 | plate) + (1 | sample)").fit(X, y, groups=groups)
    assert default.objective_ == pytest.approx(explicit.objective_, abs=1e-8)
    np.testing.assert_allclose(default.theta_, explicit.theta_)


def test_intercept_only_fixed_part_with_zero_column_inputs():
    X, y, groups, _ = load_case("dyestuff").arrays()
    assert X.shape[1] == 0
    frame_fit = MixedLinearRegressor("(1 | Batch)").fit(X, y, groups=groups)
    array_fit = MixedLinearRegressor("(1 | Batch)").fit(np.empty((len(y), 0)), y, groups=groups["Batch"])
    assert frame_fit.objective_ == pytest.approx(array_fit.objective_)
    assert frame_fit.coef_.shape == (0,)
    assert frame_fit.predict(X, groups=groups).shape == (len(y),)


def test_no_fixed_intercept_equals_explicit_ones_column(sleepstudy):
    X, y, groups = sleepstudy
    with_ones = X.assign(one=1.0)[["one", "Days"]]
    a = MixedLinearRegressor("(1 + Days | Subject)", fit_intercept=False).fit(with_ones, y, groups=groups)
    b = MixedLinearRegressor("(1 + Days | Subject)").fit(X, y, groups=groups)
    assert a.intercept_ == 0.0
    assert a.objective_ == pytest.approx(b.objective_, abs=1e-6)
    np.testing.assert_allclose(a.coef_, [b.intercept_, b.coef_[0]], rtol=1e-5)


def test_nested_equals_explicit_interaction_terms():
    X, y, groups, _ = load_case("pastes").arrays()
    nested = MixedLinearRegressor("(1 | batch/cask)").fit(X, y, groups=groups)
    explicit = MixedLinearRegressor("(1 | batch) + (1 | batch:cask)").fit(X, y, groups=groups)
    combined = groups.assign(bc=groups["batch"] + ":" + groups["cask"])
    precombined = MixedLinearRegressor("(1 | batch) + (1 | bc)").fit(X, y, groups=combined)
    assert nested.objective_ == pytest.approx(explicit.objective_, abs=1e-8)
    assert nested.objective_ == pytest.approx(precombined.objective_, abs=1e-6)
    assert set(nested.random_effects_) == {"batch", "batch:cask"}
    assert nested.random_effects_["batch:cask"].index[0] == "A:a"
    # prediction with the components finds the interaction's levels
    np.testing.assert_allclose(nested.predict(X, groups=groups), precombined.predict(X, groups=combined), rtol=1e-6)


def test_zero_weight_rows_are_left_out(sleepstudy):
    X, y, groups = sleepstudy
    w = np.ones(len(y))
    w[:10] = 0.0
    weighted = MixedLinearRegressor("(1 + Days | Subject)").fit(X, y, groups=groups, sample_weight=w)
    dropped = MixedLinearRegressor("(1 + Days | Subject)").fit(X.iloc[10:], y[10:], groups=groups.iloc[10:])
    assert weighted.objective_ == pytest.approx(dropped.objective_, abs=1e-8)
    assert weighted.n_obs_ == len(y) - 10


def test_integer_and_categorical_labels_give_the_same_fit(sleepstudy, sleep_model):
    X, y, groups = sleepstudy
    as_int = MixedLinearRegressor("(1 + Days | Subject)").fit(X, y, groups=groups.astype(int))
    as_cat = MixedLinearRegressor("(1 + Days | Subject)").fit(X, y, groups=groups.astype("category"))
    assert as_int.objective_ == pytest.approx(sleep_model.objective_, abs=1e-8)
    assert as_cat.objective_ == pytest.approx(sleep_model.objective_, abs=1e-8)
    assert as_int.random_effects_["Subject"].index.dtype.kind == "i"


def test_rank_deficient_fixed_effects_dropped_with_warning(sleepstudy):
    X, y, groups = sleepstudy
    doubled = X.assign(Days2=2 * X["Days"])
    with pytest.warns(RankDeficientWarning, match=r"Days2"):
        model = MixedLinearRegressor("(1 + Days | Subject)").fit(doubled, y, groups=groups)
    reference = load_case("sleepstudy").reference["reml"]
    assert model.coef_[1] == 0.0
    assert model.objective_ == pytest.approx(reference["objective"], abs=1e-4)
    assert list(model.fixed_effects_.index) == ["(Intercept)", "Days"]


def test_convergence_warning_when_budget_is_too_small(sleepstudy):
    X, y, groups = sleepstudy
    with pytest.warns(ConvergenceWarning, match="max_iter=5"):
        model = MixedLinearRegressor("(1 + Days | Subject)", max_iter=5).fit(X, y, groups=groups)
    assert model.n_iter_ <= 5
    assert not model.converged_


def test_no_warnings_on_a_regular_fit(sleepstudy):
    X, y, groups = sleepstudy
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MixedLinearRegressor("(1 + Days | Subject)").fit(X, y, groups=groups)


# -- errors ----------------------------------------------------------------------------


def test_random_effects_without_groups_says_what_to_do(sleepstudy):
    X, y, _ = sleepstudy
    with pytest.raises(ValueError, match=r"groups=None.*set_fit_request\(groups=True\)"):
        MixedLinearRegressor("(1 + Days | Subject)").fit(X, y)


@pytest.mark.parametrize(
    "formula, message",
    [
        ("(1 + Dayz | Subject)", r"slope 'Dayz'.*not a column of X"),
        ("(1 | Subjekt)", r"grouping factor 'Subjekt'.*not a column of groups"),
        ("(1 | Subject) + (1 | Subject)", r"twice for factor 'Subject'"),
        ("(1 + Days | Subject", r"expected '\)' closing the term.*position 19"),
    ],
)
def test_bad_random_effects(sleepstudy, formula, message):
    X, y, groups = sleepstudy
    with pytest.raises(ValueError, match=message):
        MixedLinearRegressor(formula).fit(X, y, groups=groups)


def test_unidentifiable_grouping_factors(sleepstudy):
    X, y, groups = sleepstudy
    one_level = pd.DataFrame({"g": ["a"] * len(y)})
    with pytest.raises(ValueError, match=r"'g' has only 1 level"):
        MixedLinearRegressor("(1 | g)").fit(X, y, groups=one_level)
    per_row = pd.DataFrame({"g": np.arange(len(y))})
    with pytest.raises(ValueError, match=r"'g' has 180 levels for 180 observations"):
        MixedLinearRegressor("(1 | g)").fit(X, y, groups=per_row)


def test_bad_groups_and_weights(sleepstudy):
    X, y, groups = sleepstudy
    with pytest.raises(ValueError, match=r"groups has 179 rows but X has 180"):
        MixedLinearRegressor().fit(X, y, groups=groups.iloc[1:])
    holey = groups.copy()
    holey.loc[5, "Subject"] = None
    with pytest.raises(ValueError, match=r"groups column 'Subject' has 1 missing value.*row 5"):
        MixedLinearRegressor().fit(X, y, groups=holey)
    with pytest.raises(ValueError, match=r"sample_weight has 1 negative"):
        MixedLinearRegressor().fit(X, y, groups=groups, sample_weight=np.r_[-1.0, np.ones(179)])
    with pytest.raises(ValueError, match=r"sample_weight has 1 NaN"):
        MixedLinearRegressor().fit(X, y, groups=groups, sample_weight=np.r_[np.nan, np.ones(179)])
    with pytest.raises(ValueError, match=r"sample_weight has 10 entries but X has 180"):
        MixedLinearRegressor().fit(X, y, groups=groups, sample_weight=np.ones(10))


def test_formula_error_points_at_position():
    with pytest.raises(FormulaError) as info:
        MixedLinearRegressor("(1 + x | g) + (1 ? h)").fit(np.ones((4, 1)), np.arange(4.0), groups=[0, 0, 1, 1])
    assert info.value.pos == 17
    assert "^" in str(info.value)


def test_independent_columns_follows_lme4_tolerance():
    """Columns are aliased when their residual on earlier columns is below 1e-7 of their norm
    (R's qr tolerance, which lme4 uses); clearly independent columns take the Gram fast path."""
    from sklmm._engine.fit import independent_columns

    rng = np.random.default_rng(5)
    x = rng.normal(size=(500, 2))
    noise = rng.normal(size=500)
    noise -= x @ np.linalg.lstsq(x, noise, rcond=None)[0]
    noise /= np.linalg.norm(noise)
    base = x[:, 0] + x[:, 1]
    for eps, kept in [(1e-3, 3), (1e-6, 3), (1e-9, 2)]:
        column = base + eps * np.linalg.norm(base) * noise  # relative residual eps
        design = np.column_stack([x, column])
        assert len(independent_columns(design, None)) == kept, eps
    assert list(independent_columns(np.column_stack([x, x[:, :1]]), None)) == [0, 1]
    weights = rng.uniform(0.5, 2, size=500)
    assert list(independent_columns(np.column_stack([x, 3 * x[:, 1]]), weights)) == [0, 1]


def test_predict_warns_when_label_types_differ_from_fit(sleepstudy, sleep_model):
    """Integer labels for a model fitted with strings match nothing: say so instead of
    silently predicting at population level.  New levels of the right type stay silent."""
    X, _, groups = sleepstudy
    with pytest.warns(UserWarning, match=r"'Subject' holds numbers but the model was fitted with strings"):
        out = sleep_model.predict(X, groups=groups.astype(int))
    np.testing.assert_allclose(out, sleep_model.predict(X))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sleep_model.predict(X, groups=pd.DataFrame({"Subject": ["new"] * len(X)}))


def test_warnings_point_at_the_callers_line(sleepstudy):
    """Each warning's stacklevel names the line that called fit, not sklmm's internals."""
    from sklmm import ExactFitWarning

    X, y, groups = sleepstudy
    with pytest.warns(RankDeficientWarning) as record:
        MixedLinearRegressor("(1 | Subject)").fit(X.assign(D2=2 * X["Days"]), y, groups=groups)
    assert record[0].filename == __file__
    with pytest.warns(ConvergenceWarning) as record:
        MixedLinearRegressor("(1 + Days | Subject)", max_iter=3).fit(X, y, groups=groups)
    assert record[0].filename == __file__
    x = np.arange(5.0).reshape(-1, 1)
    with pytest.warns(ExactFitWarning) as record:
        MixedLinearRegressor().fit(x, 1.0 + 2.0 * x[:, 0])
    assert record[0].filename == __file__
    from sklmm import SingularFitWarning

    X2, y2, groups2, _ = load_case("dyestuff2").arrays()
    with pytest.warns(SingularFitWarning) as record:
        MixedLinearRegressor("(1 | Batch)").fit(X2, y2, groups=groups2)
    assert record[0].filename == __file__


def test_training_data_edited_after_fit_is_detected(sleepstudy):
    """Inference reuses the training data.  y is copied; X, the caller's own array, is kept
    by reference (no second copy of the data), so an edit after the fit, even a reordering
    of rows, must make inference refuse rather than use the edited data."""
    X, y, groups = sleepstudy
    X_array, y_array = X.to_numpy(dtype=float).copy(), y.copy()
    model = MixedLinearRegressor("(1 + x0 | Subject)").fit(X_array, y_array, groups=groups)
    assert model._training_data.X is X_array  # no copy
    y_array[:] = 0.0
    assert np.any(model._training_data.y != 0.0)  # y was copied
    model.simulate(random_state=0)  # unchanged X: fine
    X_array[[0, 1]] = X_array[[1, 0]]  # swap two rows in place
    with pytest.raises(RuntimeError, match=r"X passed to fit has been modified"):
        model.simulate(random_state=0)
