"""The criterion and its gradient for small models, by one dense Cholesky factor.

For a model with few random effects (the lme4 reference data sets: 6 to 40
of them) the blocked factor of :class:`~sklmm._engine.deviance.ProfiledDeviance`
costs more in per-call overhead (some hundred small array operations per
evaluation) than in arithmetic.  Here the whole bordered matrix

    K = [[Lambda' A_zz Lambda + I, .      ],
         [A_Xz Lambda,             A_XX   ]]      (N = q + p + 1 square)

is assembled from one dense copy of the cross products A = [Z X y]' W [Z X y]
and factored by one LAPACK call; the gradient is the general formula of
:mod:`sklmm._engine.deviance` with G read off one ``dpotri`` of the leading
block (ML: M^-1; REML: the [z X] block's inverse, its zz part) and
``[u; beta]`` from one triangular solve.  About twenty array operations an
evaluation instead of a hundred: the same numbers up to rounding (checked
against the blocked path in tests/test_small_dense.py).

Used by :func:`sklmm._engine.fit.optimize` for models with at most
:data:`MAX_RANDOM_EFFECTS` random effects; everything after the optimiser
(estimates, conditional modes, covariances) still reads the blocked factor.
At a theta where some lambda_t is nearly singular the evaluation is handed to
the blocked path (its finite-difference gradient for that term).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lapack

from .._model.terms import lower_triangle_colmajor

#: At most this many random effects in all: the dense evaluator.  Measured on the
#: 2-core benchmark machine, one BLAS thread, an evaluation with its gradient:
#: 45-170 us on the reference cases and the test cases of 6 to 60 random effects,
#: against 120-570 us by the blocked path (its fixed per-call overhead); beyond a
#: few dozen the dense factor's cubic cost takes over (hsb82's 160 stay blocked).
MAX_RANDOM_EFFECTS = 64
#: Where pwrss is below this fraction of y'Wy (y fitted to 1e-4 of its norm), the blocked path evaluates.
_EXACT_PWRSS = 1e-8
#: As deviance._SINGULAR_LAMBDA: below it the blocked path's numeric gradient is used.
_SINGULAR_LAMBDA = 1e-5


class DenseSmall:
    """objective(theta) and objective_and_gradient(theta) of a small ``ProfiledDeviance``, dense.

    Built from the problem's current blocks (its y rows included: a
    bootstrap replicate's copy gets its own); ``zz`` is ``Z'WZ``, dense
    (see :meth:`ProfiledDeviance.dense_evaluator`).  Holds one N x N work
    array for the factor, overwritten by each evaluation.
    """

    def __init__(self, problem, zz: np.ndarray):
        p, m0, p0 = problem.p, problem.m0, problem.p0
        q0 = m0 * p0
        q = zz.shape[0]
        N = q + p + 1
        A = np.empty((N, N))
        A[:q, :q] = zz
        AXz = A[q:, :q]
        AXz[:, :q0] = problem.AX0.reshape(p + 1, q0)
        if q > q0:
            AXz[:, q0:] = problem.rest.AXr
        A[:q, q:] = AXz.T
        A[q:, q:] = problem.AXX
        self.problem = problem
        self.q, self.p, self.N = q, p, N
        self.A_z = np.ascontiguousarray(A[:, :q])  # [Z X y]' W Z
        self.A_zrow = A[:q]  # Z' W [Z X y]
        # The factor's work array (Fortran order, factored in place): its upper
        # triangle stays zero (dpotrf's clean), its z block's diagonal is a view.
        self._K = np.zeros((N, N), order="F")
        self._K_zdiag = self._K.reshape(-1, order="F")[: q * (N + 1) : N + 1]
        self.AXX = np.array(problem.AXX)
        # y (nearly) fitted exactly: pwrss is then at rounding level, where the two
        # factorisations may disagree on whether it is positive; the blocked path decides.
        self._exact = _EXACT_PWRSS * float(problem.AXX[p, p])
        self._k = q + p if problem.reml else q  # leading block whose inverse gives G
        self._dof = problem._dof
        terms = problem.terms
        offsets = [0]
        for term in terms[:-1]:
            offsets.append(offsets[-1] + term.n_levels * term.n_columns)
        self._n_levels = problem._n_levels
        self.scalar = problem._all_scalar
        if self.scalar:
            self._offsets = np.array(offsets, dtype=np.intp)
            self._column_term = np.repeat(np.arange(len(terms)), [term.n_levels for term in terms])
            return
        # Per term: Lambda's entries (flat positions in the q x q matrix, and the
        # theta element of each), the flat positions of its diagonal blocks' lower
        # entries in G (Fortran order, k x k), and where its diagonal is in theta.
        positions, elements, self._terms, self._diag_theta = [], [], [], []
        k = self._k
        for term, offset, sl in zip(terms, offsets, problem.theta_slices):
            m, pt = term.n_levels, term.n_columns
            rows, cols = lower_triangle_colmajor(pt)
            start = np.arange(offset, offset + m * pt, pt)[:, None]
            positions.append(((start + rows) * q + (start + cols)).ravel())
            elements.append((np.zeros((m, 1), dtype=np.intp) + np.arange(sl.start, sl.stop)).ravel())
            blocks = ((start + rows) + (start + cols) * k).ravel()
            self._terms.append((sl, m, pt, offset, rows, cols, blocks, m * np.eye(pt)))
            self._diag_theta.extend(sl.start + j * pt - j * (j - 1) // 2 for j in range(pt))  # (j, j) in colmajor order
        self._lam_positions = np.concatenate(positions)
        self._lam_elements = np.concatenate(elements)

    # -- the factor ------------------------------------------------------------

    def _factor(self, theta: np.ndarray):
        """(L in Fortran order, Lambda or its diagonal), or (None, None) where K is not positive definite."""
        q, K = self.q, self._K
        if self.scalar:
            lam = theta[self._column_term]
            ZL = self.A_z * lam
            np.multiply(ZL[:q], lam[:, None], out=K[:q, :q])
        else:
            lam = np.zeros(q * q)
            lam[self._lam_positions] = theta[self._lam_elements]
            lam = lam.reshape(q, q)
            ZL = self.A_z @ lam
            np.matmul(lam.T, ZL[:q], out=K[:q, :q])
        self._K_zdiag += 1.0  # + I
        K[q:, :q] = ZL[q:]
        K[q:, q:] = self.AXX
        L, info = lapack.dpotrf(K, lower=1, clean=1, overwrite_a=1)
        if info != 0:
            return None, None
        return L, lam

    def _criterion(self, L: np.ndarray) -> tuple[float, float]:
        """(objective, pwrss) from the factor."""
        q, p = self.q, self.p
        logs = np.log(L.diagonal())
        ldL2 = 2.0 * float(logs[:q].sum())
        ldRX2 = 2.0 * float(logs[q : q + p].sum())
        pwrss = float(L[-1, -1] ** 2)
        value = self.problem.criterion(ldL2, ldRX2, pwrss)
        return value, pwrss

    def objective(self, theta: np.ndarray) -> float:
        """As :meth:`ProfiledDeviance.objective`."""
        theta = np.asarray(theta, dtype=np.float64)
        L, _ = self._factor(theta)
        if L is None:
            return np.inf
        value, pwrss = self._criterion(L)
        if pwrss <= self._exact:
            return self.problem.objective(theta)
        return value if np.isfinite(value) else np.inf

    def objective_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """As :meth:`ProfiledDeviance.objective_and_gradient`."""
        theta = np.asarray(theta, dtype=np.float64)
        values = theta.tolist()
        diagonal = values if self.scalar else [values[i] for i in self._diag_theta]
        if not all(abs(value) >= _SINGULAR_LAMBDA for value in diagonal):  # (NaN included)
            return self.problem.objective_and_gradient(theta)
        L, lam = self._factor(theta)
        if L is None:
            return np.inf, np.zeros_like(theta)
        value, pwrss = self._criterion(L)
        if pwrss <= self._exact:
            return self.problem.objective_and_gradient(theta)
        if not np.isfinite(value):
            return np.inf, np.zeros_like(theta)
        q, N, k = self.q, self.N, self._k
        # [u; beta] from L11' x = l21 (the penalised least-squares solution), then Z'W r at it
        x, info = lapack.dtrtrs(L[: N - 1, : N - 1], L[N - 1, : N - 1], lower=1, trans=1)
        if info != 0:
            return np.inf, np.zeros_like(theta)
        u = x[:q]
        v = np.empty(N)
        v[:q] = -(lam * u if self.scalar else lam @ u)
        v[q:-1] = -x[q:]
        v[-1] = 1.0
        R = self.A_zrow @ v
        # G: the inverse of the leading k x k block of K (lower triangle)
        G, info = lapack.dpotri(L[:k, :k], lower=1)
        if info != 0:
            return np.inf, np.zeros_like(theta)
        flat = G.reshape(-1, order="F")
        if self.scalar:
            offsets = self._offsets
            sums = np.add.reduceat(flat[: q * (k + 1) : k + 1], offsets)
            dpwrss = -2.0 * np.add.reduceat(R * u, offsets)
            return value, 2.0 * (self._n_levels - sums) / theta + self._dof * dpwrss / pwrss
        grad = np.empty_like(theta)
        scale = self._dof / pwrss
        for sl, m, pt, start, rows, cols, blocks, mI in self._terms:
            lower = flat[blocks].reshape(m, len(rows)).sum(axis=0)
            S = np.empty((pt, pt))
            S[rows, cols] = lower
            S[cols, rows] = lower
            dpwrss = -2.0 * (R[start : start + m * pt].reshape(m, pt).T @ u[start : start + m * pt].reshape(m, pt))
            lam_t = np.zeros((pt, pt))
            lam_t[rows, cols] = theta[sl]
            # d log det / d lambda = 2 [(m I - S) lambda^-1]' (deviance's docstring)
            dlogdet, info = lapack.dtrtrs(lam_t, (mI - S).T, lower=1, trans=1)
            if info != 0:
                return self.problem.objective_and_gradient(theta)
            grad[sl] = 2.0 * dlogdet[rows, cols] + scale * dpwrss[rows, cols]
        return value, grad
