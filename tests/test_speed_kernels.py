"""The speed paths against the generic ones they replace.

* ``sklmm._engine.smallblocks``: closed-form kernels for stacks of 1x1, 2x2
  and 3x3 blocks against numpy.linalg (Cholesky, inverse, triangular solves,
  products), 1e-12 relative; p = 4 goes through numpy itself.
* ``ResponseRefitter`` (the batched bootstrap's refits, which reuse the
  design's cross products and replace only their y row) against a refit that
  rebuilds the model from scratch (``refit``, the unbatched path) on
  simulated responses: theta, sigma and beta within 1e-7 (relative for beta;
  both optimise the same criterion from the same start, so they differ by
  rounding only); cases with one term, crossed rest terms, a nested rest
  term, prior weights with zero weights, and no intercept.
"""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from sklmm import MixedLinearRegressor
from sklmm._engine import smallblocks
from sklmm._inference.bootstrap import ResponseRefitter, refit
from sklmm._inference.simulate import simulation_model
from tests.reference_cases import fitted


@pytest.mark.parametrize("p", [1, 2, 3, 4])
@pytest.mark.parametrize("m", [7, 3000])
def test_small_block_kernels_match_numpy(p, m):
    rng = np.random.default_rng(p * 100 + m)
    Z = rng.normal(size=(m, 6, p))
    B = np.einsum("lia,lib->lab", Z, Z) + np.eye(p)
    L = smallblocks.cholesky(B)
    np.testing.assert_allclose(L, np.linalg.cholesky(B), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(smallblocks.inv_lower(L), np.linalg.inv(L), rtol=1e-12, atol=1e-12)
    for R in (rng.normal(size=(m, p)), rng.normal(size=(m, p, 3))):
        R3 = R if R.ndim == 3 else R[:, :, None]
        expect = np.linalg.solve(L, R3).reshape(R.shape)
        np.testing.assert_allclose(smallblocks.solve_lower(L, R), expect, rtol=1e-12, atol=1e-12)
        expect = np.linalg.solve(np.swapaxes(L, 1, 2), R3).reshape(R.shape)
        np.testing.assert_allclose(smallblocks.solve_lower_transpose(L, R), expect, rtol=1e-12, atol=1e-12)
        # strided (transposed) right-hand sides, as the engine passes them
        Rt = np.ascontiguousarray(np.moveaxis(R3, 0, -1))
        np.testing.assert_allclose(smallblocks.solve_lower(L, np.moveaxis(Rt, -1, 0)), np.linalg.solve(L, R3), rtol=1e-12, atol=1e-12)
    C = rng.normal(size=(m, p, 2))
    np.testing.assert_allclose(smallblocks.matmul(B, C), B @ C, rtol=1e-12, atol=1e-12)
    lam = np.tril(rng.normal(size=(p, p)))
    np.testing.assert_allclose(smallblocks.congruence(lam, B), lam.T @ B @ lam, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(smallblocks.log_diagonal_sum(L), np.sum(np.log(np.diagonal(L, axis1=1, axis2=2))), rtol=1e-12)


def test_cholesky_refuses_indefinite_blocks():
    B = np.array([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(np.linalg.LinAlgError):
        smallblocks.cholesky(B)
    with pytest.raises(np.linalg.LinAlgError):
        smallblocks.cholesky(np.full((2, 1, 1), np.nan))


@pytest.mark.parametrize("case_name", ["sleepstudy", "penicillin", "pastes", "sleepstudy_weighted"])
def test_batched_refits_match_full_refits(case_name):
    model, _ = fitted(case_name, "reml")
    data = model._training_data
    if case_name == "sleepstudy_weighted":  # and rows left out by weight 0
        weights = data.weights.copy()
        weights[::7] = 0.0
        data = replace(data, weights=weights)
    sim = simulation_model(data, model.coef_, model.intercept_, model._fitted_terms, model.sigma_)
    refitter = ResponseRefitter(data, model.reml)
    Y = np.column_stack([sim.draw(np.random.default_rng(seed)) for seed in range(4)])
    for y, problem in zip(Y.T, refitter.problems(Y)):
        full = refit(replace(data, y=y), model.reml, model.theta_, 10_000)
        fast = ResponseRefitter.refit(refitter, y, model.theta_, 10_000)
        for a, b in ((full, fast), (full, _refit_of(problem, refitter, model))):
            np.testing.assert_allclose(b[0], a[0], rtol=1e-7, atol=1e-7)
            np.testing.assert_allclose(b[1], a[1], rtol=1e-7)
            np.testing.assert_allclose(b[2], a[2], rtol=1e-7, atol=1e-7 * np.max(np.abs(a[2])))


def _refit_of(problem, refitter, model):
    from sklmm._inference.bootstrap import _refit_problem

    return _refit_problem(problem, refitter.lower, model.theta_, 10_000)


def test_batched_refits_without_intercept():
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(12), 8)
    X = pd.DataFrame({"x": rng.normal(size=96) + 2.0})
    y = 3.0 * X["x"].to_numpy() + rng.normal(size=12)[g] + rng.normal(size=96)
    model = MixedLinearRegressor(random_effects="(1 | group)", fit_intercept=False).fit(X, y, groups=g)
    data = model._training_data
    refitter = ResponseRefitter(data, True)
    assert not refitter.centre
    y2 = y + rng.normal(size=96)
    full = refit(replace(data, y=y2), True, model.theta_, 10_000)
    fast = refitter.refit(y2, model.theta_, 10_000)
    for a, b in zip(full[:3], fast[:3]):
        np.testing.assert_allclose(b, a, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("reml", [True, False], ids=["reml", "ml"])
@pytest.mark.parametrize("case_name", ["sleepstudy", "sleepstudy_weighted", "dyestuff", "slopes3_corr", "weighted_slope"])
def test_one_term_gradient_matches_finite_differences(case_name, reml):
    """The fused one-term gradient (p0 = 1, 2, 3) against central differences of the
    objective (itself checked against the dense likelihood): 1e-5 relative to the
    gradient's size, at random theta."""
    from tests.test_deviance_dense import _problem

    _, _, _, _, problem = _problem(case_name, reml)
    if problem.q_rest:
        pytest.skip("more than one term")
    rng = np.random.default_rng(4)
    lower = problem.lower_bounds()
    for _ in range(3):
        theta = rng.uniform(0.2, 1.5, size=problem.n_theta)
        theta[lower < 0] = rng.uniform(-0.8, 0.8, size=int(np.sum(lower < 0)))
        theta = theta * problem.theta_scales()
        value, grad = problem.objective_and_gradient(theta)
        assert value == pytest.approx(problem.objective(theta), rel=1e-12)
        numeric = np.empty_like(theta)
        for i in range(len(theta)):
            h = 1e-6 * max(1.0, abs(theta[i]))
            up, down = theta.copy(), theta.copy()
            up[i] += h
            down[i] -= h
            numeric[i] = (problem.objective(up) - problem.objective(down)) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-5 * np.max(np.abs(numeric)))


def _weighted_case(structure):
    """Terms and [X z] for one rest structure of :mod:`sklmm._engine.rest`."""
    from sklmm._model.bars import parse_random_effects
    from sklmm._model.terms import build_terms

    rng = np.random.default_rng(7)
    n = 400
    x = rng.normal(size=(n, 2))
    a = rng.integers(0, 40, size=n)
    b = rng.integers(0, 6, size=n)
    groups = pd.DataFrame({"a": a.astype(str), "b": b.astype(str), "nest": (a // 5).astype(str), "obs": np.arange(n).astype(str)})
    formula = {
        "one": "(1 | a)",
        "slope": "(1 + x0 | a)",
        "nested": "(1 + x0 | a) + (1 + x0 | nest)",
        "dense": "(1 + x0 | a) + (1 + x1 | b) + (1 | nest)",
        "pairs": "(1 | obs) + (1 | a) + (1 | b)",
        "pairs_slope": "(1 + x0 | a) + (1 + x1 | b)",  # p0 = 2: S' scattered by (level, c, d)
    }[structure]
    terms = build_terms(parse_random_effects(formula), x, ["x0", "x1"], groups, None)
    XY = np.column_stack([np.ones(n), x, rng.normal(size=n)])
    return terms, XY, rng.uniform(0.05, 2.0, size=n)


@pytest.mark.parametrize("structure", ["one", "slope", "nested", "dense", "pairs", "pairs_slope"])
def test_reweighted_blocks_match_fresh_blocks(structure, monkeypatch):
    """PIRLS's reweighted problems (one pattern, new weights) against the linear model's, built anew.

    The log determinants, the penalised residual sum of squares, beta and u
    at random theta: to 1e-10 relative (the same sums in another order).
    The pair-structured cross block is forced by lowering the dense limit.
    """
    from sklmm._engine import crossblock, rest
    from sklmm._engine.deviance import ProfiledDeviance
    from sklmm._engine.reweight import WeightedBlocks

    if structure.startswith("pairs"):
        monkeypatch.setattr(crossblock, "DENSE_MAX_ENTRIES", 0)
    terms, XY, w = _weighted_case(structure)
    weighted = WeightedBlocks(terms)
    rng = np.random.default_rng(3)
    expected_kind = {
        "nested": rest.NestedRest, "dense": crossblock.DenseCross, "pairs": crossblock.PairCross, "pairs_slope": crossblock.PairCross,
    }
    for step in range(3):  # several weights on one pattern, as PIRLS's steps
        w_step = w * rng.uniform(0.5, 1.5, size=len(w))
        fresh = ProfiledDeviance(terms, XY, w_step, reml=False)
        fast = weighted.problem(XY, w_step)
        if structure in expected_kind:
            held = fast.rest if structure == "nested" else fast.rest.cross
            assert isinstance(held, expected_kind[structure])
        template = ProfiledDeviance(terms, XY, None, reml=False)
        theta = template.initial_theta() + rng.uniform(0.1, 0.6, size=template.n_theta)
        f_fresh, f_fast = fresh.factorize(theta), fast.factorize(theta)
        np.testing.assert_allclose(fast.log_determinants(f_fast), fresh.log_determinants(f_fresh), rtol=1e-10)
        beta_fresh, u_fresh = fresh._beta_u(f_fresh)
        beta_fast, u_fast = fast._beta_u(f_fast)
        np.testing.assert_allclose(beta_fast, beta_fresh, rtol=1e-10, atol=1e-12)
        for a, b in zip(u_fast, u_fresh):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
