"""Kenward-Roger from cross products against pbkrtest's algorithm on dense n x n matrices.

``dense_vcov_adj`` below is pbkrtest 0.5.2's ``vcovAdj_internal`` and
``get_SigmaG`` written with NumPy on explicit n x n matrices (Sigma = sum_r
gamma_r G_r, G_r = Z_t (I (x) E_r) Z_t', residual G = W^-1).  sklmm's
version never forms them (see sklmm/_inference/ddf.py); both must agree to
rounding (relative 1e-8).  Cases: random slopes, crossed factors, nested
factors, prior weights (where pbkrtest, which ignores weights, is no
reference, so the dense computation is).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dense_lmm import DenseModel
from sklmm import MixedLinearRegressor
from sklmm._inference.ddf import lmm_tests
from sklmm._model.terms import lower_triangle_colmajor


def dense_vcov_adj(model):
    dense = DenseModel(model)
    n = len(dense.y)
    X = dense.X
    sigma2 = model.sigma_**2
    G, gamma, start, col = [], [], 0, 0
    for term in dense.terms:
        lam = term.lambda_from(model.theta_[start : start + term.n_theta])
        start += term.n_theta
        D = sigma2 * lam @ lam.T
        Zt = dense.Z[:, col : col + term.q]
        col += term.q
        rows, cols = lower_triangle_colmajor(term.n_columns)
        for a, b in zip(rows, cols):
            E = np.zeros((term.n_columns, term.n_columns))
            E[a, b] = E[b, a] = 1.0
            G.append(Zt @ np.kron(np.eye(term.n_levels), E) @ Zt.T)
            gamma.append(D[a, b])
    G.append(np.diag(1.0 / dense.w))
    gamma.append(sigma2)
    Sigma = sum(g * Gr for g, Gr in zip(gamma, G))
    SigmaInv = np.linalg.inv(Sigma)
    Phi = np.linalg.inv(X.T @ SigmaInv @ X)
    k = len(G)
    TT = SigmaInv @ X
    HH = [Gr @ SigmaInv for Gr in G]
    OO = [H @ X for H in HH]
    PP = [-(O.T @ TT) for O in OO]
    QQ = {(r, s): OO[r].T @ SigmaInv @ OO[s] for r in range(k) for s in range(r, k)}
    K = np.array([[np.sum(HH[r].T * HH[s]) for s in range(k)] for r in range(k)])
    IE2 = np.empty((k, k))
    for i in range(k):
        for j in range(i, k):
            IE2[i, j] = IE2[j, i] = K[i, j] - 2 * np.sum(Phi * QQ[i, j]) + np.sum((Phi @ PP[i]) * (PP[j] @ Phi))
    W = 2 * np.linalg.inv(IE2)
    U = np.zeros_like(Phi)
    for i in range(k - 1):
        for j in range(i + 1, k):
            U += W[i, j] * (QQ[i, j] - PP[i] @ Phi @ PP[j])
    U = U + U.T
    for i in range(k):
        U += W[i, i] * (QQ[i, i] - PP[i] @ Phi @ PP[i])
    return Phi, Phi + 2 * Phi @ U @ Phi, W


def make_data(seed=0, n_groups=12, per=6):
    rng = np.random.default_rng(seed)
    n = n_groups * per
    g = np.repeat(np.arange(n_groups), per)
    h = rng.integers(0, 5, size=n)
    x = rng.normal(size=n)
    x2 = rng.normal(size=n)
    y = 1 + 0.5 * x - x2 + rng.normal(size=n_groups)[g] * 0.8 + rng.normal(size=n_groups)[g] * 0.4 * x + rng.normal(size=5)[h] * 0.6 + rng.normal(size=n)
    X = pd.DataFrame({"x": x, "x2": x2})
    groups = pd.DataFrame({"g": g.astype(str), "h": h.astype(str)})
    w = rng.uniform(0.5, 2.0, size=n)
    return X, y, groups, w


CASES = {
    "slope": ("(1 + x | g)", False),
    "crossed": ("(1 | g) + (1 | h)", False),
    "nested": ("(1 | h/g)", False),
    "slope_crossed_weighted": ("(1 + x || g) + (1 | h)", True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_kenward_roger_matches_dense_pbkrtest(name):
    random_effects, weighted = CASES[name]
    X, y, groups, w = make_data()
    model = MixedLinearRegressor(random_effects=random_effects).fit(X, y, groups=groups, sample_weight=w if weighted else None)
    Phi, PhiA, W = dense_vcov_adj(model)
    tests = lmm_tests(model)
    np.testing.assert_allclose(tests.vcov, Phi, rtol=1e-8)
    mine, _, W_mine = tests.kenward_roger_parts()
    np.testing.assert_allclose(mine, PhiA, rtol=1e-7, atol=1e-12 * np.abs(PhiA).max())
    np.testing.assert_allclose(W_mine, W, rtol=1e-6, atol=1e-10 * np.abs(W).max())
