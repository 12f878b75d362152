"""Every input-validation error path of MixedLinearRegressor, with its message.

Each bad input must raise a clear error naming the offending argument, column or
count (the issue "Reliability: bad input gets a clear error"), never an internal
error (a TypeError from deep inside the optimiser, say) and never a silent fit.
The caller's arrays and frames must come back unchanged.

Tests marked ``xfail(strict=True)`` document a current defect: they flip to a
failure (XPASS) once the defect is fixed, so the marker must then be removed.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError

from sklmm import FormulaError, MixedLinearRegressor

N = 60


@pytest.fixture
def data():
    """60 rows, 6 groups of 10, two covariates; a fresh copy for every test."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=N), "z": rng.normal(size=N)})
    g = pd.DataFrame({"g": np.repeat(list("abcdef"), 10)})
    y = 1.0 + X["x"].to_numpy() + rng.normal(size=6)[np.repeat(np.arange(6), 10)] + rng.normal(size=N)
    return X, y, g


def model(random_effects="(1 + x | g)", **kwargs):
    return MixedLinearRegressor(random_effects=random_effects, **kwargs)


def fit_quietly(estimator, *args, **kwargs):
    """Fit without letting a (legitimate) singular-fit warning reach the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return estimator.fit(*args, **kwargs)


# -- NaN and infinite values ---------------------------------------------------------


@pytest.mark.parametrize("value, message", [(np.nan, r"Input X contains NaN"), (np.inf, r"Input X contains infinity")])
def test_non_finite_X(data, value, message):
    X, y, g = data
    X.iloc[3, 1] = value
    with pytest.raises(ValueError, match=message):
        model().fit(X, y, groups=g)


@pytest.mark.parametrize("value, message", [(np.nan, r"Input y contains NaN"), (-np.inf, r"Input y contains infinity")])
def test_non_finite_y(data, value, message):
    X, y, g = data
    y[4] = value
    with pytest.raises(ValueError, match=message):
        model().fit(X, y, groups=g)


@pytest.mark.parametrize("with_groups", [False, True], ids=["no-groups", "groups"])
def test_none_in_object_y(data, with_groups):
    X, y, g = data
    y_object = np.array([None, *y[1:]], dtype=object)
    with pytest.raises(ValueError, match=r"\by\b.*(NaN|missing|None)"):
        fit_quietly(model(None if not with_groups else "(1 | g)"), X, y_object, groups=g if with_groups else None)


@pytest.mark.parametrize(
    "make_groups, message",
    [
        (lambda g: g.assign(g=g["g"].where(g.index != 2)), r"groups column 'g' has 1 missing value\(s\) \(first at row 2\)"),
        (lambda g: pd.Series(np.where(np.arange(N) == 7, None, g["g"]), name="g"), r"groups column 'g' has 1 missing value\(s\) \(first at row 7\)"),
        (lambda g: pd.DataFrame({"g": pd.array([pd.NA] + list(g["g"][1:]), dtype="string")}), r"groups column 'g' has 1 missing value"),
        (lambda g: pd.DataFrame({"g": pd.Categorical([None] * 3 + list(g["g"][3:]))}), r"groups column 'g' has 3 missing value\(s\) \(first at row 0\)"),
        (lambda g: np.where(np.arange(N) == 5, np.nan, np.repeat(np.arange(6.0), 10)), r"groups column 'group' has 1 missing value\(s\) \(first at row 5\)"),
        (lambda g: pd.DataFrame({"g": np.where(np.arange(N) == 5, np.inf, np.repeat(np.arange(6.0), 10))}), r"groups column 'g' has infinite values"),
        (lambda g: np.column_stack([np.repeat(np.arange(6.0), 10), np.where(np.arange(N) == 0, -np.inf, 1.0 * (np.arange(N) % 3))]), r"groups column 'group1' has infinite values"),
    ],
    ids=["frame-nan", "series-none", "string-NA", "categorical-nan", "float-array-nan", "inf", "2d-array-inf"],
)
def test_missing_or_infinite_group_labels(data, make_groups, message):
    X, y, g = data
    groups = make_groups(g)
    random_effects = None
    with pytest.raises(ValueError, match=message):
        model(random_effects).fit(X, y, groups=groups)


@pytest.mark.parametrize(
    "weights, message",
    [
        (np.r_[np.nan, np.ones(N - 1)], r"sample_weight has 1 NaN or infinite value\(s\) \(first at row 0\)"),
        (np.r_[np.ones(N - 2), np.inf, np.inf], r"sample_weight has 2 NaN or infinite value\(s\) \(first at row 58\)"),
        (np.r_[np.ones(5), -1.0, np.ones(N - 6)], r"sample_weight has 1 negative value\(s\) \(first at row 5\); prior weights must be >= 0"),
        (np.zeros(N), r"sample_weight is zero for every row"),
        (0, r"sample_weight is zero for every row"),
        (-1.0, r"sample_weight has 60 negative value"),
        (np.ones(N - 1), r"sample_weight has 59 entries but X has 60 rows"),
        (np.ones((N, 1)), r"sample_weight must be 1-D, got shape \(60, 1\)"),
        (np.array(["1"] * N), r"sample_weight must be numeric"),
        (np.array([1.0] * N, dtype=object), r"sample_weight must be numeric"),
    ],
    ids=["nan", "inf", "negative", "all-zero", "scalar-zero", "scalar-negative", "short", "2d", "strings", "object"],
)
def test_bad_sample_weight(data, weights, message):
    X, y, g = data
    with pytest.raises((ValueError, TypeError), match=message):
        model().fit(X, y, groups=g, sample_weight=weights)


# -- lengths ---------------------------------------------------------------------------


def test_length_mismatches(data):
    X, y, g = data
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[60, 59\]"):
        model().fit(X, y[:-1], groups=g)
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[59, 60\]"):
        model().fit(X.iloc[:-1], y, groups=g)
    with pytest.raises(ValueError, match=r"groups has 59 rows but X has 60; they must match row for row"):
        model().fit(X, y, groups=g.iloc[:-1])
    with pytest.raises(ValueError, match=r"groups has 120 rows but X has 60"):
        model().fit(X, y, groups=pd.concat([g, g]))
    with pytest.raises(ValueError, match=r"sample_weight has 61 entries but X has 60 rows"):
        model().fit(X, y, groups=g, sample_weight=np.ones(N + 1))


def test_too_few_rows(data):
    X, y, g = data
    with pytest.raises(ValueError, match=r"1 sample\(s\).*minimum of 2"):
        model("(1 | g)").fit(X.iloc[:1], y[:1], groups=g.iloc[:1])
    with pytest.raises(ValueError, match=r"0 sample\(s\)"):
        model("(1 | g)").fit(X.iloc[:0], y[:0], groups=g.iloc[:0])


def test_y_must_be_one_dimensional(data):
    X, y, g = data
    with pytest.raises(ValueError, match=r"y should be a 1d array, got an array of shape \(60, 2\)"):
        model().fit(X, np.column_stack([y, y]), groups=g)


# -- groups shape and type -------------------------------------------------------------


@pytest.mark.parametrize(
    "groups, error, message",
    [
        (np.ones((N, 1, 1)), ValueError, r"groups must be 1-D or 2-D, got an array with 3 dimensions"),
        (pd.DataFrame(index=range(N)), ValueError, r"groups has no columns"),
        (pd.DataFrame(np.zeros((N, 2)), columns=["a", "a"]), ValueError, r"groups has repeated column names: \['a', 'a'\]"),
        (pd.DataFrame(np.zeros((N, 2)), columns=[1, "1"]), ValueError, r"groups has repeated column names: \['1', '1'\]"),
        (np.repeat(np.arange(6), 10) + 1j, TypeError, r"groups must hold labels .*complex"),
        (pd.DataFrame({"g": np.repeat(np.arange(6), 10) + 1j}), TypeError, r"groups column 'g' holds complex numbers"),
    ],
    ids=["3d", "no-columns", "repeated-names", "repeated-after-str", "complex-array", "complex-column"],
)
def test_bad_groups(data, groups, error, message):
    X, y, _ = data
    with pytest.raises(error, match=message):
        model(None).fit(X, y, groups=groups)


def test_sparse_groups(data):
    import scipy.sparse

    X, y, _ = data
    with pytest.raises(TypeError, match=r"groups must be dense"):
        model(None).fit(X, y, groups=scipy.sparse.csr_matrix(np.ones((N, 1))))


def test_unhashable_group_labels(data):
    X, y, _ = data
    with pytest.raises(TypeError, match=r"groups"):
        model(None).fit(X, y, groups=pd.Series([[i % 6] for i in range(N)], name="g"))


# -- unsupported dtypes in X and y ---------------------------------------------------------


@pytest.mark.parametrize(
    "make_X",
    [
        lambda X: X.assign(s="a"),
        lambda X: X.assign(s=pd.Categorical(["u", "v"] * (N // 2))),
        lambda X: X.assign(s=pd.Timestamp("2020-01-01")),
        lambda X: X.assign(s=pd.to_timedelta(np.arange(N), unit="D")),
    ],
    ids=["strings", "categorical", "datetime", "timedelta"],
)
def test_non_numeric_column_of_X_is_named(data, make_X):
    X, y, g = data
    with pytest.raises((ValueError, TypeError), match=r"\bX\b.*'s'|'s'.*\bX\b"):
        model().fit(make_X(X), y, groups=g)


@pytest.mark.parametrize("which", ["X", "y"])
def test_complex_input_is_named(data, which):
    X, y, g = data
    args = (X.to_numpy() + 1j, y) if which == "X" else (X, y + 1j)
    with pytest.raises((ValueError, TypeError), match=rf"\b{which}\b.*complex|complex.*\b{which}\b"):
        model("(1 | group)").fit(*args, groups=g["g"].to_numpy())


def test_non_numeric_y_is_named(data):
    X, y, g = data
    with pytest.raises((ValueError, TypeError), match=r"\by\b"):
        model().fit(X, np.array(["low", "high"] * (N // 2)), groups=g)


def test_duplicate_column_names_in_X(data):
    X, y, g = data
    with pytest.raises(ValueError, match=r"Expected unique column names, got:\s*- 'x' 2 times"):
        model().fit(X.rename(columns={"z": "x"}), y, groups=g)


def test_sparse_X(data):
    import scipy.sparse

    X, y, g = data
    with pytest.raises(TypeError, match=r"Sparse data was passed for X"):
        model("(1 | group)").fit(scipy.sparse.csr_matrix(X.to_numpy()), y, groups=g["g"].to_numpy())


def test_X_dimensions(data):
    _, y, g = data
    with pytest.raises(ValueError, match=r"Expected 2D array, got 1D array"):
        model("(1 | group)").fit(np.arange(N, dtype=float), y, groups=g["g"].to_numpy())
    with pytest.raises(ValueError, match=r"dim 3"):
        model("(1 | group)").fit(np.ones((N, 2, 2)), y, groups=g["g"].to_numpy())
    with pytest.raises(ValueError, match=r"0 feature\(s\)"):
        model(None).fit(np.empty((N, 0)), y)  # least squares needs a covariate


# -- constructor parameters --------------------------------------------------------------


@pytest.mark.parametrize(
    "params, message",
    [
        ({"random_effects": 5}, r"'random_effects' parameter .* must be an instance of 'str' or None"),
        ({"random_effects": ["(1 | g)"]}, r"'random_effects' parameter"),
        ({"reml": "yes"}, r"'reml' parameter"),
        ({"fit_intercept": None}, r"'fit_intercept' parameter"),
        ({"max_iter": 0}, r"'max_iter' parameter .* range \[1, inf\)"),
        ({"max_iter": 5.5}, r"'max_iter' parameter"),
    ],
)
def test_bad_constructor_parameters(data, params, message):
    X, y, g = data
    with pytest.raises(InvalidParameterError, match=message):
        MixedLinearRegressor(**params).fit(X, y, groups=g)


# -- random_effects strings ---------------------------------------------------------------


@pytest.mark.parametrize(
    "formula, position, message",
    [
        ("", 0, r"empty formula"),
        ("   ", 0, r"empty formula"),
        ("1 | g", 0, r"expected '\(' opening"),
        ("(1 | g))", 7, r"expected '\+' between terms, found '\)'"),
        ("((1 | g))", 1, r"expected 0, 1 or a column name, found '\('"),
        ("y ~ x + (1 | g)", 2, r"unexpected character '~'"),
        ("(1 | g/)", 7, r"expected a grouping factor name, found '\)'"),
        ("(1 | )", 5, r"expected a grouping factor name"),
        ("( | g)", 2, r"expected 0, 1 or a column name, found '\|'"),
        ("(x * z | g)", 3, r"unexpected character '\*'"),
        ("(log(x) | g)", 4, r"expected '\|' or '\|\|', found '\('"),
        ("(1 | g) + ", 10, r"expected '\(' opening .* found end of string"),
        ("(0.5 | g)", 1, r"only 0 or 1 may stand as a number, found '0.5'"),
        ("(1 ||| g)", 5, r"expected a grouping factor name, found '\|'"),
        ("(1 | `g)", 5, r"unexpected character '`'"),
        ("(1 + 0 | g)", 1, r"the term has no columns"),
        ("(-x | g)", 2, r"only the intercept can be removed"),
    ],
)
def test_unparsable_random_effects_point_at_the_position(data, formula, position, message):
    X, y, g = data
    with pytest.raises(FormulaError, match=r"random_effects could not be parsed: " + message) as info:
        model(formula).fit(X, y, groups=g)
    assert info.value.pos == position
    # the message shows the string, indented by 4, with a caret under the offending position
    *_, shown, caret = str(info.value).split("\n")
    assert shown == "    " + formula
    assert caret == "    " + " " * position + "^"


def test_minus_zero_keeps_the_intercept_as_in_r(data):
    X, y, g = data
    a = fit_quietly(model("(x - 0 | g)"), X, y, groups=g)
    b = fit_quietly(model("(1 + x | g)"), X, y, groups=g)
    assert a.objective_ == pytest.approx(b.objective_, abs=1e-8)


@pytest.mark.parametrize(
    "formula, message",
    [
        ("(1 + w | g)", r"random_effects names the slope 'w' for factor 'g', which is not a column of X \(columns: \['x', 'z'\]\)"),
        ("(1 + g | g)", r"slope 'g' for factor 'g', which is not a column of X"),
        ("(1 | h)", r"random_effects names the grouping factor 'h', which is not a column of groups \(columns: \['g'\]\)"),
        ("(1 | x)", r"grouping factor 'x', which is not a column of groups"),
        ("(1 | g/h)", r"grouping factor 'h', which is not a column of groups"),
        ("(1 | g:h)", r"grouping factor 'h', which is not a column of groups"),
        ("(1 | g) + (1 | g)", r"has the column '\(Intercept\)' twice for factor 'g'"),
        ("(1 | g) + (x | g)", r"has the column '\(Intercept\)' twice for factor 'g'"),
        ("(1 + x || g) + (0 + x | g)", r"has the column 'x' twice for factor 'g'"),
    ],
)
def test_random_effects_naming_missing_columns_or_factors(data, formula, message):
    X, y, g = data
    with pytest.raises(ValueError, match=message):
        model(formula).fit(X, y, groups=g)


def test_slope_names_for_arrays_say_how_to_keep_names(data):
    X, y, g = data
    with pytest.raises(ValueError, match=r"slope\(s\) \['x'\], which are not columns of X: X has no column names .* \['x0', 'x1'\]"):
        model("(1 + x | group)").fit(X.to_numpy(), y, groups=g["g"].to_numpy())
    with pytest.raises(ValueError, match=r"grouping factor 'g', which is not a column of groups \(columns: \['group'\]\)"):
        model("(1 + x0 | g)").fit(X.to_numpy(), y, groups=g["g"].to_numpy())


def test_random_effects_without_groups(data):
    X, y, _ = data
    with pytest.raises(ValueError, match=r"needs grouping factors \['g'\], but groups=None was passed to fit"):
        model().fit(X, y)


# -- identifiability ---------------------------------------------------------------------


def test_one_level(data):
    X, y, _ = data
    one = pd.DataFrame({"g": ["a"] * N})
    with pytest.raises(ValueError, match=r"grouping factor 'g' has only 1 level; a random effect needs at least 2 levels"):
        model("(1 | g)").fit(X, y, groups=one)
    with pytest.raises(ValueError, match=r"grouping factor 'g' has only 1 level"):
        model(None).fit(X, y, groups=one)


def test_one_level_left_after_zero_weights(data):
    X, y, g = data
    w = np.r_[np.ones(10), np.zeros(N - 10)]  # only level 'a' has weight
    with pytest.raises(ValueError, match=r"grouping factor 'g' has only 1 level"):
        model("(1 | g)").fit(X, y, groups=g, sample_weight=w)


@pytest.mark.parametrize(
    "formula, groups, message",
    [
        ("(1 | g)", pd.DataFrame({"g": np.arange(N)}), r"grouping factor 'g' has 60 levels for 60 observations; with one level per observation its variance cannot be separated from the residual variance"),
        (None, np.arange(N), r"grouping factor 'group' has 60 levels for 60 observations"),
        ("(0 + x | g)", pd.DataFrame({"g": np.arange(N)}), r"'g' has 60 levels for 60 observations"),
        ("(1 | a/b)", pd.DataFrame({"a": np.repeat(np.arange(6), 10), "b": np.tile(np.arange(10), 6)}), r"grouping factor 'a:b' has 60 levels for 60 observations"),
        ("(1 | a:b)", pd.DataFrame({"a": np.repeat(np.arange(6), 10), "b": np.tile(np.arange(10), 6)}), r"grouping factor 'a:b' has 60 levels"),
    ],
    ids=["plain", "default-terms", "slope-only", "nested", "interaction"],
)
def test_one_level_per_observation(data, formula, groups, message):
    X, y, _ = data
    with pytest.raises(ValueError, match=message):
        model(formula).fit(X, y, groups=groups)


def test_one_level_per_observation_after_zero_weights(data):
    X, y, g = data
    w = np.tile(np.r_[1.0, np.zeros(9)], 6)  # one weighted row per level
    with pytest.raises(ValueError, match=r"'g' has 6 levels for 6 observations"):
        model("(1 | g)").fit(X, y, groups=g, sample_weight=w)


def test_more_random_effects_than_observations():
    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(15, 2)), columns=["x", "z"])
    g = pd.DataFrame({"g": np.repeat(list("abcde"), 3)})
    # lme4: "number of observations (=15) <= number of random effects (=15) for term (1 + x + z | g)"
    with pytest.raises(ValueError, match=r"the term for 'g' with columns \['\(Intercept\)', 'x', 'z'\] has 15 random effects for 15 observations; .* not identifiable"):
        model("(1 + x + z | g)").fit(X, rng.normal(size=15), groups=g)


def test_more_fixed_effects_than_observations():
    rng = np.random.default_rng(2)
    groups = pd.DataFrame({"g": [0, 0, 0, 1, 1, 1]})
    with pytest.raises(ValueError, match=r"6 observations are too few for 6 fixed effects and a residual variance"):
        model("(1 | g)").fit(pd.DataFrame(rng.normal(size=(6, 5))), rng.normal(size=6), groups=groups)


# -- predict ------------------------------------------------------------------------------


@pytest.fixture
def fitted(data):
    X, y, g = data
    return fit_quietly(model(), X, y, groups=g)


def test_predict_errors(data, fitted):
    X, y, g = data
    with pytest.raises(NotFittedError):
        model().predict(X, groups=g)
    with pytest.raises(ValueError, match=r"groups has 5 rows but X has 60"):
        fitted.predict(X, groups=g.iloc[:5])
    holey = g.copy()
    holey.loc[3, "g"] = None
    with pytest.raises(ValueError, match=r"groups column 'g' has 1 missing value\(s\) \(first at row 3\)"):
        fitted.predict(X, groups=holey)
    bad_X = X.copy()
    bad_X.iloc[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"Input X contains NaN"):
        fitted.predict(bad_X, groups=g)
    with pytest.raises(ValueError, match=r"Feature names seen at fit time, yet now missing:\s*- z"):
        fitted.predict(X[["x"]], groups=g)
    with pytest.raises(ValueError, match=r"groups has no columns"):
        fitted.predict(X, groups=pd.DataFrame(index=range(N)))


# -- the caller's data is never modified --------------------------------------------------------


def test_caller_data_not_modified_by_fit_or_predict(data):
    X, y, g = data
    g = g.assign(g=pd.Categorical(g["g"], categories=list("fedcbaz")))  # unused category, reversed order
    X32 = X.to_numpy(dtype=np.float32)
    w = np.r_[np.zeros(3), np.linspace(1.0, 2.0, N - 3)]  # zero-weight rows are left out of the fit
    snapshot = (X.copy(), y.copy(), g.copy(), X32.copy(), w.copy())
    for X_in in (X, X32):
        for groups in (g, g["g"], g["g"].to_numpy()):
            re = "(1 + x | g)" if isinstance(X_in, pd.DataFrame) else "(1 + x0 | g)"
            re = re if not isinstance(groups, np.ndarray) else re.replace("| g", "| group")
            est = fit_quietly(model(re), X_in, y, groups=groups, sample_weight=w)
            est.predict(X_in, groups=groups)
            est.score(X_in, y, groups=groups)
    pd.testing.assert_frame_equal(X, snapshot[0])
    np.testing.assert_array_equal(y, snapshot[1])
    pd.testing.assert_frame_equal(g, snapshot[2])
    assert list(g["g"].cat.categories) == list("fedcbaz")
    np.testing.assert_array_equal(X32, snapshot[3])
    assert X32.dtype == np.float32
    np.testing.assert_array_equal(w, snapshot[4])


def test_read_only_inputs_are_accepted(data):
    X, y, g = data
    arrays = [X.to_numpy(), y.copy(), g["g"].to_numpy(), np.ones(N)]
    for a in arrays:
        a.setflags(write=False)
    est = fit_quietly(model("(1 + x0 | group)"), arrays[0], arrays[1], groups=arrays[2], sample_weight=arrays[3])
    assert np.all(np.isfinite(est.predict(arrays[0], groups=arrays[2])))
