"""The fast paths of a fit against the general code they shortcut.

* ``ProfiledDeviance._scalar_terms_gradient`` (every term scalar: crossed or
  nested intercepts) against the general gradient (``_beta_u``,
  ``_pwrss_derivatives``, ``_inverse_block_sums``), itself checked against a
  dense brute force in test_deviance_dense.py: 1e-9 relative; and against
  central finite differences of the objective, 1e-5 relative.
* ``PairCross`` (the pair-structured cross block, built without sorting)
  against ``DenseCross``: Gram products, the products at the pairs and the
  per-level quadratic forms, 1e-12 relative, for 1x1, 2x2 and 3x3 blocks.
* Result tables built on first access: the same frames as building them at
  once, through pickling, refits and clone.
* The validation fast path (float DataFrame and float y): the same fitted
  attributes as scikit-learn's ``validate_data``.
* The moment start of large scalar-term models: the optimum reached is the
  one reached from lme4's start (1e-8 relative in the objective); the
  curvature units it steps in against central second differences of the
  objective at the optimum (within a factor of 2: a guide for the steps), and
  the optimum reached in them meets the convergence test of the data's units.
* The bootstrap's quasi-Newton refits from the fitted optimum
  (``optimize.optimize_near``) against the usual optimiser on the same
  replicates: objectives equal within 1e-9 relative (both stop at the same
  projected-gradient tolerance), never worse by more than that.
* The direct L-BFGS-B driver (``optimize._lbfgsb``) against
  ``scipy.optimize.minimize(method="L-BFGS-B")``: the same points evaluated,
  in the same order, bit for bit.
"""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.base import clone

import sklmm._engine.fit as engine_fit
import sklmm._estimators.linear as linear
from sklmm import MixedLinearRegressor
from sklmm._engine.crossblock import DenseCross, PairCross
from sklmm._engine.optimize import _GRADIENT_TOLERANCE
from sklmm._estimators import results
from test_deviance_dense import _problem


@pytest.mark.parametrize("case_name", ["penicillin", "pastes", "crossed3", "zerocorr_crossed"])
@pytest.mark.parametrize("reml", [True, False], ids=["reml", "ml"])
def test_scalar_terms_gradient_matches_general_path(case_name, reml):
    *_, problem = _problem(case_name, reml)
    assert problem._all_scalar
    rng = np.random.default_rng(11)
    for _ in range(3):
        theta = rng.uniform(0.1, 2.0, size=problem.n_theta)
        value, fused = problem.objective_and_gradient(theta)
        problem._all_scalar = False
        try:
            value_general, general = problem.objective_and_gradient(theta)
        finally:
            problem._all_scalar = True
        assert value == value_general
        np.testing.assert_allclose(fused, general, rtol=1e-9, atol=1e-9)
        h = 1e-6
        numeric = [(problem.objective(theta + h * e) - problem.objective(theta - h * e)) / (2 * h) for e in np.eye(len(theta))]
        np.testing.assert_allclose(fused, numeric, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("p0", [1, 2, 3])
def test_pair_cross_block_matches_dense(p0):
    rng = np.random.default_rng(p0)
    for trial in range(3):
        q_rest, m0 = int(rng.integers(5, 60)), int(rng.integers(5, 80))
        Ar0 = sp.random(q_rest, m0 * p0, density=0.2, random_state=trial, format="csr")
        dense, pairs = DenseCross(Ar0, m0, p0), PairCross(Ar0, m0, p0)
        W0 = rng.normal(size=(m0, p0, p0))
        W0 = W0 @ W0.transpose(0, 2, 1)
        N = rng.normal(size=(q_rest, q_rest))
        N = N + N.T
        gram = dense.gram(W0)
        np.testing.assert_allclose(pairs.gram(W0), gram, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(pairs.pair_values(W0), gram[pairs.pair_i, pairs.pair_j], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(pairs.quad(N), dense.quad(N), rtol=1e-12, atol=1e-11)
        Y = rng.normal(size=(m0 * p0, 2))
        np.testing.assert_allclose(pairs.apply(Y), dense.apply(Y), rtol=1e-12, atol=1e-12)


TABLES = ("random_effects_", "variance_components_", "fixed_effects_", "fixed_effects_cov_")


def _sleepstudy():
    from sklmm.datasets import load_sleepstudy

    data = load_sleepstudy()
    return data[["Days"]].astype(float), data["Reaction"].to_numpy(dtype=float), data["Subject"]


def _assert_tables_equal(a, b):
    for name in ("variance_components_", "fixed_effects_", "fixed_effects_cov_"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert a.random_effects_.keys() == b.random_effects_.keys()
    for key in a.random_effects_:
        pd.testing.assert_frame_equal(a.random_effects_[key], b.random_effects_[key])


def test_result_tables_are_built_on_first_access():
    X, y, groups = _sleepstudy()
    est = MixedLinearRegressor(random_effects="(1 + Days | Subject)").fit(X, y, groups=groups)
    assert not any(name in vars(est) for name in TABLES)
    fit = est._table_source
    pd.testing.assert_frame_equal(est.fixed_effects_, results.fixed_effects_frame(fit))
    pd.testing.assert_frame_equal(est.variance_components_, results.variance_components_frame(fit))
    assert "fixed_effects_" in vars(est)  # kept once built
    # pickled before and after the first access: the same tables
    fresh = MixedLinearRegressor(random_effects="(1 + Days | Subject)").fit(X, y, groups=groups)
    _assert_tables_equal(pickle.loads(pickle.dumps(fresh)), est)
    _assert_tables_equal(pickle.loads(pickle.dumps(est)), est)
    # a refit replaces tables already built
    before = est.fixed_effects_.copy()
    est.fit(X, y * 2.0, groups=groups)
    assert est.fixed_effects_.loc["Days", "estimate"] == pytest.approx(2.0 * before.loc["Days", "estimate"], rel=1e-6)
    # unfitted and cloned estimators have none
    for unfitted in (MixedLinearRegressor(), clone(est)):
        for name in TABLES:
            assert not hasattr(unfitted, name)


def test_validation_fast_path_matches_validate_data(monkeypatch):
    X, y, groups = _sleepstudy()
    fast = MixedLinearRegressor(random_effects="(1 + Days | Subject)").fit(X, y, groups=groups)
    monkeypatch.setattr(linear, "_clean_float_inputs", lambda *args, **kwargs: None)
    slow = MixedLinearRegressor(random_effects="(1 + Days | Subject)").fit(X, y, groups=groups)
    assert fast.n_features_in_ == slow.n_features_in_
    np.testing.assert_array_equal(fast.feature_names_in_, slow.feature_names_in_)
    assert fast.objective_ == slow.objective_
    np.testing.assert_array_equal(fast.coef_, slow.coef_)
    # an array after a DataFrame: no feature names, as validate_data leaves it
    fast.set_params(random_effects="(1 | group)").fit(X.to_numpy(), y, groups=groups.to_numpy())
    assert not hasattr(fast, "feature_names_in_")


def _crossed(n=6000, users=900, items=150, seed=3):
    rng = np.random.default_rng(seed)
    user, item = rng.integers(0, users, n), rng.integers(0, items, n)
    y = 0.6 * rng.normal(size=users)[user] + 0.3 * rng.normal(size=items)[item] + rng.normal(size=n)
    X = pd.DataFrame({"x": rng.normal(size=n)})
    return X, y + 0.2 * X["x"].to_numpy(), pd.DataFrame({"user": user, "item": item})


def test_moment_start_reaches_the_same_optimum(monkeypatch):
    X, y, groups = _crossed()
    with_moments = MixedLinearRegressor(random_effects="(1 | user) + (1 | item)").fit(X, y, groups=groups)
    monkeypatch.setattr(engine_fit, "MOMENT_START_MIN", np.inf)
    from_lme4_start = MixedLinearRegressor(random_effects="(1 | user) + (1 | item)").fit(X, y, groups=groups)
    assert with_moments.objective_ == pytest.approx(from_lme4_start.objective_, rel=1e-8)
    np.testing.assert_allclose(with_moments.theta_, from_lme4_start.theta_, rtol=1e-3)


def test_moment_start_only_for_scalar_terms():
    *_, slopes = _problem("synthetic", True)
    assert slopes.moment_theta() is None
    *_, crossed = _problem("crossed3", True)
    theta = crossed.moment_theta()
    assert theta.shape == (crossed.n_theta,) and np.all(theta > 0)


def test_curvature_units_match_the_criterion(monkeypatch):
    """moment_units ~ 1 / sqrt(d^2 objective / d theta_t^2) at the optimum (second differences)."""
    X, y, groups = _crossed()
    captured = {}
    original = engine_fit.fit_prepared

    def capture(prepared, **kwargs):
        captured["problem"] = prepared.problem
        return original(prepared, **kwargs)

    monkeypatch.setattr(engine_fit, "fit_prepared", capture)
    model = MixedLinearRegressor(random_effects="(1 | user) + (1 | item)").fit(X, y, groups=groups)
    problem = captured["problem"]
    units = problem.moment_units()
    theta = np.asarray(model.theta_, dtype=float)
    for t in range(len(theta)):
        step = np.zeros_like(theta)
        step[t] = h = 1e-3 * theta[t]
        second = (problem.objective(theta + step) - 2 * problem.objective(theta) + problem.objective(theta - step)) / h**2
        assert 0.5 < units[t] * np.sqrt(second) < 2.0
    # the optimum reached in these units meets the convergence test in the data's units (here 1)
    _, gradient = problem.objective_and_gradient(theta)
    assert np.max(np.abs(gradient) * np.maximum(1.0, theta)) <= _GRADIENT_TOLERANCE * abs(model.objective_)


@pytest.mark.parametrize("start", [[1.5, -0.5, 2.0], [0.0, 3.0, 0.2]])
def test_lbfgsb_driver_evaluates_the_points_scipy_does(start):
    """A bounded Rosenbrock function (bound active at the optimum of one coordinate)."""
    from scipy.optimize import Bounds, minimize

    from sklmm._engine import optimize as engine_optimize

    def rosen(x, seen):
        seen.append(np.array(x, copy=True))
        a = np.asarray(x)
        value = np.sum(100.0 * (a[1:] - a[:-1] ** 2) ** 2 + (1.0 - a[:-1]) ** 2) + 3.0 * a[2]
        grad = np.zeros(3)
        grad[:-1] += -400.0 * a[:-1] * (a[1:] - a[:-1] ** 2) - 2.0 * (1.0 - a[:-1])
        grad[1:] += 200.0 * (a[1:] - a[:-1] ** 2)
        grad[2] += 3.0
        return value, grad

    lower = np.array([-np.inf, 0.0, 0.1])
    ours, theirs = [], []
    result = engine_optimize._lbfgsb(lambda x: rosen(x, ours), np.array(start), lower, 500)
    reference = minimize(
        lambda x: rosen(x, theirs), np.array(start), jac=True, method="L-BFGS-B",
        bounds=Bounds(lower, np.full(3, np.inf)),
        options={"maxfun": 500, "maxiter": 500, "ftol": 0.0, "gtol": 0.0},
    )
    assert len(ours) == len(theirs) > 10
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(result.x, reference.x)
    assert result.fun == reference.fun
    assert result.message == reference.message


@pytest.mark.parametrize("loader, random_effects", [("load_sleepstudy", "(Days | Subject)"), ("load_penicillin", None)])
def test_near_optimum_refits_match_the_usual_optimizer(loader, random_effects):
    import sklmm.datasets as datasets
    from sklmm import MixedLinearRegressor
    from sklmm._inference.bootstrap import ResponseRefitter
    from sklmm._inference.simulate import simulation_model
    from sklmm._engine.optimize import optimize_near

    X, y, groups = getattr(datasets, loader)(return_X_y_groups=True)
    model = MixedLinearRegressor(random_effects=random_effects).fit(X, y, groups=groups)
    train = model._training_data
    sim = simulation_model(train, model.coef_, model.intercept_, model._fitted_terms, model.sigma_)
    refitter = ResponseRefitter(train, reml=True)
    near = refitter.near_start(model.theta_)
    assert near is not None
    Y = np.column_stack([sim.draw(np.random.default_rng(seed)) for seed in range(20)])
    used = 0
    for problem in refitter.problems(Y):
        with engine_fit.blas_threads_for(problem):
            fast = optimize_near(problem.objective_and_gradient, model.theta_, refitter.lower, near[0], near[1], 1000)
        usual = engine_fit.optimize(problem, 1000, model.theta_, second_opinion=False)
        if fast is None:  # near the boundary or no descent: the usual optimiser is used
            continue
        used += 1
        assert fast.converged
        assert fast.objective <= usual.objective + 1e-9 * abs(usual.objective)
        assert fast.objective == pytest.approx(usual.objective, rel=1e-9)
    assert used >= 15


def test_secant_step_reaches_a_quadratic_minimum():
    """On a separable quadratic the secant curvatures are exact: one step lands on the minimum (1e-12)."""
    from sklmm._engine.optimize import OptimizeResult

    H, centre = np.array([3.0e3, 0.5]), np.array([0.4, 1.3])

    def value_and_gradient(theta):
        return float(0.5 * np.sum(H * (theta - centre) ** 2)), H * (theta - centre)

    best = engine_fit._BestGradient(value_and_gradient)
    best(np.array([0.41, 1.1]))
    value, _ = best(np.array([0.405, 1.2]))
    result = OptimizeResult(best.theta.copy(), value, 2, True, "")
    result, count = engine_fit._secant_step(best, result, np.zeros(2), np.ones(2), 2, 10)
    assert count == 3
    np.testing.assert_allclose(result.theta, centre, rtol=1e-12)
    assert result.objective == pytest.approx(0.0, abs=1e-20)


def test_newton_start_steps_update_the_hessian_by_bfgs():
    """From a moment start in curvature units that are off (a coupled quadratic with Hessian
    eigenvalues 0.55 and 1.6), three steps from the identity Hessian leave 21% of the gradient;
    the BFGS-updated steps leave under a tenth of that (no lower bound active), each kept step
    lowering the objective.  The first step is the identity step bit for bit (a resumed fit replays it)."""
    from sklmm._engine import optimize as engine_optimize

    rotation = np.array([[np.cos(0.5), -np.sin(0.5)], [np.sin(0.5), np.cos(0.5)]])
    A = rotation @ np.diag([0.55, 1.6]) @ rotation.T
    centre = np.array([40.0, 25.0])
    points = []

    def value_and_gradient(x):
        points.append(np.array(x, copy=True))
        d = x - centre
        return float(0.5 * d @ A @ d), A @ d

    x0 = np.array([31.0, 33.0])
    counted = engine_optimize._Counted(None, value_and_gradient, 100, np.zeros(2))
    value0, grad0 = counted.value_and_gradient(x0)
    x = engine_optimize._newton_steps(counted, x0, value0, grad0, np.zeros(2))
    assert len(points) == 1 + engine_optimize.NEWTON_START_STEPS
    assert np.array_equal(points[1], x0 - grad0)
    values = [float(0.5 * (p - centre) @ A @ (p - centre)) for p in points]
    assert all(b < a for a, b in zip(values, values[1:]))
    identity = x0.copy()
    for _ in range(engine_optimize.NEWTON_START_STEPS):
        identity = identity - A @ (identity - centre)
    # gradient norms: 18.3 at the start, 3.9 after three identity steps, 0.28 after the BFGS steps
    assert np.linalg.norm(A @ (x - centre)) < 0.1 * np.linalg.norm(A @ (identity - centre))
