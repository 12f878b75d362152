"""The profiled deviance and REML criterion of a linear mixed model.

This module is the numerical core.  It takes arrays (never the estimator) and
imports nothing from scikit-learn, so it can be checked against a dense
brute-force likelihood and reused by inference code.

Model and notation (Bates, Maechler, Bolker and Walker 2015, JSS 67(1))::

    y = X beta + Z b + e,   b = Lambda(theta) u,   u ~ N(0, sigma^2 I),
    e ~ N(0, sigma^2 W^-1),  W = diag(prior weights)

Symbol table

========  =================================================================
n, p      observations; fixed-effect columns (intercept included)
q         random effects in all: sum over terms of levels x term columns
theta     relative covariance parameters, lme4's order (terms sorted by
          number of levels, largest first; each term's lower triangle
          column by column)
Lambda    block-diagonal relative covariance factor, I_m (x) lambda_t
A         cross products of [Z X y], weighted: [Z X y]' W [Z X y].  Formed
          once (one pass over the data); depends on the data only.
L         lower Cholesky factor of the blocked matrix
          [[Lambda'Z'WZ Lambda + I, .], [X'WZ Lambda, X'WX]] bordered by the
          response row; depends on theta.
pwrss     penalised weighted residual sum of squares, L[y, y]^2
ldL2      log det(Lambda'Z'WZ Lambda + I)     (2 sum log diag L_zz)
ldRX2     log det(R_X'R_X)                     (2 sum log diag L_xx)
ldW       sum log w
========  =================================================================

Blocks.  The random-effects terms are split into the first term (the one with
most levels) and the rest.  The first term's diagonal block is block diagonal
(one p0 x p0 block per level) and so is its Cholesky factor; the rest are
held dense, where crossed factors fill in.  With the fixed-effects-plus-
response block ``X`` (columns of X, then y) the factor is::

        | L00              |        L00: (m0, p0, p0) block diagonal
    L = | Lr0   Lrr        |        Lr0: sparse (q_r x q0); Lrr: dense
        | LX0   LXr   LXX  |        LX0, LXr: dense; LXX: (p+1) x (p+1)

Every evaluation touches only these blocks, never the n rows, so its cost
does not depend on n.

Objective (lme4's scale)::

    ML:    ldL2 - ldW + n (1 + log(2 pi pwrss / n))
    REML:  ldL2 - ldW + ldRX2 + (n - p) (1 + log(2 pi pwrss / (n - p)))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from ._design import ReTerm, lower_triangle_colmajor

_LOG_2PI = np.log(2.0 * np.pi)


def _term_transpose_matrix(term: ReTerm) -> sp.csc_matrix:
    """Z_t' as a sparse (q_t x n) matrix, one column per observation.

    Row ``l * p + c`` of Z_t' holds column c of the term for level l.  It is
    built directly in CSC form (each observation has exactly p entries), so no
    sort is needed; it holds as many numbers as the term's data.
    """
    n = len(term.refs)
    p = term.n_columns
    z = term.z_values()
    indices = (term.refs[:, None] * p + np.arange(p)).ravel()
    indptr = np.arange(0, n * p + 1, p)
    return sp.csc_matrix((z.ravel(), indices, indptr), shape=(term.q, n))


def _block_diag_pattern(n_blocks: int, p: int, offset: int = 0):
    """CSR pattern of I_m (x) lambda for a lower-triangular p x p lambda.

    Returns (indptr, indices, positions) where ``positions`` are the
    (row, col) of lambda that each stored entry takes, so the data of the
    sparse matrix is ``lam[pos_r, pos_c]`` tiled over the blocks.
    """
    rows, cols = np.tril_indices(p)  # row-major within each block: CSR order
    per_block = len(rows)
    indices = (np.arange(n_blocks)[:, None] * p + cols[None, :]).ravel() + offset
    counts = np.tile(np.arange(1, p + 1), n_blocks)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return indptr, indices, (rows, cols), per_block


@dataclass
class Factorization:
    """The blocked Cholesky factor at one theta (see the module docstring).

    ``L00`` and ``M0`` have shape (m0, p0, p0); ``M0`` is ``lambda_0 L00^-T``
    per level.
    ``Lr0`` and ``Lrr`` are ``None`` when the model has at most one term.
    """

    theta: np.ndarray
    L00: np.ndarray | None
    M0: np.ndarray | None
    Lr0: sp.csr_matrix | None
    Lrr: np.ndarray | None
    LX0: np.ndarray | None
    LXr: np.ndarray | None
    LXX: np.ndarray


class ProfiledDeviance:
    """Cross products of a linear mixed model and its profiled objective.

    Parameters
    ----------
    terms : list of ReTerm
        Random-effects terms, in lme4's order (most levels first).  May be
        empty: the model is then a weighted linear regression.
    X : ndarray of shape (n, p)
        Fixed-effects model matrix, intercept column included, full rank.
    y : ndarray of shape (n,)
    weights : ndarray of shape (n,) or None
        Positive prior weights.
    reml : bool
        Minimise the REML criterion (True) or the deviance (False).

    Notes
    -----
    The constructor is the only pass over the n rows.  ``factorize(theta)``
    costs O(size of L) and ``objective(theta)`` reads the criterion off the
    factor.  Nothing keeps a reference to X or y.
    """

    def __init__(self, terms: list[ReTerm], X: np.ndarray, y: np.ndarray, weights: np.ndarray | None, reml: bool):
        n, p = X.shape
        self.n, self.p, self.reml = n, p, bool(reml)
        self.terms = terms
        self.ldW = 0.0 if weights is None else float(np.sum(np.log(weights)))
        self.theta_slices = []
        start = 0
        for term in terms:
            self.theta_slices.append(slice(start, start + term.n_theta))
            start += term.n_theta
        self.n_theta = start

        XY = np.empty((n, p + 1))
        XY[:, :p] = X
        XY[:, p] = y
        WXY = XY if weights is None else XY * weights[:, None]
        # A_XX = [X y]' W [X y]: depends on the data only.
        self.AXX = XY.T @ WXY
        self.AXX = (self.AXX + self.AXX.T) / 2.0

        self.m0 = self.p0 = 0
        self.q_rest = 0
        if not terms:
            return

        first, rest = terms[0], terms[1:]
        self.m0, self.p0 = first.n_levels, first.n_columns
        Zt0 = _term_transpose_matrix(first)
        # A_00 = Z_0' W Z_0, block diagonal: (m0, p0, p0).
        z0 = first.z_values()
        wz0 = z0 if weights is None else z0 * weights[:, None]
        A00 = np.empty((self.m0, self.p0, self.p0))
        for c in range(self.p0):
            for d in range(c + 1):
                A00[:, c, d] = A00[:, d, c] = np.bincount(first.refs, weights=wz0[:, c] * z0[:, d], minlength=self.m0)
        self.A00 = A00
        # A_X0 = [X y]' W Z_0, held as (p+1, m0, p0).
        self.AX0 = np.asarray((Zt0 @ WXY).T).reshape(p + 1, self.m0, self.p0)

        if not rest:
            return
        # The rest: every other term, stacked; offsets of each term inside it.
        Zt_rest = sp.vstack([_term_transpose_matrix(t) for t in rest], format="csr")
        self.q_rest = Zt_rest.shape[0]
        W_Zt0T = Zt0.T.tocsr() if weights is None else sp.csr_matrix(Zt0.T.multiply(weights[:, None]))
        # A_r0 = Z_r' W Z_0 (sparse), A_rr = Z_r' W Z_r (dense), A_Xr = [X y]' W Z_r.
        self.Ar0 = (Zt_rest @ W_Zt0T).tocsr()
        self.Ar0.sum_duplicates()
        Zt_rest_w = Zt_rest if weights is None else Zt_rest.multiply(weights[None, :]).tocsr()
        self.Arr = np.asarray((Zt_rest_w @ Zt_rest.T).toarray())
        self.AXr = np.asarray((Zt_rest @ WXY).T)

        # Sparse pattern of Lambda_r' (upper block-triangular transpose of
        # the block-diagonal Lambda_r) and of blockdiag(M0); data set per theta.
        patterns = []
        offset = 0
        for term in rest:
            patterns.append(_block_diag_pattern(term.n_levels, term.n_columns, offset))
            offset += term.q
        self._lambda_rest_patterns = patterns

    # -- theta -> Lambda ------------------------------------------------------

    def lambdas(self, theta: np.ndarray) -> list[np.ndarray]:
        """Each term's p x p lower-triangular factor at theta."""
        return [term.lambda_from(theta[s]) for term, s in zip(self.terms, self.theta_slices)]

    def lower_bounds(self) -> np.ndarray:
        """Lower bounds of theta: 0 on lambda's diagonal, -inf elsewhere."""
        bounds = []
        for term in self.terms:
            rows, cols = lower_triangle_colmajor(term.n_columns)
            bounds.append(np.where(rows == cols, 0.0, -np.inf))
        return np.concatenate(bounds) if bounds else np.empty(0)

    def initial_theta(self) -> np.ndarray:
        """lme4's starting value: identity lambda for every term."""
        bounds = self.lower_bounds()
        return np.where(bounds == 0.0, 1.0, 0.0)

    def _lambda_rest(self, lams: list[np.ndarray]) -> sp.csr_matrix:
        """Block-diagonal Lambda_r of the rest terms as a sparse matrix."""
        data, indices, indptr_parts = [], [], []
        nnz = 0
        for (indptr, idx, (r, c), per_block), lam, term in zip(self._lambda_rest_patterns, lams[1:], self.terms[1:]):
            data.append(np.tile(lam[r, c], term.n_levels))
            indices.append(idx)
            indptr_parts.append(indptr[1:] + nnz)
            nnz += len(idx)
        indptr = np.concatenate([[0], *indptr_parts])
        return sp.csr_matrix((np.concatenate(data), np.concatenate(indices), indptr), shape=(self.q_rest, self.q_rest))

    # -- the blocked Cholesky factor -------------------------------------------

    def factorize(self, theta: np.ndarray) -> Factorization:
        """Blocked Cholesky factor L at theta.

        Raises
        ------
        numpy.linalg.LinAlgError
            If a diagonal block is not positive definite (only possible for
            the fixed-effects block, when y is fitted exactly).
        """
        theta = np.asarray(theta, dtype=np.float64)
        p = self.p
        if not self.terms:
            LXX = scipy.linalg.cholesky(self.AXX, lower=True, check_finite=False)
            return Factorization(theta, None, None, None, None, None, None, LXX)

        lams = self.lambdas(theta)
        lam0 = lams[0]
        # L00 L00' = lambda0' A00 lambda0 + I, level by level; M0 = lambda0 L00^-T.
        if self.p0 == 1:  # scalar blocks: (m0, 1, 1) arrays, no batched factorisation
            l0 = lam0[0, 0]
            L00 = np.sqrt(l0 * l0 * self.A00 + 1.0)
            M0 = l0 / L00
        else:
            B00 = np.einsum("ji,ljk,km->lim", lam0, self.A00, lam0, optimize=True)
            B00 += np.eye(self.p0)
            L00 = np.linalg.cholesky(B00)
            M0 = np.swapaxes(np.linalg.solve(L00, np.broadcast_to(lam0.T, L00.shape)), 1, 2)
        # L_X0 = A_X0 Lambda0 L00^-T.
        LX0 = np.einsum("jlc,lcd->jld", self.AX0, M0, optimize=True).reshape(p + 1, self.m0 * self.p0)
        S = self.AXX - LX0 @ LX0.T

        Lr0 = Lrr = LXr = None
        if self.q_rest:
            lam_r = self._lambda_rest(lams)
            lam_rT = lam_r.T.tocsr()
            M0_block = self._block_diag_from(M0)
            # L_r0 = Lambda_r' A_r0 Lambda_0 L00^-T
            Lr0 = (lam_rT @ self.Ar0 @ M0_block).tocsr()
            # L_rr L_rr' = Lambda_r' A_rr Lambda_r + I - L_r0 L_r0'
            Brr = np.asarray(lam_rT @ np.asarray(lam_rT @ self.Arr).T)
            Brr -= np.asarray((Lr0 @ Lr0.T).toarray())
            Brr[np.diag_indices_from(Brr)] += 1.0
            Lrr = scipy.linalg.cholesky(Brr, lower=True, check_finite=False, overwrite_a=True)
            # L_Xr L_rr' = A_Xr Lambda_r - L_X0 L_r0'
            CXr = np.asarray(lam_rT @ self.AXr.T).T - np.asarray(Lr0 @ LX0.T).T
            LXr = scipy.linalg.solve_triangular(Lrr, CXr.T, lower=True, check_finite=False).T
            S -= LXr @ LXr.T
        LXX = scipy.linalg.cholesky(S, lower=True, check_finite=False)
        return Factorization(theta, L00, M0, Lr0, Lrr, LX0, LXr, LXX)

    def _block_diag_from(self, M0: np.ndarray) -> sp.csr_matrix:
        """blockdiag(M0) as a sparse q0 x q0 matrix (M0 is (m0,) or (m0, p0, p0))."""
        if self.p0 == 1:
            return sp.diags(np.ravel(M0), format="csr")
        m, p = self.m0, self.p0
        indptr = np.arange(0, m * p * p + 1, p)
        indices = (np.arange(m)[:, None, None] * p + np.zeros((1, p, 1), dtype=int) + np.arange(p)[None, None, :]).ravel()
        return sp.csr_matrix((M0.ravel(), indices, indptr), shape=(m * p, m * p))

    # -- the objective -----------------------------------------------------------

    def log_determinants(self, fac: Factorization) -> tuple[float, float, float]:
        """(ldL2, ldRX2, pwrss) read off the factor."""
        p = self.p
        ldL2 = 0.0
        if fac.L00 is not None:
            ldL2 += 2.0 * float(np.sum(np.log(np.diagonal(fac.L00, axis1=1, axis2=2))))
        if fac.Lrr is not None:
            ldL2 += 2.0 * float(np.sum(np.log(np.diag(fac.Lrr))))
        dX = np.diag(fac.LXX)
        ldRX2 = 2.0 * float(np.sum(np.log(dX[:p])))
        pwrss = float(dX[p] ** 2)
        return ldL2, ldRX2, pwrss

    def criterion(self, ldL2: float, ldRX2: float, pwrss: float, reml: bool | None = None) -> float:
        """The objective from the log determinants (lme4's scale)."""
        reml = self.reml if reml is None else reml
        if reml:
            nmp = self.n - self.p
            return ldL2 - self.ldW + ldRX2 + nmp * (1.0 + _LOG_2PI + np.log(pwrss / nmp))
        return ldL2 - self.ldW + self.n * (1.0 + _LOG_2PI + np.log(pwrss / self.n))

    def objective(self, theta: np.ndarray) -> float:
        """The profiled deviance (ML) or REML criterion at theta.

        Returns ``inf`` where the factorization fails, so that optimisers
        step away from such points.
        """
        try:
            fac = self.factorize(theta)
        except np.linalg.LinAlgError:
            return np.inf
        value = self.criterion(*self.log_determinants(fac))
        return value if np.isfinite(value) else np.inf

    # -- estimates at a theta ----------------------------------------------------

    def solve(self, fac: Factorization) -> tuple[np.ndarray, list[np.ndarray]]:
        """Fixed effects beta and each term's random effects b at the factor's theta.

        Returns
        -------
        beta : ndarray of shape (p,)
        b : list of ndarray, one (n_levels, n_columns) array per term
        """
        p = self.p
        LXX = fac.LXX
        beta = scipy.linalg.solve_triangular(LXX[:p, :p].T, LXX[p, :p], lower=False, check_finite=False)
        if not self.terms:
            return beta, []
        lams = self.lambdas(fac.theta)
        # L_zz' u = l_yz' - L_Xz' beta, solved block by block from the bottom.
        rhs0 = fac.LX0[p] - fac.LX0[:p].T @ beta
        u_parts = []
        if self.q_rest:
            rhs_r = fac.LXr[p] - fac.LXr[:p].T @ beta
            u_r = scipy.linalg.solve_triangular(fac.Lrr.T, rhs_r, lower=False, check_finite=False)
            rhs0 = rhs0 - fac.Lr0.T @ u_r
        rhs0 = rhs0.reshape(self.m0, self.p0)
        if self.p0 == 1:
            u0 = rhs0 / fac.L00[:, 0, :]
        else:
            u0 = np.linalg.solve(np.swapaxes(fac.L00, 1, 2), rhs0[:, :, None])[:, :, 0]
        u_parts.append(u0)
        if self.q_rest:
            offset = 0
            for term in self.terms[1:]:
                u_parts.append(u_r[offset : offset + term.q].reshape(term.n_levels, term.n_columns))
                offset += term.q
        # b = Lambda u, level by level: b_l = lambda_t u_l.
        b = [u @ lam.T for u, lam in zip(u_parts, lams)]
        return beta, b

    def sigma(self, pwrss: float) -> float:
        """Residual standard deviation from pwrss (lme4's sigma)."""
        dof = self.n - self.p if self.reml else self.n
        return float(np.sqrt(pwrss / dof))

    def fixed_effects_cov(self, fac: Factorization, sigma: float) -> np.ndarray:
        """sigma^2 (R_X' R_X)^-1, lme4's ``vcov``."""
        p = self.p
        RXinv = scipy.linalg.solve_triangular(fac.LXX[:p, :p], np.eye(p), lower=True, check_finite=False)
        return sigma**2 * (RXinv.T @ RXinv)
