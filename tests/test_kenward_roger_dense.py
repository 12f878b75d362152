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
from threadpoolctl import threadpool_limits

from dense_lmm import DenseModel
from sklmm import MixedLinearRegressor
from sklmm._inference import ddf
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


# -- memory: slices, the peak, the refusal, one BLAS thread past rfp.BLOCK -----------------


@pytest.mark.parametrize("name", list(CASES))
def test_kenward_roger_by_small_row_slices_matches_dense_pbkrtest(name, monkeypatch):
    """Slices of 5 rows (every sum and product of the KR loop cut across slices) give the same
    adjusted covariance as the dense n x n computation, to the same relative 1e-7."""
    monkeypatch.setattr(ddf, "_ROW_BLOCK", 5)
    random_effects, weighted = CASES[name]
    X, y, groups, w = make_data()
    model = MixedLinearRegressor(random_effects=random_effects).fit(X, y, groups=groups, sample_weight=w if weighted else None)
    _, PhiA, W = dense_vcov_adj(model)
    mine, _, W_mine = lmm_tests(model).kenward_roger_parts()
    np.testing.assert_allclose(mine, PhiA, rtol=1e-7, atol=1e-12 * np.abs(PhiA).max())
    np.testing.assert_allclose(W_mine, W, rtol=1e-6, atol=1e-10 * np.abs(W).max())


def test_blockwise_symmetric_helpers_match_numpy(monkeypatch):
    monkeypatch.setattr(ddf, "_ROW_BLOCK", 4)
    rng = np.random.default_rng(3)
    M = rng.normal(size=(11, 11))
    S = rng.normal(size=(11, 11))
    lower = M.copy()
    ddf._symmetrize_lower(lower)
    np.testing.assert_allclose(np.tril(lower), np.tril((M + M.T) / 2), rtol=0, atol=1e-15)
    A = M.copy()
    ddf._subtract_symmetric_part(A, S)
    np.testing.assert_allclose(A, M - (S + S.T) / 2, rtol=0, atol=1e-15)
    sym = (M + M.T) / 2
    stale_upper = np.tril(sym) + np.triu(S, 1)  # only the lower triangle may be read
    assert ddf._lower_sum_squares(stale_upper) == pytest.approx(np.sum(sym * sym), rel=1e-14)


def _one_level_per_four_rows(n_groups):
    rng = np.random.default_rng(1)
    n = 4 * n_groups
    g = np.repeat(np.arange(n_groups), 4)
    x = rng.normal(size=n)
    y = x + rng.normal(size=n_groups)[g] + rng.normal(size=n)
    return pd.DataFrame({"x": x}), y, pd.DataFrame({"g": g})


def test_kenward_roger_peak_memory_is_its_stated_dense_arrays():
    """tracemalloc's peak while KR runs on a one-term model (q = 600, where the old loop copied
    C's rows three times over, 7 arrays) is within 2% of kenward_roger_bytes (5 square arrays)."""
    import tracemalloc

    X, y, groups = _one_level_per_four_rows(600)
    model = MixedLinearRegressor(random_effects="(1 | g)").fit(X, y, groups=groups)
    tests = lmm_tests(model)
    tests.prepared  # the training data's cross products, loaded before measuring
    tracemalloc.start()
    try:
        tests.kenward_roger_parts()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 1.02 * ddf.kenward_roger_bytes(600, 2)


def test_kenward_roger_beyond_memory_is_refused_naming_satterthwaite(monkeypatch):
    X, y, groups = _one_level_per_four_rows(50)
    model = MixedLinearRegressor(random_effects="(1 | g)").fit(X, y, groups=groups)
    monkeypatch.setattr(ddf, "physical_memory", lambda: ddf.kenward_roger_bytes(50, 2))
    with pytest.raises(ValueError, match=r"50 random effects and 2 fixed effects.*ddf=\"satterthwaite\""):
        model.summary(ddf="kenward-roger")
    assert model.summary(ddf="satterthwaite") is not None


def test_kenward_roger_past_rfp_block_runs_with_one_blas_thread(monkeypatch):
    """The guard against OpenBLAS's threaded dsyrk (sklmm._engine.rfp): beyond BLOCK random
    effects the dense algebra runs under a one-thread BLAS limit, with the same result."""
    X, y, groups = _one_level_per_four_rows(50)
    model = MixedLinearRegressor(random_effects="(1 | g)").fit(X, y, groups=groups)
    expected = lmm_tests(model).kenward_roger_parts()[0]
    limits = []

    def recording_limits(n, user_api):
        limits.append((n, user_api))
        return threadpool_limits(n, user_api=user_api)

    monkeypatch.setattr(ddf, "BLOCK", 10)
    monkeypatch.setattr(ddf, "threadpool_limits", recording_limits)
    model.__dict__.pop("_ddf_cache", None)
    np.testing.assert_allclose(lmm_tests(model).kenward_roger_parts()[0], expected, rtol=1e-12)
    assert limits == [(1, "blas")]
