"""The packed in-place rest block (sklmm._engine.packedrest) for crossed factors beyond 20,000 levels.

Users x items models past ``DENSE_REST_MAX`` rest random effects are held by
``PackedRest``: one triangle in LAPACK's rectangular full packed format,
factored and inverted in place.  Such models are too large for tests, so the
threshold is lowered here and the packed path is checked on small models
against

* the dense path (``DenseRest``), itself checked against a brute-force dense
  likelihood in test_deviance_dense.py: objective to rel 1e-12 (both are
  rounding-level computations of the same quantity), gradient and inverse
  blocks to rel 1e-8 / 1e-10;
* the brute-force dense likelihood directly, on a model with an odd number
  of rest random effects (the packed format pads it): rel 1e-9, as in
  test_deviance_dense.py;
* lme4 1.1-31 (tests/data/lme4_extra/crossed3, three crossed factors):
  objective at or below lme4's (+1e-4) and within 1e-2, theta within 2e-2,
  the tolerances of test_lme4_reference.py.

The same checks hold with the Gram products streamed (``StreamedCross``, for
pairs too many to hold), with chunk bounds small enough that Gram blocks
straddle the packed format's two halves, entries' pairs split across chunks,
and heavy levels' tiles cut into several pieces.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.linalg import lapack

import sklmm._engine.deviance as deviance
import sklmm._engine.packedrest as packedrest
import sklmm._engine.rest as rest
from reference_cases import as_list, load_case
from sklmm import MixedLinearRegressor
from sklmm._engine.fit import TrainingData, prepare
from sklmm._engine.crossblock import PairCross
from sklmm._engine import rfp
from sklmm._engine.packedrest import PackedRest, StreamedCross, packed_bytes, rfp_position, rfp_solve
from sklmm._model.bars import parse_random_effects
from test_deviance_dense import _problem, dense_profiled, dense_Z_lambda


@pytest.mark.parametrize("n", [2, 4, 10, 36])
def test_rfp_positions_match_lapack(n):
    """rfp_position agrees with LAPACK's own full-to-RFP copy (dtrttf, TRANSR='N', UPLO='L')."""
    A = np.arange(n * n, dtype=float).reshape(n, n) + 1.0
    arf, info = lapack.dtrttf(np.asfortranarray(A), transr="N", uplo="L")
    assert info == 0
    r, c = np.tril_indices(n)
    np.testing.assert_array_equal(np.asarray(arf).ravel(order="F")[rfp_position(r, c, n)], A[r, c])
    assert packed_bytes(n) == arf.size * 8


def test_rfp_routines_match_dense_linear_algebra():
    """The direct LAPACK calls (no 32-bit length check, so past n = 46,340): factor, solves, inverse (rel 1e-12)."""
    rng = np.random.default_rng(4)
    n = 12
    G = rng.normal(size=(n, n))
    M = G @ G.T + n * np.eye(n)
    buffer, info = lapack.dtrttf(np.asfortranarray(M), transr="N", uplo="L")
    buffer = np.asarray(buffer).ravel(order="F").copy()
    assert rfp.cholesky(buffer, n) == 0
    L = np.linalg.cholesky(M)
    r, c = np.tril_indices(n)
    np.testing.assert_allclose(buffer[rfp_position(r, c, n)], L[r, c], rtol=1e-12)
    B = rng.normal(size=(n, 3))
    np.testing.assert_allclose(rfp_solve(buffer, n, B.copy(), "N"), np.linalg.solve(L, B), rtol=1e-12)
    np.testing.assert_allclose(rfp_solve(buffer, n, B.copy(), "T"), np.linalg.solve(L.T, B), rtol=1e-12)
    assert rfp.inverse(buffer, n) == 0
    np.testing.assert_allclose(buffer[rfp_position(r, c, n)], np.linalg.inv(M)[r, c], rtol=1e-10, atol=1e-14)
    assert rfp.cholesky(-np.abs(buffer), n) > 0  # not positive definite: LAPACK's info, not an exception


def _rfp_of(M):
    buffer, info = lapack.dtrttf(np.asfortranarray(M), transr="N", uplo="L")
    assert info == 0
    return np.asarray(buffer).ravel(order="F").copy()


@pytest.mark.parametrize("n, block", [(130, 16), (130, 13), (96, 48), (64, 7), (40, 1000)])
def test_blocked_rfp_factor_and_inverse_match_lapack(n, block):
    """sklmm._engine.rfp by blocks (every dsyrk, dpotrf and dlauum call at most ``block`` rows, the
    last block short where ``block`` does not divide n/2) against LAPACK's own dpftrf and dpftri
    (scipy's wrappers, whole calls) and the dense inverse: 1e-12 relative (factor), 1e-10 (inverse)."""
    from sklmm._engine import rfp

    rng = np.random.default_rng(n + block)
    G = rng.normal(size=(n, n + 5))
    M = G @ G.T / n + 0.05 * np.eye(n)
    ours, theirs = _rfp_of(M), _rfp_of(M)
    assert rfp.cholesky(ours, n, block=block) == 0
    theirs, info = lapack.dpftrf(n, theirs, transr="N", uplo="L")
    assert info == 0
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
    assert rfp.inverse(ours, n, block=block) == 0
    theirs, info = lapack.dpftri(n, theirs, transr="N", uplo="L")
    assert info == 0
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-13)
    r, c = np.tril_indices(n)
    np.testing.assert_allclose(ours[rfp_position(r, c, n)], np.linalg.inv(M)[r, c], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("bad", [3, 40, 70, 129])
def test_blocked_rfp_factor_reports_the_leading_minor(bad):
    """A matrix whose leading minor of order ``bad`` + 1 is singular: the blocked factor's info is LAPACK's."""
    from sklmm._engine import rfp

    n = 130
    rng = np.random.default_rng(bad)
    G = rng.normal(size=(n, n + 5))
    M = G @ G.T / n + 0.05 * np.eye(n)
    M[bad, :bad] = M[:bad, bad] = 0.0
    M[bad, bad] = -1.0
    ours = _rfp_of(M)
    _, info = lapack.dpftrf(n, _rfp_of(M), transr="N", uplo="L")
    assert info == bad + 1
    assert rfp.cholesky(ours, n, block=16) == info


def _odd_crossed_case():
    """Three crossed scalar factors with 7 + 4 = 11 rest random effects (odd: padded)."""
    rng = np.random.default_rng(21)
    n = 300
    groups = pd.DataFrame({"u": rng.integers(0, 30, n).astype(str), "i": rng.integers(0, 7, n).astype(str), "s": rng.integers(0, 4, n).astype(str)})
    X = pd.DataFrame({"x": rng.normal(size=n)})
    y = (0.5 * X["x"] + rng.normal(size=30)[groups["u"].astype(int)] + 0.7 * rng.normal(size=7)[groups["i"].astype(int)] + rng.normal(size=n)).to_numpy()
    w = rng.uniform(0.5, 2.0, size=n)
    return X, y, groups, w, "(1 | u) + (1 | i) + (1 | s)"


def _prepared(case, reml):
    X, y, groups, w, formula = case
    data = TrainingData(X.to_numpy(), y, groups, w, parse_random_effects(formula), list(X.columns), True)
    prepared = prepare(data, reml)
    return prepared.terms, prepared.design, y, w, prepared.problem


#: Heavy-level settings of StreamedCross: every level light (pairs enumerated),
#: a mix (levels of 3+ rest rows in tiles of 2 rows), every level heavy.
HEAVY = {"light": (10**9, 256), "mixed": (3, 2), "heavy": (1, 256)}


def _stream(monkeypatch, heavy="mixed"):
    """Force PackedRest with a StreamedCross, in chunks that split blocks, entries and tiles."""
    monkeypatch.setattr(rest, "DENSE_REST_MAX", 2)
    monkeypatch.setattr(rest, "PAIR_MEMORY_FRACTION", 0.0)
    monkeypatch.setattr(packedrest, "STREAM_BLOCK_ENTRIES", 60)  # 3 rows of a 20-column block
    monkeypatch.setattr(packedrest, "STREAM_CHUNK_INCIDENCES", 7)
    level, tile = HEAVY[heavy]
    monkeypatch.setattr(packedrest, "HEAVY_LEVEL", level)
    monkeypatch.setattr(packedrest, "HEAVY_TILE_ROWS", tile)


def _slope_first_case():
    """A first term with a random slope, (1 + x | u), crossed with two scalar terms: p0 = 2."""
    rng = np.random.default_rng(8)
    n = 400
    groups = pd.DataFrame({"u": rng.integers(0, 40, n).astype(str), "i": rng.integers(0, 9, n).astype(str), "s": rng.integers(0, 6, n).astype(str)})
    x = rng.normal(size=n)
    X = pd.DataFrame({"x": x})
    u = groups["u"].astype(int).to_numpy()
    y = 0.5 * x + rng.normal(size=40)[u] + 0.4 * rng.normal(size=40)[u] * x + 0.7 * rng.normal(size=9)[groups["i"].astype(int)] + rng.normal(size=n)
    return X, y, groups, None, "(1 + x | u) + (1 | i) + (1 | s)"


def _compare_problems(dense, other, n_points=3, seed=5):
    rng = np.random.default_rng(seed)
    for _ in range(n_points):
        theta = rng.uniform(0.1, 2.0, size=dense.n_theta)
        v1, g1 = dense.objective_and_gradient(theta)
        v2, g2 = other.objective_and_gradient(theta)
        assert v2 == pytest.approx(v1, rel=1e-12)
        np.testing.assert_allclose(g2, g1, rtol=1e-8, atol=1e-8)
        beta1, b1 = dense.solve(dense.factorize(theta))
        beta2, b2 = other.solve(other.factorize(theta))
        np.testing.assert_allclose(beta2, beta1, rtol=1e-10)


@pytest.mark.parametrize("heavy", list(HEAVY))
@pytest.mark.parametrize("reml", [True, False], ids=["reml", "ml"])
@pytest.mark.parametrize("case_name", ["penicillin", "crossed3", "zerocorr_crossed"])
def test_streamed_rest_matches_dense_rest(case_name, reml, heavy, monkeypatch):
    """Objective to rel 1e-12 and gradient to 1e-8 of the dense path (itself checked by brute force)."""
    *_, dense = _problem(case_name, reml)
    assert isinstance(dense.rest, rest.DenseRest)
    _stream(monkeypatch, heavy)
    *_, streamed = _problem(case_name, reml)
    assert isinstance(streamed.rest, PackedRest) and isinstance(streamed.rest.cross, StreamedCross)
    _compare_problems(dense, streamed)


@pytest.mark.parametrize("heavy", list(HEAVY))
def test_streamed_rest_with_a_sloped_first_term(heavy, monkeypatch):
    """p0 = 2: W0 is 2 x 2 per level and T_l a 2 x 2 block; as the dense path, and as the pairs."""
    *_, dense = _prepared(_slope_first_case(), True)
    assert isinstance(dense.rest, rest.DenseRest) and dense.p0 == 2
    monkeypatch.setattr(rest, "DENSE_REST_MAX", 2)
    *_, pairs = _prepared(_slope_first_case(), True)
    assert isinstance(pairs.rest.cross, PairCross)
    _stream(monkeypatch, heavy)
    *_, streamed = _prepared(_slope_first_case(), True)
    assert isinstance(streamed.rest.cross, StreamedCross)
    _compare_problems(dense, streamed)
    _compare_problems(pairs, streamed)


def test_streamed_cross_operations_match_pairs(monkeypatch):
    """The streamed Gram correction and T equal PairCross's on a random packed buffer (rel 1e-13)."""
    rng = np.random.default_rng(2)
    import scipy.sparse as sp

    q, m0 = 31, 50  # odd q: the buffer is padded to n = 32
    A = sp.random(q, m0, density=0.3, random_state=3, format="csr")
    A.data = rng.uniform(0.5, 2.0, A.nnz)
    n = q + 1
    d = rng.uniform(0.2, 1.5, q)
    W0 = rng.uniform(0.1, 1.0, (m0, 1, 1))
    pairs = PairCross(A, m0, 1)
    position = rfp_position(pairs.pair_i, pairs.pair_j, n)
    expected = np.zeros((n + 1) * (n // 2))
    expected[position] -= pairs.pair_values(W0) * d[pairs.pair_i] * d[pairs.pair_j]
    inverse = rng.uniform(-1.0, 1.0, expected.size)
    T_expected = pairs.quad_from_pairs(d[pairs.pair_i] * inverse[position] * d[pairs.pair_j])
    for heavy in HEAVY:
        for block_entries, chunk in [(q, 1), (5 * q, 11), (10**6, 10**6)]:
            monkeypatch.setattr(packedrest, "HEAVY_LEVEL", HEAVY[heavy][0])
            monkeypatch.setattr(packedrest, "HEAVY_TILE_ROWS", HEAVY[heavy][1])
            streamed = StreamedCross(A, m0, 1, block_entries=block_entries, chunk_incidences=chunk)
            buffer = np.zeros_like(expected)
            streamed.subtract_packed_gram(buffer, n, W0, d)
            np.testing.assert_allclose(buffer, expected, rtol=1e-13, atol=1e-13)
            np.testing.assert_allclose(streamed.packed_quad(inverse, n, d), T_expected, rtol=1e-12, atol=1e-12)
            assert streamed.n_incidences == pairs.n_incidences


@pytest.mark.parametrize("reml", [True, False], ids=["reml", "ml"])
@pytest.mark.parametrize("case_name", ["penicillin", "crossed3", "zerocorr_crossed"])
def test_packed_rest_matches_dense_rest(case_name, reml, monkeypatch):
    *_, dense = _problem(case_name, reml)
    assert isinstance(dense.rest, rest.DenseRest)
    monkeypatch.setattr(rest, "DENSE_REST_MAX", 2)
    *_, packed = _problem(case_name, reml)
    assert isinstance(packed.rest, PackedRest)
    rng = np.random.default_rng(5)
    for _ in range(3):
        theta = rng.uniform(0.1, 2.0, size=dense.n_theta)
        v1, g1 = dense.objective_and_gradient(theta)
        v2, g2 = packed.objective_and_gradient(theta)
        assert v2 == pytest.approx(v1, rel=1e-12)
        np.testing.assert_allclose(g2, g1, rtol=1e-8, atol=1e-8)
        for with_fixed in (False, True):
            blocks1 = dense.inverse_diagonal_blocks(dense.factorize(theta), with_fixed)
            blocks2 = packed.inverse_diagonal_blocks(packed.factorize(theta), with_fixed)
            for b1, b2 in zip(blocks1, blocks2):
                np.testing.assert_allclose(b2, b1, rtol=1e-10, atol=1e-14)
        beta1, b1 = dense.solve(dense.factorize(theta))
        beta2, b2 = packed.solve(packed.factorize(theta))
        np.testing.assert_allclose(beta2, beta1, rtol=1e-10)
        for t1, t2 in zip(b1, b2):
            np.testing.assert_allclose(t2, t1, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("reml", [True, False], ids=["reml", "ml"])
def test_packed_rest_with_odd_size_matches_dense_likelihood(reml, monkeypatch):
    monkeypatch.setattr(rest, "DENSE_REST_MAX", 2)
    terms, X, y, w, problem = _prepared(_odd_crossed_case(), reml)
    assert isinstance(problem.rest, PackedRest) and problem.rest.q == 11 and problem.rest.n == 12
    rng = np.random.default_rng(3)
    for _ in range(3):
        theta = rng.uniform(0.05, 2.0, size=problem.n_theta)
        Z, Lam = dense_Z_lambda(terms, theta, problem)
        expected, beta_dense, b_dense = dense_profiled(X, y, w, Z, Lam, reml)
        assert problem.objective(theta) == pytest.approx(expected, rel=1e-9)
        beta, b = problem.solve(problem.factorize(theta))
        np.testing.assert_allclose(beta, beta_dense, rtol=1e-7, atol=1e-9 * np.abs(beta_dense).max())
        np.testing.assert_allclose(np.concatenate([bt.ravel() for bt in b]), b_dense, rtol=1e-6, atol=1e-8 * np.abs(b_dense).max())


def test_packed_factor_is_consumed_by_the_inverse(monkeypatch):
    """The inverse overwrites the packed factor; using it afterwards raises instead of misreading it."""
    monkeypatch.setattr(rest, "DENSE_REST_MAX", 2)
    *_, problem = _problem("crossed3", True)
    theta = np.array([0.5, 0.7, 0.3])
    factor = problem.factorize(theta)
    problem.rest.inverse_blocks(factor.Lrr, factor.lams[1:])
    with pytest.raises(RuntimeError, match="holds the inverse"):
        problem.rest.solve_upper(factor.Lrr, np.ones((problem.q_rest, 1)))
    # the optimiser's cache never hands out a consumed factor
    problem.objective_and_gradient(theta)
    assert not problem.last_factorization(theta).Lrr.consumed


def test_packed_estimates_are_kept_before_the_inverse(monkeypatch):
    """After a gradient evaluation (which inverts the packed factor in place), the estimates at its
    theta come without a second factorisation and equal a fresh factor's (same algebra: to rounding)."""
    monkeypatch.setattr(rest, "DENSE_REST_MAX", 2)
    *_, problem = _problem("crossed3", True)
    theta = np.array([0.5, 0.7, 0.3])
    fresh = problem.factorize(theta)
    beta, b = problem.solve(fresh)
    determinants = problem.log_determinants(fresh)
    problem.objective_and_gradient(theta)
    assert problem._last_factorization is None  # the consumed factor is let go

    def no_factorisation(theta):
        raise AssertionError("factored again")

    monkeypatch.setattr(problem, "factorize", no_factorisation)
    kept = problem.estimates(theta)
    np.testing.assert_allclose([kept.ldL2, kept.ldRX2, kept.pwrss], determinants, rtol=1e-13)
    np.testing.assert_allclose(kept.beta, beta, rtol=1e-12)
    for t1, t2 in zip(kept.b, b):
        np.testing.assert_allclose(t1, t2, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(problem.fixed_effects_cov(kept, 1.0), problem.fixed_effects_cov(fresh, 1.0), rtol=1e-13)
    # another theta, or blocks edited since (forget), factor anew
    with pytest.raises(AssertionError, match="factored again"):
        problem.estimates(theta * 1.01)
    problem.forget()
    with pytest.raises(AssertionError, match="factored again"):
        problem.estimates(theta)


def test_packed_fit_factors_once_per_evaluation(monkeypatch):
    """The fit's estimates at the optimum reuse its last evaluation: no factorisation beyond one per evaluation."""
    monkeypatch.setattr(rest, "DENSE_REST_MAX", 2)
    calls = []
    original = deviance.ProfiledDeviance.factorize

    def counted(self, theta):
        calls.append(np.array(theta))
        return original(self, theta)

    monkeypatch.setattr(deviance.ProfiledDeviance, "factorize", counted)
    # every evaluation through the blocked (packed) path, not a small model's one dense factor
    monkeypatch.setattr(deviance.ProfiledDeviance, "dense_evaluator", lambda self: None)
    model = _fit(load_case("crossed3"), "reml")
    assert len(calls) == model.n_iter_


def _fit(case, method):
    X, y, groups, w = case.arrays()
    model = MixedLinearRegressor(random_effects=case.spec["random_effects"], reml=(method == "reml"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(X, y, groups=groups, sample_weight=w)


@pytest.mark.parametrize("cross", ["pairs", "streamed"])
@pytest.mark.parametrize("method", ["reml", "ml"])
def test_packed_fit_matches_lme4(method, cross, monkeypatch):
    """crossed3 fitted through the packed path: lme4's optimum, and the dense path's estimates."""
    case = load_case("crossed3")
    dense = _fit(case, method)
    monkeypatch.setattr(rest, "DENSE_REST_MAX", 2)
    if cross == "streamed":
        _stream(monkeypatch)
    packed = _fit(case, method)
    ref = case.reference[method]
    assert packed.objective_ <= ref["objective"] + 1e-4
    assert packed.objective_ >= ref["objective"] - 1e-2
    np.testing.assert_allclose(packed.theta_, np.asarray(as_list(ref["theta"]), dtype=float), atol=2e-2)
    # the same optimum as the dense path, and the same tables built from its factor
    assert packed.objective_ == pytest.approx(dense.objective_, rel=1e-9)
    np.testing.assert_allclose(packed.theta_, dense.theta_, rtol=1e-4)
    np.testing.assert_allclose(packed.fixed_effects_["std_error"], dense.fixed_effects_["std_error"], rtol=1e-4)
    for factor in dense.random_effects_cov_:
        np.testing.assert_allclose(packed.random_effects_cov_[factor], dense.random_effects_cov_[factor], rtol=1e-3)
    X, _, groups, _ = case.arrays()
    low1 = dense.predict_interval(X.iloc[:20], groups=groups.iloc[:20])
    low2 = packed.predict_interval(X.iloc[:20], groups=groups.iloc[:20])
    np.testing.assert_allclose(np.asarray(low2), np.asarray(low1), rtol=1e-4)


def test_packed_rest_refuses_random_slopes(monkeypatch):
    monkeypatch.setattr(rest, "DENSE_REST_MAX", 2)
    with pytest.raises(ValueError, match=r"\(h, k\) have .* only for terms with one column each"):
        _problem("synthetic", True)


def test_packed_rest_refuses_what_memory_cannot_hold(monkeypatch):
    import sklmm._engine.rest as rest_module

    monkeypatch.setattr(rest_module, "DENSE_REST_MAX", 2)
    monkeypatch.setattr(rest_module, "physical_memory", lambda: 100)
    with pytest.raises(ValueError, match=r"\(f2, f3\) have 20 random effects .* more than 60% of this machine's"):
        _problem("crossed3", True)


def test_packed_rest_streams_pairs_memory_cannot_hold(monkeypatch):
    """Heavy levels of the first factor (users rating thousands of items) grow the pair structure
    with the square of their counts: past memory the Gram products are streamed instead."""
    monkeypatch.setattr(rest, "DENSE_REST_MAX", 2)
    monkeypatch.setattr(rest, "physical_memory", lambda: 2**33)
    monkeypatch.setattr(rest, "PAIR_BYTES", 2**40)  # as if every incidence took a TiB
    *_, problem = _problem("crossed3", True)
    assert isinstance(problem.rest.cross, StreamedCross)


def test_packed_rest_refuses_what_streaming_cannot_hold(monkeypatch):
    """Neither the pairs nor the streamed workspace fit beside the triangle: refused, naming the terms."""
    monkeypatch.setattr(rest, "DENSE_REST_MAX", 2)
    monkeypatch.setattr(rest, "physical_memory", lambda: 64 * 1024)
    with pytest.raises(ValueError, match=r"\(f2, f3\) have 20 random effects in all, crossed with it through [\d,]+ nonzeros"):
        _problem("crossed3", True)
