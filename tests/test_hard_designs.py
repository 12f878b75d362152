"""Numerical robustness: hard designs against lme4, degenerate data, prediction edge cases.

Expected values: tests/data/lme4_hard/*/reference.json, made by make_hard.R there with
lme4 1.1-31 (see its README). Some cases also carry ``objective_equivalent``: lme4's optimum
for the same model written on well-scaled columns, i.e. the optimum the hard case must reach
even where lme4 itself does not reach it on the badly scaled data.

Tolerances are those of tests/test_lme4_reference.py (the issue that specifies the
estimator): objective no worse than lme4's by more than 1e-4; fixed effects within 1e-3 of
their standard error; sigma within 1e-3 relative; random-effect standard deviations within
2e-2 relative, correlations 2e-2 absolute, and a standard deviation lme4 puts on the boundary
below 1e-3 sigma.

Tests marked ``xfail(strict=True)`` document a current defect of sklmm.
"""

from __future__ import annotations

import json
import re
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning

from sklmm import ExactFitWarning, MixedLinearRegressor, RankDeficientWarning, SingularFitWarning

HARD = Path(__file__).parent / "data" / "lme4_hard"
CASES = sorted(p.name for p in HARD.iterdir() if (p / "spec.json").exists())
METHODS = ["reml", "ml"]


# -- loading and fitting ---------------------------------------------------------------


@lru_cache(maxsize=None)
def load(case: str):
    folder = HARD / case
    spec = json.loads((folder / "spec.json").read_text())
    reference = json.loads((folder / "reference.json").read_text())
    groups = list(np.atleast_1d(spec["groups"]))
    data = pd.read_csv(folder / "data.csv", dtype={g: str for g in groups}, keep_default_na=False)
    X = data[list(np.atleast_1d(spec["fixed"]))].astype(float)
    y = data[spec["response"]].to_numpy(float)
    w = data[spec["weights"]].to_numpy(float) if "weights" in spec else None
    return spec, reference, X, y, data[groups], w


@lru_cache(maxsize=None)
def fitted(case: str, method: str):
    spec, _, X, y, groups, w = load(case)
    model = MixedLinearRegressor(spec["random_effects"], reml=(method == "reml"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, y, groups=groups, sample_weight=w)
    return model, caught


def lme4_trusted(ref: dict) -> bool:
    """lme4 reached the optimum: it says so (no convergence warning) and, where the optimum
    of the well-scaled equivalent is known, it agrees with it."""
    equivalent = ref.get("objective_equivalent")
    if equivalent is not None:
        return abs(ref["objective"] - equivalent) < 1e-4
    return not [w for w in ref["warnings"] if "different scales" not in w]


def best_known(ref: dict) -> float:
    """The lowest criterion value known to be attainable for the case."""
    values = [ref["objective"]]
    if ref.get("objective_equivalent") is not None:
        values.append(ref["objective_equivalent"])
    return min(values)


def params(xfails: dict[tuple[str, str], str], cases=CASES):
    out = []
    for case in cases:
        for method in METHODS:
            reason = xfails.get((case, method)) or xfails.get((case, "*"))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            out.append(pytest.param(case, method, id=f"{case}-{method}", marks=marks))
    return out


NOT_REACHED = {
}


# -- reaching the optimum ----------------------------------------------------------------------


@pytest.mark.parametrize("case, method", params(NOT_REACHED))
def test_reaches_the_optimum(case, method):
    model, _ = fitted(case, method)
    ref = load(case)[1][method]
    assert model.objective_ <= best_known(ref) + 1e-4


@pytest.mark.parametrize("case, method", params({}))
def test_no_worse_than_lme4_start(case, method):
    """The optimum is never worse than the criterion at lme4's starting theta."""
    model, _ = fitted(case, method)
    ref = load(case)[1][method]
    assert model.objective_ <= ref["objective_at_start"] + 1e-8 * abs(ref["objective_at_start"])


MISCOMPUTED = {
}


@pytest.mark.parametrize("case, method", params(MISCOMPUTED, [c for c in CASES if lme4_trusted(load(c)[1]["reml"]) and lme4_trusted(load(c)[1]["ml"])]))
def test_objective_is_not_below_the_optimum(case, method):
    """Where lme4 (or the well-scaled equivalent) reached the optimum, a reported objective
    below it by more than the comparison tolerance is a miscomputed criterion."""
    model, _ = fitted(case, method)
    ref = load(case)[1][method]
    assert model.objective_ >= best_known(ref) - 1e-4


# -- the estimates, where lme4 is right ------------------------------------------------------------

TRUSTED = [c for c in CASES if lme4_trusted(load(c)[1]["reml"])]
ESTIMATES_WRONG = {
}


def _trusted_params(xfails):
    return [p for p in params(xfails, TRUSTED) if lme4_trusted(load(p.values[0])[1][p.values[1]])]


@pytest.mark.parametrize("case, method", _trusted_params(ESTIMATES_WRONG))
def test_estimates_match_lme4(case, method):
    model, _ = fitted(case, method)
    ref = load(case)[1][method]
    estimates = model.fixed_effects_["estimate"]
    assert sorted(estimates.index) == sorted(ref["coef"])
    for name, value in ref["coef"].items():
        assert abs(estimates[name] - value) <= 1e-3 * ref["coef_se"][name], name
    assert model.sigma_ == pytest.approx(ref["sigma"], rel=1e-3)
    # variance components, matched by (group, var1, var2); lme4 names a nested a/b factor b:a
    factor_names = set(model.random_effects_)
    ours = {(row.group, row.var1, row.var2): row for row in model.variance_components_.itertuples()}
    assert len(ours) == len(ref["varcorr"])
    for row in ref["varcorr"]:
        group = row["grp"]
        if group not in factor_names and group != "Residual":
            group = re.sub(r"\.\d+$", "", group)  # lme4 names a second (x || g) term g.1
        if group not in factor_names and group != "Residual":
            group = ":".join(reversed(group.split(":")))  # and a nested a/b factor b:a
        mine = ours[(group, row.get("var1"), row.get("var2"))]
        if row.get("var2") is not None:
            assert abs(mine.sdcor - row["sdcor"]) <= 2e-2, row
        elif ref["singular"] and row["sdcor"] < 1e-3 * ref["sigma"]:
            assert mine.sdcor < 1e-3 * ref["sigma"], row
        else:
            assert mine.sdcor == pytest.approx(row["sdcor"], rel=2e-2), row


@pytest.mark.parametrize("case, method", params({}))
def test_no_nan_estimates(case, method):
    model, _ = fitted(case, method)
    for value in (model.coef_, model.intercept_, model.theta_, model.sigma_, model.objective_,
                  model.log_likelihood_, model.aic_, model.bic_):
        assert np.all(np.isfinite(value))
    assert np.all(np.isfinite(model.fixed_effects_.to_numpy()))
    assert np.all(np.isfinite(model.fixed_effects_cov_.to_numpy()))
    for frame in model.random_effects_.values():
        assert np.all(np.isfinite(frame.to_numpy()))
    vc = model.variance_components_
    assert np.all(np.isfinite(vc["vcov"]))
    # a correlation is NaN only where one of its standard deviations is exactly zero
    for row in vc[vc["var2"].notna()].itertuples():
        if np.isnan(row.sdcor):
            sds = vc[(vc["group"] == row.group) & vc["var2"].isna() & vc["var1"].isin([row.var1, row.var2])]["sdcor"]
            assert (sds == 0).any()
    _, _, X, _, groups, _ = load(case)
    assert np.all(np.isfinite(model.predict(X, groups=groups)))


# -- boundary fits -----------------------------------------------------------------------------

BOUNDARY = {"boundary_zero": "(Intercept) | g", "boundary_cor": "x | g", "boundary_crossed": "x | g"}


@pytest.mark.parametrize("case, method", params({}, sorted(BOUNDARY)))
def test_boundary_fits_are_reported_singular(case, method):
    model, caught = fitted(case, method)
    ref = load(case)[1][method]
    assert ref["singular"]
    assert model.singular_
    messages = [str(w.message) for w in caught if issubclass(w.category, SingularFitWarning)]
    assert len(messages) == 1
    assert BOUNDARY[case] in messages[0]
    # and not silently wrong: the same criterion and boundary point as lme4
    assert model.objective_ == pytest.approx(ref["objective"], abs=1e-4)
    np.testing.assert_allclose(model.theta_, ref["theta"], atol=2e-2 * max(1.0, np.abs(ref["theta"]).max()))


# lme4 stops short of the boundary here: its theta has 1.4e-3 (crossed) and 1.0e-4 (slope) where
# sklmm reaches 0 with a criterion lower by 1e-7 and 1e-8 (checked by evaluating sklmm's criterion at
# lme4's theta), so the optimum is singular and lme4's isSingular flag is the one that is off.
LME4_SHORT_OF_THE_BOUNDARY = {("local_optimum_crossed", "reml"), ("local_optimum_slope", "reml")}


@pytest.mark.parametrize("case, method", params({}, [c for c in TRUSTED if c not in BOUNDARY]))
def test_singular_flag_agrees_with_lme4(case, method):
    model, caught = fitted(case, method)
    ref = load(case)[1][method]
    if not lme4_trusted(ref):
        pytest.skip("lme4 did not converge here")
    if (case, method) in LME4_SHORT_OF_THE_BOUNDARY:
        assert model.singular_ and not ref["singular"]
        assert model.objective_ < ref["objective"]
        assert any(issubclass(w.category, SingularFitWarning) for w in caught)
        return
    assert model.singular_ == ref["singular"]
    assert any(issubclass(w.category, SingularFitWarning) for w in caught) == ref["singular"]


# -- aliased fixed effects -----------------------------------------------------------------------


@pytest.mark.parametrize("case, method", params({}, ["rank_deficient", "rank_deficient_first", "near_collinear"]))
def test_aliased_columns_dropped_as_lme4(case, method):
    model, caught = fitted(case, method)
    spec, ref, X, _, groups, _ = load(case)
    ref = ref[method]
    dropped = list(ref["dropped"])
    messages = [str(w.message) for w in caught if issubclass(w.category, RankDeficientWarning)]
    assert len(messages) == 1
    assert f"{len(dropped)} of its {X.shape[1] + 1} columns were dropped" in messages[0]
    assert str(dropped) in messages[0]
    for name, coef in zip(X.columns, model.coef_):
        assert (coef == 0.0) == (name in dropped), name
    assert list(model.fixed_effects_.index) == ["(Intercept)"] + [c for c in X.columns if c not in dropped]
    assert list(model.fixed_effects_cov_.index) == list(model.fixed_effects_.index)
    assert np.all(np.isfinite(model.predict(X, groups=groups)))


def test_rank_deficiency_in_weighted_rows_only():
    """Columns aliased only among the rows that carry weight: the zero-weight rows are left
    out first, so the aliasing is found there (x2 = x1 on every weighted row)."""
    rng = np.random.default_rng(3)
    n = 80
    x1 = rng.normal(size=n)
    x2 = x1.copy()
    x2[:5] += 1.0  # differs only on rows that get weight 0
    w = np.r_[np.zeros(5), np.ones(n - 5)]
    g = np.repeat(np.arange(10), 8)
    y = x1 + rng.normal(size=10)[g] + rng.normal(size=n)
    X = pd.DataFrame({"x1": x1, "x2": x2})
    with pytest.warns(RankDeficientWarning, match=r"\['x2'\]"):
        model = MixedLinearRegressor("(1 | g)").fit(X, y, groups=pd.DataFrame({"g": g}), sample_weight=w)
    reference = MixedLinearRegressor("(1 | g)").fit(X[["x1"]].iloc[5:], y[5:], groups=pd.DataFrame({"g": g[5:]}))
    assert model.objective_ == pytest.approx(reference.objective_, abs=1e-8)
    assert model.coef_[1] == 0.0


# -- uniform prior weights ----------------------------------------------------------------------

_WEIGHT_SCALES = [1e-10, 1e-6, 1e-3, 0.1, 2.0, 10.0, 100.0, 1e3, 1e6]
_WEIGHTS_WRONG: dict = {}


@pytest.mark.parametrize(
    "scale, method",
    [
        pytest.param(c, m, id=f"{c:g}-{m}", marks=[pytest.mark.xfail(strict=True, reason=_WEIGHTS_WRONG[(c, m)])] if (c, m) in _WEIGHTS_WRONG else [])
        for c in _WEIGHT_SCALES
        for m in METHODS
    ],
)
def test_uniform_weights_give_the_unweighted_fit(scale, method):
    """sleepstudy with every prior weight equal to c is the unweighted model with sigma^2
    replaced by sigma^2 / c: theta scales by 1/sqrt(c), sigma by sqrt(c), and the criterion
    is unchanged (the -log det W term cancels the change in the residual sum of squares, and
    for REML the change in log det X'WX). Expected: lme4's unweighted fit
    (tests/data/lme4/sleepstudy); lme4 itself reproduces it with these weights to 2e-5 for
    c <= 1e3 (checked with lme4 1.1-31), so these are not hard for lme4."""
    from reference_cases import load_case

    case = load_case("sleepstudy")
    X, y, groups, _ = case.arrays()
    ref = case.reference[method]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularFitWarning)
        model = MixedLinearRegressor("(1 + Days | Subject)", reml=(method == "reml")).fit(
            X, y, groups=groups, sample_weight=np.full(len(y), scale)
        )
    assert model.objective_ == pytest.approx(ref["objective"], abs=1e-4)
    theta_ref = np.asarray(ref["theta"])
    np.testing.assert_allclose(model.theta_ * np.sqrt(scale), theta_ref, atol=2e-2 * np.abs(theta_ref).max())
    assert model.sigma_ / np.sqrt(scale) == pytest.approx(ref["sigma"], rel=1e-3)
    for name, value in ref["coef"].items():
        assert abs(model.fixed_effects_.loc[name, "estimate"] - value) <= 1e-3 * ref["coef_se"][name]
    assert not model.singular_


# -- degenerate data: a clear error or a warning, never a crash or a silent fit ------------------------


def _sleep():
    _, _, X, y, groups, _ = load("y_shift")
    return X, y - 1e6, groups


def _fit_outcome(estimator, X, y, groups, sample_weight=None):
    """('error', exception) or ('fit', model, warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            estimator.fit(X, y, groups=groups, sample_weight=sample_weight)
        except Exception as exc:  # noqa: BLE001 - the test inspects what was raised
            return ("error", exc)
    return ("fit", estimator, caught)


def _exact_data(kind):
    X, y, groups = _sleep()
    days = X["Days"].to_numpy()
    subject = pd.factorize(groups["Subject"])[0]
    if kind == "constant":
        return "(1 | Subject)", X, np.full(len(y), 3.0), groups
    if kind == "constant-slope-model":
        return "(1 + Days | Subject)", X, np.full(len(y), 3.0), groups
    if kind == "linear-in-X":
        return "(1 | Subject)", X, 1.0 + 2.0 * days, groups
    if kind == "X-plus-group-effects":
        return "(1 | Subject)", X, 2.0 * days + np.arange(18.0)[subject], groups
    raise ValueError(kind)


@pytest.mark.parametrize(
    "kind, reml",
    [
        pytest.param("constant", True),
        pytest.param("constant-slope-model", True),
        pytest.param("linear-in-X", True),
        pytest.param("X-plus-group-effects", False),
    ],
)
def test_exact_fit_is_loud(kind, reml):
    """y fitted exactly: the residual variance is 0 and the criterion unbounded. As for
    least squares (ExactFitWarning) the fit must say so, or refuse with a clear error."""
    random_effects, X, y, groups = _exact_data(kind)
    outcome = _fit_outcome(MixedLinearRegressor(random_effects, reml=reml), X, y, groups)
    if outcome[0] == "error":
        assert isinstance(outcome[1], ValueError), repr(outcome[1])
        assert "exact" in str(outcome[1]) or "residual variance" in str(outcome[1])
    else:
        assert any(issubclass(w.category, ExactFitWarning) for w in outcome[2])


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("y*1e200"),
        pytest.param("y*1e-200"),
        pytest.param("X*1e200"),
        pytest.param("weights*1e20"),
        pytest.param("y max float"),
    ],
)
def test_overflowing_inputs_are_refused_clearly(kind):
    """Values whose squares overflow or underflow: the fit cannot be computed in floating
    point. lme4 fails too; sklmm must fail with an error that names the input."""
    X, y, groups = _sleep()
    w = None
    if kind == "y*1e200":
        y = y * 1e200
    elif kind == "y*1e-200":
        y = y * 1e-200
    elif kind == "X*1e200":
        X = X * 1e200
    elif kind == "weights*1e20":
        w = np.full(len(y), 1e20)
    elif kind == "y max float":
        y = np.r_[1.7e308, y[1:]]
    outcome = _fit_outcome(MixedLinearRegressor("(1 + Days | Subject)"), X, y, groups, w)
    if outcome[0] == "fit":  # a fit is fine if it is right: finite, the same as the unscaled one
        model = outcome[1]
        assert np.all(np.isfinite(np.r_[model.coef_, model.intercept_, model.theta_, model.sigma_, model.objective_]))
    else:
        assert isinstance(outcome[1], ValueError), repr(outcome[1])
        assert any(name in str(outcome[1]) for name in ("X", "y", "sample_weight"))


def test_non_convergence_is_loud_and_finite():
    case = "unbalanced"
    spec, _, X, y, groups, _ = load(case)
    with pytest.warns(ConvergenceWarning, match=r"did not converge after \d+ objective evaluations \(max_iter=3\).*Increase max_iter"):
        model = MixedLinearRegressor(spec["random_effects"], max_iter=3).fit(X, y, groups=groups)
    assert not model.converged_
    assert model.n_iter_ <= 3
    assert np.all(np.isfinite(np.r_[model.coef_, model.intercept_, model.theta_, model.sigma_, model.objective_]))
    assert np.all(np.isfinite(model.predict(X, groups=groups)))


# -- prediction ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crossed():
    """The unbalanced case: (1 + x | g) + (1 | h)."""
    model, _ = fitted("unbalanced", "reml")
    _, _, X, _, groups, _ = load("unbalanced")
    return model, X, groups


def _effects(model, factor, labels, X=None):
    frame = model.random_effects_[factor].loc[labels]
    out = frame["(Intercept)"].to_numpy().copy()
    for column in frame.columns[1:]:
        out += frame[column].to_numpy() * X[column].to_numpy()
    return out


def test_predict_unseen_level_in_one_factor_only(crossed):
    model, X, groups = crossed
    population = model.predict(X)
    new = groups.assign(h="never-seen")
    expected = population + _effects(model, "g", groups["g"], X)
    np.testing.assert_allclose(model.predict(X, groups=new), expected, rtol=1e-12, atol=1e-12)
    new = groups.assign(g="never-seen")
    expected = population + _effects(model, "h", groups["h"])
    np.testing.assert_allclose(model.predict(X, groups=new), expected, rtol=1e-12, atol=1e-12)


def test_predict_with_columns_in_another_order_and_extra_columns(crossed):
    model, X, groups = crossed
    expected = model.predict(X, groups=groups)
    shuffled = groups[["h", "g"]].assign(extra=1)
    np.testing.assert_allclose(model.predict(X, groups=shuffled), expected)


def test_predict_with_categoricals_in_another_order(crossed):
    model, X, groups = crossed
    expected = model.predict(X, groups=groups)
    cats = groups.apply(lambda c: pd.Categorical(c, categories=sorted(set(c), reverse=True) + ["unused"]))
    np.testing.assert_allclose(model.predict(X, groups=cats), expected)


def test_predict_singleton_and_many_levels():
    for case in ("singletons", "many_levels", "nested_singletons"):
        model, _ = fitted(case, "reml")
        _, _, X, _, groups, _ = load(case)
        population = model.predict(X)
        expected = population.copy()
        for factor, frame in model.random_effects_.items():
            parts = factor.split(":")
            labels = groups[parts[0]].astype(str)
            for part in parts[1:]:
                labels = labels + ":" + groups[part].astype(str)
            expected += frame.loc[labels, "(Intercept)"].to_numpy()
        np.testing.assert_allclose(model.predict(X, groups=groups), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "make_groups",
    [
        lambda g: g[["h"]],
        lambda g: g.rename(columns={"g": "G"}),
        lambda g: g["g"].rename("subject"),
    ],
    ids=["dropped-column", "renamed-column", "renamed-series"],
)
def test_predict_missing_factor_warns(crossed, make_groups):
    model, X, groups = crossed
    with pytest.warns(UserWarning, match=r"'g'"):
        model.predict(X, groups=make_groups(groups))


def test_predict_labels_of_another_dtype_match_or_warn():
    _, _, X, _, groups, _ = load("y_shift")
    model, _ = fitted("y_shift", "reml")
    conditional = model.predict(X, groups=groups)
    as_int = groups.astype(int)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prediction = model.predict(X, groups=as_int)
    matched = np.allclose(prediction, conditional)
    assert matched or any(issubclass(w.category, UserWarning) for w in caught)


def test_predict_without_groups_never_warns(crossed):
    model, X, _ = crossed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict(X)


def test_interaction_labels_containing_the_separator():
    rng = np.random.default_rng(0)
    n = 80
    a = np.array(["x:y", "x"] * 40, dtype=object)
    b = np.array(["z", "y:z"] * 40, dtype=object)
    a[::4], b[::4] = "p", "q"
    groups = pd.DataFrame({"a": a, "b": b, "c": np.repeat(np.arange(8), 10).astype(str)})
    X = pd.DataFrame({"x": rng.normal(size=n)})
    y = rng.normal(size=n) + np.where(a == "x", 3.0, 0.0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SingularFitWarning)
            model = MixedLinearRegressor("(1 | a:b) + (1 | c)").fit(X, y, groups=groups)
    except ValueError as exc:  # refusing the ambiguous labels clearly is also acceptable
        assert "':'" in str(exc)
        return
    assert model.random_effects_["a:b"].index.is_unique
    prediction = model.predict(X, groups=groups)
    assert np.all(np.isfinite(prediction))
