"""The blocked profiled objective against a brute-force dense marginal likelihood.

For theta given, ``y ~ N(X beta, sigma^2 V)`` with ``V = Z Lambda Lambda' Z' + W^-1``.
Profiling beta (GLS) and sigma out of the Gaussian log-likelihood gives::

    ML:    n log(2 pi s2) + log|V| + n,                  s2 = r'V^-1 r / n
    REML:  (n-p) log(2 pi s2) + log|V| + log|X'V^-1 X| + (n-p),  s2 = r'V^-1 r/(n-p)

with ``r = y - X beta_GLS``.  These are computed here with dense n x n
matrices, independently of the blocked Cholesky code; the two must agree to
rounding (rtol 1e-9).  The GLS beta and the BLUPs
``b = Lambda Lambda' Z' V^-1 r`` are checked the same way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reference_cases import load_case
from sklmm._engine.fit import TrainingData, prepare
from sklmm._model.bars import parse_random_effects

CASES = ["synthetic", "sleepstudy", "sleepstudy_weighted", "penicillin", "pastes", "crossed3", "nested_slope", "slopes3_corr", "zerocorr_crossed", "weighted_slope", "dyestuff"]


def dense_Z_lambda(terms, theta, problem):
    """Dense Z (n x q) and block-diagonal Lambda (q x q), in the engine's order."""
    blocks_z, blocks_l = [], []
    for term, lam in zip(terms, problem.lambdas(theta)):
        n, p, m = len(term.refs), term.n_columns, term.n_levels
        Z = np.zeros((n, m * p))
        z = term.z_values()
        for c in range(p):
            Z[np.arange(n), term.refs * p + c] = z[:, c]
        blocks_z.append(Z)
        blocks_l.append(np.kron(np.eye(m), lam))
    Z = np.hstack(blocks_z)
    q = Z.shape[1]
    Lam = np.zeros((q, q))
    offset = 0
    for block in blocks_l:
        k = block.shape[0]
        Lam[offset : offset + k, offset : offset + k] = block
        offset += k
    return Z, Lam


def dense_profiled(X, y, w, Z, Lam, reml):
    n, p = X.shape
    V = Z @ Lam @ Lam.T @ Z.T + np.diag(1.0 / w)
    Vinv = np.linalg.inv(V)
    XtVinvX = X.T @ Vinv @ X
    beta = np.linalg.solve(XtVinvX, X.T @ Vinv @ y)
    r = y - X @ beta
    rss = r @ Vinv @ r
    logdetV = np.linalg.slogdet(V)[1]
    if reml:
        s2 = rss / (n - p)
        value = (n - p) * np.log(2 * np.pi * s2) + logdetV + np.linalg.slogdet(XtVinvX)[1] + (n - p)
    else:
        s2 = rss / n
        value = n * np.log(2 * np.pi * s2) + logdetV + n
    b = Lam @ Lam.T @ Z.T @ Vinv @ r
    return value, beta, b


def _synthetic_case():
    """First term with slopes (p0 = 2) and a rest mixing a scalar and a 2-column term."""
    rng = np.random.default_rng(7)
    n = 400
    groups = pd.DataFrame({"g": rng.integers(0, 40, n).astype(str), "h": rng.integers(0, 9, n).astype(str), "k": rng.integers(0, 5, n).astype(str)})
    X = pd.DataFrame({"x": rng.normal(size=n), "z": rng.uniform(-1, 1, size=n)})
    y = X["x"].to_numpy() + rng.normal(size=40)[groups["g"].astype(int)] + rng.normal(size=n)
    w = rng.uniform(0.5, 2.0, size=n)
    return X, y, groups, w, "(1 + x | g) + (1 | h) + (1 + z | k)"


def _problem(case_name, reml):
    if case_name == "synthetic":
        X, y, groups, w, formula = _synthetic_case()
    else:
        case = load_case(case_name)
        X, y, groups, w = case.arrays()
        formula = case.spec["random_effects"]
    data = TrainingData(X.to_numpy(), y, groups, w, parse_random_effects(formula), list(X.columns), True)
    prepared = prepare(data, reml)
    weights = np.ones(len(y)) if w is None else w
    return prepared.terms, prepared.design, y, weights, prepared.problem

@pytest.mark.parametrize("reml", [True, False], ids=["reml", "ml"])
@pytest.mark.parametrize("case_name", CASES)
def test_objective_matches_dense_likelihood(case_name, reml):
    terms, X, y, w, problem = _problem(case_name, reml)
    rng = np.random.default_rng(12345)
    lower = problem.lower_bounds()
    for _ in range(4):
        theta = rng.uniform(0.05, 2.0, size=problem.n_theta)
        off_diagonal = lower < 0
        theta[off_diagonal] = rng.uniform(-1.0, 1.0, size=off_diagonal.sum())
        Z, Lam = dense_Z_lambda(terms, theta, problem)
        expected, beta_dense, b_dense = dense_profiled(X, y, w, Z, Lam, reml)
        assert problem.objective(theta) == pytest.approx(expected, rel=1e-9)

        factor = problem.factorize(theta)
        beta, b = problem.solve(factor)
        np.testing.assert_allclose(beta, beta_dense, rtol=1e-7, atol=1e-9 * np.abs(beta_dense).max())
        np.testing.assert_allclose(np.concatenate([bt.ravel() for bt in b]), b_dense, rtol=1e-6, atol=1e-8 * np.abs(b_dense).max())


def test_objective_at_boundary_theta_is_finite():
    """theta = 0 (no random-effect variance) is the linear model's likelihood."""
    terms, X, y, w, problem = _problem("sleepstudy", reml=False)
    theta = np.zeros(problem.n_theta)
    Z, Lam = dense_Z_lambda(terms, theta, problem)
    expected, _, _ = dense_profiled(X, y, w, Z, Lam, reml=False)
    assert problem.objective(theta) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("case_name", ["synthetic", "sleepstudy", "penicillin", "crossed3", "nested_slope", "zerocorr_crossed"])
def test_inverse_diagonal_blocks_match_dense_inverse(case_name):
    """Diagonal blocks of M^-1 (lme4's condVar before scaling) and of the REML zz inverse."""
    terms, X, y, w, problem = _problem(case_name, True)
    rng = np.random.default_rng(99)
    lower = problem.lower_bounds()
    theta = rng.uniform(0.2, 1.5, size=problem.n_theta)
    theta[lower < 0] = rng.uniform(-0.5, 0.5, size=(lower < 0).sum())
    Z, Lam = dense_Z_lambda(terms, theta, problem)
    ZL = Z @ Lam
    M = ZL.T @ (w[:, None] * ZL) + np.eye(ZL.shape[1])
    Omega = np.block([[M, ZL.T @ (w[:, None] * X)], [X.T @ (w[:, None] * ZL), X.T @ (w[:, None] * X)]])
    dense = {False: np.linalg.inv(M), True: np.linalg.inv(Omega)[: M.shape[0], : M.shape[0]]}
    factor = problem.factorize(theta)
    for with_fixed in (False, True):
        blocks = problem.inverse_diagonal_blocks(factor, with_fixed)
        offset = 0
        for term, got in zip(terms, blocks):
            m, p = term.n_levels, term.n_columns
            for level in (0, m // 2, m - 1):
                start = offset + level * p
                np.testing.assert_allclose(got[level], dense[with_fixed][start : start + p, start : start + p], rtol=1e-8, atol=1e-12)
            offset += m * p


@pytest.mark.parametrize("case_name", ["pastes", "nested_slope", "cake"])
def test_nested_and_dense_rest_agree(case_name, monkeypatch):
    """The block-diagonal path for nested terms gives the dense path's objective and gradient."""
    import sklmm._engine.deviance as deviance
    import sklmm._engine.rest as rest

    _, _, _, _, nested = _problem(case_name, True)
    assert isinstance(nested.rest, rest.NestedRest)
    monkeypatch.setattr(deviance, "nested_parent", lambda *args: None)
    _, _, _, _, dense = _problem(case_name, True)
    assert isinstance(dense.rest, rest.DenseRest)
    rng = np.random.default_rng(4)
    lower = nested.lower_bounds()
    for _ in range(3):
        theta = rng.uniform(0.1, 2.0, size=nested.n_theta)
        theta[lower < 0] = rng.uniform(-0.8, 0.8, size=(lower < 0).sum())
        v1, g1 = nested.objective_and_gradient(theta)
        v2, g2 = dense.objective_and_gradient(theta)
        assert v1 == pytest.approx(v2, rel=1e-12)
        np.testing.assert_allclose(g1, g2, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("case_name", ["crossed3", "penicillin", "zerocorr_crossed", "synthetic"])
def test_pair_structured_cross_block_agrees_with_dense(case_name, monkeypatch):
    """Large crossed models hold A_r0 as pairs (PairCross); on small cases, forced, it must give
    the dense representation's objective, gradient and inverse blocks."""
    import sklmm._engine.crossblock as crossblock

    _, _, _, _, dense = _problem(case_name, True)
    assert isinstance(dense.rest.cross, crossblock.DenseCross)
    monkeypatch.setattr(crossblock, "DENSE_MAX_ENTRIES", 0)
    _, _, _, _, pairs = _problem(case_name, True)
    assert isinstance(pairs.rest.cross, crossblock.PairCross)
    rng = np.random.default_rng(8)
    lower = dense.lower_bounds()
    for _ in range(3):
        theta = rng.uniform(0.1, 2.0, size=dense.n_theta)
        theta[lower < 0] = rng.uniform(-0.8, 0.8, size=(lower < 0).sum())
        v1, g1 = dense.objective_and_gradient(theta)
        v2, g2 = pairs.objective_and_gradient(theta)
        assert v1 == pytest.approx(v2, rel=1e-12)
        np.testing.assert_allclose(g1, g2, rtol=1e-8, atol=1e-8)
        for b1, b2 in zip(dense.conditional_covariances(dense.factorize(theta)), pairs.conditional_covariances(pairs.factorize(theta))):
            np.testing.assert_allclose(b1, b2, rtol=1e-10, atol=1e-14)
