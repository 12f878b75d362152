"""The dense evaluator of small models (sklmm._engine.smalldense) against the blocked path.

``ProfiledDeviance.dense_evaluator()`` factors the whole bordered matrix at
once; the blocked path (``ProfiledDeviance.objective_and_gradient``) is
itself checked against a dense brute-force likelihood in
test_deviance_dense.py.  Checked here:

* objective and gradient equal the blocked path's to 1e-10 relative (both are
  exact up to rounding; observed differences are below 1e-12), at random
  theta, REML and ML, for every small case of test_deviance_dense.py (scalar
  and vector terms, crossed, nested, weighted); the gradient also against
  central finite differences of the objective, 1e-5 relative;
* near-singular lambda, and y fitted (nearly) exactly, are handed to the
  blocked path: the same values bit for bit;
* the evaluator reads the problem's y rows as they are (a bootstrap
  replicate's copy), and is not offered beyond ``MAX_RANDOM_EFFECTS`` or for
  rest structures it did not see formed;
* whole fits through it reach the blocked path's optimum: objectives within
  1e-10 relative, theta within 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest

import sklmm._engine.smalldense as smalldense
from reference_cases import load_case
from sklmm import MixedLinearRegressor
from sklmm._engine.deviance import ProfiledDeviance
from test_deviance_dense import CASES, _problem

SMALL = [name for name in CASES if name not in ("synthetic", "slopes3_corr")]  # those two have 99 and 90 random effects


def _random_thetas(problem, rng, count=4):
    lower = problem.lower_bounds()
    for _ in range(count):
        theta = np.where(lower == 0.0, rng.uniform(0.2, 2.0, problem.n_theta), rng.normal(0.0, 0.4, problem.n_theta))
        yield theta


@pytest.mark.parametrize("case_name", SMALL)
@pytest.mark.parametrize("reml", [True, False], ids=["reml", "ml"])
def test_dense_evaluator_matches_blocked_path(case_name, reml):
    *_, problem = _problem(case_name, reml)
    dense = problem.dense_evaluator()
    assert dense is not None
    rng = np.random.default_rng(3)
    for theta in _random_thetas(problem, rng):
        value, gradient = problem.objective_and_gradient(theta)
        value_dense, gradient_dense = dense.objective_and_gradient(theta)
        assert value_dense == pytest.approx(value, rel=1e-10)
        assert dense.objective(theta) == pytest.approx(value, rel=1e-10)
        np.testing.assert_allclose(gradient_dense, gradient, rtol=1e-10, atol=1e-10 * max(1.0, np.abs(gradient).max()))
    h = 1e-6
    numeric = [(dense.objective(theta + h * e) - dense.objective(theta - h * e)) / (2 * h) for e in np.eye(len(theta))]
    np.testing.assert_allclose(gradient_dense, numeric, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case_name", ["sleepstudy", "penicillin"])
def test_near_singular_and_exact_points_go_to_the_blocked_path(case_name):
    *_, problem = _problem(case_name, True)
    dense = problem.dense_evaluator()
    theta = problem.initial_theta()
    theta[0] = 1e-7  # lambda's first diagonal element near zero: the blocked path's numeric gradient
    value, gradient = problem.objective_and_gradient(theta)
    value_dense, gradient_dense = dense.objective_and_gradient(theta)
    assert value_dense == value
    np.testing.assert_array_equal(gradient_dense, gradient)
    # a threshold above every pwrss: each evaluation is the blocked path's
    dense._exact = np.inf
    theta = problem.initial_theta() * 0.7
    assert dense.objective(theta) == problem.objective(theta)
    value, gradient = problem.objective_and_gradient(theta)
    value_dense, gradient_dense = dense.objective_and_gradient(theta)
    assert value_dense == value
    np.testing.assert_array_equal(gradient_dense, gradient)


def test_evaluator_reads_the_current_y_rows():
    """A bootstrap replicate is a shallow copy of the problem with new y rows (AXX, AX0, rest.AXr)."""
    import copy

    *_, problem = _problem("penicillin", True)
    p = problem.p
    rng = np.random.default_rng(5)
    replicate = copy.copy(problem)
    AXX = problem.AXX.copy()
    AXX[p, :p] = AXX[:p, p] = AXX[:p, p] * 0.9
    AXX[p, p] *= 1.1
    replicate.AXX = AXX
    AX0 = problem.AX0.copy()
    AX0[p] *= rng.uniform(0.8, 1.2, AX0[p].shape)
    replicate.AX0 = AX0
    rest = copy.copy(problem.rest)
    rest.AXr = problem.rest.AXr.copy()
    rest.AXr[p] *= rng.uniform(0.8, 1.2, rest.AXr[p].shape)
    replicate.rest = rest
    theta = np.array([0.9, 1.6])
    value, gradient = replicate.objective_and_gradient(theta)
    assert value != problem.objective(theta)
    value_dense, gradient_dense = replicate.dense_evaluator().objective_and_gradient(theta)
    assert value_dense == pytest.approx(value, rel=1e-10)
    np.testing.assert_allclose(gradient_dense, gradient, rtol=1e-10, atol=1e-10)


def test_not_offered_beyond_its_size_or_without_its_blocks(monkeypatch):
    *_, problem = _problem("synthetic", True)  # 99 random effects
    assert problem.dense_evaluator() is None
    *_, problem = _problem("penicillin", True)
    # a rest structure handed in (the GLMM's reweighted steps): its dense blocks were not formed here
    from sklmm._engine.blocks import CrossProducts

    blocks = CrossProducts(problem.n, problem.ldW, problem.AXX, problem.A00, problem.AX0)
    given = ProfiledDeviance.from_blocks(problem.terms, blocks, reml=True, rest=problem.rest)
    assert given.dense_evaluator() is None
    monkeypatch.setattr(smalldense, "MAX_RANDOM_EFFECTS", 10)
    *_, problem = _problem("penicillin", True)  # 30 random effects
    assert problem.dense_evaluator() is None


@pytest.mark.filterwarnings("ignore::sklmm.SingularFitWarning")
@pytest.mark.parametrize("case_name", ["sleepstudy", "sleepstudy_zerocorr", "sleepstudy_weighted", "penicillin", "pastes", "dyestuff", "dyestuff2", "gasoline"])
@pytest.mark.parametrize("reml", [True, False], ids=["reml", "ml"])
def test_fits_reach_the_blocked_paths_optimum(case_name, reml, monkeypatch):
    case = load_case(case_name)
    X, y, groups, w = case.arrays()
    spec = case.spec["random_effects"]
    dense = MixedLinearRegressor(spec, reml=reml).fit(X, y, groups=groups, sample_weight=w)
    monkeypatch.setattr(ProfiledDeviance, "dense_evaluator", lambda self: None)
    blocked = MixedLinearRegressor(spec, reml=reml).fit(X, y, groups=groups, sample_weight=w)
    assert dense.objective_ == pytest.approx(blocked.objective_, rel=1e-10)
    np.testing.assert_allclose(dense.theta_, blocked.theta_, rtol=1e-5, atol=1e-5)


def test_plain_parameter_fast_path_covers_every_constraint():
    """fit skips scikit-learn's _validate_params only for plain values of every constrained parameter."""
    import inspect

    names = set(inspect.signature(MixedLinearRegressor.__init__).parameters) - {"self"}
    assert names == set(MixedLinearRegressor._parameter_constraints)
    assert MixedLinearRegressor()._plain_params()
    for name, value in [("reml", 1), ("max_iter", 0), ("max_iter", 2.0), ("random_effects", 3), ("fit_intercept", "yes"), ("formula", 1.5)]:
        model = MixedLinearRegressor(**{name: value})
        assert not model._plain_params()
        with pytest.raises(ValueError, match=name):  # scikit-learn's InvalidParameterError
            model.fit(np.zeros((4, 1)), np.arange(4.0), groups=np.array([0, 0, 1, 1]))


def test_one_blas_thread_limit_sets_and_restores():
    """blas_threads_for (small problems): every BLAS library at one thread inside, as before after."""
    from threadpoolctl import threadpool_info

    import sklmm._engine.fit as engine_fit

    *_, problem = _problem("penicillin", True)

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before = blas_threads()
    with engine_fit.blas_threads_for(problem):
        assert all(n == 1 for n in blas_threads())
    assert blas_threads() == before


def test_moment_start_is_factored_once(monkeypatch):
    """From the moment start the optimiser asks for the objective and gradient together (the
    Newton start): no theta is factored twice during the search, and at most one factorisation
    beyond the counted evaluations is made (the estimates', when the optimum was not the last point)."""
    from test_fast_paths import _crossed

    X, y, groups = _crossed()
    factored = []
    original = ProfiledDeviance.factorize

    def recording(self, theta):
        factored.append(tuple(np.asarray(theta, dtype=float)))
        return original(self, theta)

    monkeypatch.setattr(ProfiledDeviance, "factorize", recording)
    model = MixedLinearRegressor(random_effects="(1 | user) + (1 | item)").fit(X, y, groups=groups)
    search = factored[: model.n_iter_]
    assert len(set(search)) == len(search)
    assert len(factored) <= model.n_iter_ + 1
