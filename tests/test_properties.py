"""Invariance and property tests (hypothesis), with a bounded number of examples.

Each property fits a small generated design (4-10 groups of 3-8 rows, optionally a
correlated random slope and a crossed 3-5 level factor, REML or ML) and an equivalent
version of it, and checks that the two fits are the same model:

* shuffling rows, relabelling levels, permuting the grouping columns or X's columns;
* rescaling y by s (estimates scale by s, the criterion shifts by 2 (n - p) log|s| for
  REML, 2 n log|s| for ML, theta is unchanged), adding a constant to y (intercept shifts);
* rescaling all prior weights by c (sigma scales by sqrt(c), theta by 1/sqrt(c), the
  random-effect variances and the criterion are unchanged);
* the same data twice gives bit-for-bit the same fit;
* the optimum is never worse than the criterion at lme4's starting theta or at nearby theta.

Tolerances.  Two fits of equivalent problems follow different rounding, and each stops
within the optimiser's documented tolerance (sklmm/_engine/optimize.py: a projected gradient below
1e-7 |objective|, so the objective is within about 1e-5 of the optimum): objectives must
agree to OBJ_TOL = 2e-5 (two such stops) plus 1e-9 relative for rounding on large
criteria.  Estimates are compared with the tolerances of tests/test_lme4_reference.py
(fixed effects within 1e-3 of their standard error, sigma 1e-3 relative, standard
deviations 2e-2 relative or both below 1e-3 sigma, correlations 2e-2 absolute).

Hypothesis runs derandomized (a fixed sequence of examples, no example database), so CI
is deterministic; the whole file takes well under a minute on two cores.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sklmm import MixedLinearRegressor
from sklmm._engine.fit import prepare

OBJ_TOL = 2e-5
EXAMPLES = 50

SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure reports its first example, in bounded time
)


@pytest.fixture(autouse=True, scope="module")
def _single_threaded_blas():
    """These designs are tiny: OpenBLAS threads only add synchronisation, which on a busy
    2-core machine made the file 5x slower (solve_triangular at 4 ms a call)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@dataclass
class Design:
    X: pd.DataFrame
    y: np.ndarray
    groups: pd.DataFrame
    random_effects: str
    reml: bool
    seed: int


@st.composite
def designs(draw, crossed=None, slope=None):
    seed = draw(st.integers(0, 2**32 - 1))
    n_groups = draw(st.integers(4, 10))
    sizes = draw(st.lists(st.integers(3, 8), min_size=n_groups, max_size=n_groups))
    slope = draw(st.booleans()) if slope is None else slope
    crossed = draw(st.booleans()) if crossed is None else crossed
    reml = draw(st.booleans())
    sd_group = draw(st.sampled_from([0.0, 0.5, 2.0]))
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), sizes)
    n = len(g)
    x1 = rng.normal(size=n).round(3)
    x2 = rng.uniform(0, 10, size=n).round(3)
    y = 1.0 + 0.5 * x1 - 0.2 * x2 + sd_group * rng.normal(size=n_groups)[g] + rng.normal(size=n)
    if slope:
        y += 0.7 * rng.normal(size=n_groups)[g] * x1
    groups = {"g": np.array([f"L{i:02d}" for i in g], dtype=object)}
    terms = ["(1 + x1 | g)" if slope else "(1 | g)"]
    if crossed:
        n_h = draw(st.integers(3, 5))
        h = rng.integers(0, n_h, size=n)
        h[:n_h] = np.arange(n_h)  # every level present
        y += 0.8 * rng.normal(size=n_h)[h]
        groups["h"] = np.array([f"H{i}" for i in h], dtype=object)
        terms.append("(1 | h)")
    return Design(pd.DataFrame({"x1": x1, "x2": x2}), y.round(4), pd.DataFrame(groups), " + ".join(terms), reml, seed)


def fit(design: Design, X=None, y=None, groups=None, sample_weight=None, random_effects=None):
    model = MixedLinearRegressor(random_effects or design.random_effects, reml=design.reml)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular fits are legitimate here
        model.fit(design.X if X is None else X, design.y if y is None else y,
                  groups=design.groups if groups is None else groups, sample_weight=sample_weight)
    return model


def n_fixed(model) -> int:
    return len(model.fixed_effects_)


def assert_same_fit(a, b, *, y_scale=1.0, y_shift=0.0, objective_shift=0.0, sigma_scale=1.0):
    """b is a's model after y -> y_scale * y + y_shift, and prior weights w -> sigma_scale^2 w
    (which scales the residual standard deviation by sigma_scale and nothing else)."""
    assert b.objective_ - a.objective_ == pytest.approx(objective_shift, abs=OBJ_TOL + 1e-9 * abs(a.objective_))
    sigma = a.sigma_
    assert b.sigma_ == pytest.approx(sigma * abs(y_scale) * sigma_scale, rel=1e-3)
    fa, fb = a.fixed_effects_, b.fixed_effects_
    assert list(fa.index) == list(fb.index)
    for name in fa.index:
        expected = fa.loc[name, "estimate"] * y_scale + (y_shift if name == "(Intercept)" else 0.0)
        assert abs(fb.loc[name, "estimate"] - expected) <= 1e-3 * abs(y_scale) * fa.loc[name, "std_error"], name
    va = a.variance_components_.set_index(["group", "var1", "var2"], drop=True)
    vb = b.variance_components_.set_index(["group", "var1", "var2"], drop=True)
    assert sorted(map(str, va.index)) == sorted(map(str, vb.index))
    for key, row in va.iterrows():
        other = vb.loc[[key]].iloc[0]
        if not pd.isna(key[2]):  # a correlation
            if np.isnan(row.sdcor) or np.isnan(other.sdcor):
                continue  # undefined where a standard deviation is exactly 0
            assert abs(other.sdcor - row.sdcor) <= 2e-2, key  # y -> s y: both effects flip sign
        elif key[0] == "Residual":
            continue
        elif row.sdcor < 1e-3 * sigma:  # on the boundary: both essentially zero
            assert other.sdcor < 1e-3 * sigma * abs(y_scale), key
        else:
            assert other.sdcor == pytest.approx(row.sdcor * abs(y_scale), rel=2e-2), key


# -- row order, labels, column order ------------------------------------------------------------


@SETTINGS
@given(designs())
def test_shuffling_rows(design):
    a = fit(design)
    order = np.random.default_rng(design.seed + 1).permutation(len(design.y))
    b = fit(design, X=design.X.iloc[order].reset_index(drop=True), y=design.y[order],
            groups=design.groups.iloc[order].reset_index(drop=True))
    assert_same_fit(a, b)
    # the conditional predictions follow the rows
    np.testing.assert_allclose(b.predict(design.X.iloc[order], groups=design.groups.iloc[order]),
                               a.predict(design.X, groups=design.groups)[order], atol=1e-3 * a.sigma_)


@SETTINGS
@given(designs(), st.sampled_from(["strings", "integers", "categorical"]))
def test_relabelling_levels(design, kind):
    a = fit(design)
    rng = np.random.default_rng(design.seed + 2)
    relabelled = {}
    maps = {}
    for name in design.groups.columns:
        levels = sorted(design.groups[name].unique())
        new = rng.permutation(len(levels)) * 7 + 100  # a bijection that changes the sort order
        mapping = {old: (int(v) if kind == "integers" else f"z{v}") for old, v in zip(levels, new)}
        column = design.groups[name].map(mapping)
        if kind == "categorical":
            column = pd.Categorical(column, categories=sorted(set(column), reverse=True))
        relabelled[name] = column
        maps[name] = mapping
    groups = pd.DataFrame(relabelled)
    b = fit(design, groups=groups)
    assert_same_fit(a, b)
    for name, mapping in maps.items():
        re_a = a.random_effects_[name].rename(index=mapping)
        re_b = b.random_effects_[name].loc[re_a.index]
        scale = max(float(np.abs(re_a.to_numpy()).max()), a.sigma_)
        np.testing.assert_allclose(re_b.to_numpy(), re_a.to_numpy(), atol=2e-2 * scale)
    np.testing.assert_allclose(b.predict(design.X, groups=groups), a.predict(design.X, groups=design.groups), atol=2e-2 * a.sigma_)


@SETTINGS
@given(designs(crossed=True, slope=False))
def test_permuting_grouping_columns(design):
    a = fit(design, random_effects=None)  # default: a random intercept per column, in column order
    b = fit(design, groups=design.groups[list(reversed(design.groups.columns))], random_effects=None)
    assert_same_fit(a, b)
    c = fit(design, random_effects="(1 | h) + (1 | g)")
    assert_same_fit(a, c)


@SETTINGS
@given(designs())
def test_permuting_X_columns(design):
    a = fit(design)
    b = fit(design, X=design.X[["x2", "x1"]])
    assert b.objective_ == pytest.approx(a.objective_, abs=OBJ_TOL + 1e-9 * abs(a.objective_))
    for name in ("x1", "x2"):
        se = a.fixed_effects_.loc[name, "std_error"]
        assert abs(b.fixed_effects_.loc[name, "estimate"] - a.fixed_effects_.loc[name, "estimate"]) <= 1e-3 * se
    np.testing.assert_allclose(b.coef_, a.coef_[::-1], atol=1e-3 * a.fixed_effects_["std_error"].max())


# -- rescaling and shifting y, rescaling the weights ---------------------------------------------------


@SETTINGS
@given(designs(), st.floats(-3, 3), st.booleans())
def test_rescaling_y(design, log10_scale, negative):
    s = (-1.0 if negative else 1.0) * 10.0**log10_scale
    a = fit(design)
    b = fit(design, y=design.y * s)
    n, p = len(design.y), n_fixed(a)
    shift = 2 * (n - p if design.reml else n) * np.log(abs(s))
    assert_same_fit(a, b, y_scale=s, objective_shift=shift)
    np.testing.assert_allclose(b.theta_ @ b.theta_, a.theta_ @ a.theta_, rtol=2e-2, atol=1e-3)
    for name, frame in a.random_effects_.items():
        scale = max(float(np.abs(frame.to_numpy()).max()), a.sigma_)
        np.testing.assert_allclose(b.random_effects_[name].to_numpy(), s * frame.to_numpy(), atol=2e-2 * abs(s) * scale)


@SETTINGS
@given(designs(), st.floats(-2, 3), st.booleans())
def test_adding_a_constant_to_y(design, log10_shift, negative):
    """Shifts up to 1000 standard deviations of y; larger ones are hard designs
    (tests/test_hard_designs.py, y_shift)."""
    c = (-1.0 if negative else 1.0) * 10.0**log10_shift * float(np.std(design.y))
    a = fit(design)
    b = fit(design, y=design.y + c)
    assert_same_fit(a, b, y_shift=c)


@SETTINGS
@given(designs(), st.floats(-2, 2))
def test_rescaling_all_weights(design, log10_c):
    c = 10.0**log10_c
    a = fit(design)
    b = fit(design, sample_weight=np.full(len(design.y), c))
    assert_same_fit(a, b, sigma_scale=np.sqrt(c))
    np.testing.assert_allclose(b.theta_ * np.sqrt(c), a.theta_, atol=2e-2 * max(1.0, float(np.abs(a.theta_).max())))


@SETTINGS
@given(designs())
def test_zero_weight_rows_are_the_rows_left_out(design):
    n = len(design.y)
    rng = np.random.default_rng(design.seed + 3)
    w = rng.uniform(0.5, 2.0, size=n)
    keep = np.ones(n, dtype=bool)
    keep[rng.choice(n, size=n // 6, replace=False)] = False
    # the left-out rows must not remove a level entirely
    for name in design.groups.columns:
        if design.groups[name][keep].nunique() != design.groups[name].nunique():
            keep[:] = True
    a = fit(design, X=design.X[keep].reset_index(drop=True), y=design.y[keep],
            groups=design.groups[keep].reset_index(drop=True), sample_weight=w[keep])
    b = fit(design, sample_weight=np.where(keep, w, 0.0))
    assert_same_fit(a, b)


# -- determinism and optimality -----------------------------------------------------------------------


@SETTINGS
@given(designs())
def test_deterministic(design):
    a = fit(design)
    b = fit(design)
    assert a.objective_ == b.objective_
    np.testing.assert_array_equal(a.theta_, b.theta_)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert a.intercept_ == b.intercept_
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_array_equal(a.predict(design.X, groups=design.groups), b.predict(design.X, groups=design.groups))


@SETTINGS
@given(designs())
def test_optimum_not_worse_than_start_or_nearby_theta(design):
    model = fit(design)
    problem = prepare(model._training_data, model.reml, warn=False).problem
    objective = problem.objective
    assert objective(model.theta_) == pytest.approx(model.objective_, abs=1e-9 * max(1.0, abs(model.objective_)))
    lower = problem.lower_bounds()
    start = np.where(lower == 0.0, 1.0, 0.0)  # lme4's starting theta
    assert model.objective_ <= objective(start) + 1e-9 * abs(objective(start))
    # each coordinate moved by +-1e-3 (relative), and along random directions, within the bounds
    rng = np.random.default_rng(design.seed + 4)
    steps = [d * e for e in np.eye(len(lower)) for d in (1e-3, -1e-3)]
    steps += [1e-3 * v / np.linalg.norm(v) for v in rng.normal(size=(4, len(lower)))]
    for step in steps:
        nearby = np.maximum(model.theta_ + step * np.maximum(1.0, np.abs(model.theta_)), lower)
        assert objective(nearby) >= model.objective_ - 1e-5, (nearby, model.theta_)
