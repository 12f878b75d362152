"""The profiled deviance and REML criterion of a linear mixed model, and their gradient.

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
theta     relative covariance parameters, lme4's order (see _design); each
          term's lower triangle column by column
lambda_t  term t's p_t x p_t lower-triangular factor; Lambda = blockdiag
          over terms of I_{m_t} (x) lambda_t
A         cross products of [Z X y], weighted: [Z X y]' W [Z X y].  Formed
          once (one pass over the data); depends on the data only.
M         Lambda' Z'WZ Lambda + I  (q x q), the random-effects block
L         lower Cholesky factor of [[M, .], [X'WZ Lambda, X'WX]] bordered by
          the response row; depends on theta.
pwrss     penalised weighted residual sum of squares, L[y, y]^2
ldL2      log det M                            (2 sum log diag L_zz)
ldRX2     log det(R_X'R_X)                     (2 sum log diag L_xx)
ldW       sum log w
========  =================================================================

Blocks.  The random-effects terms are split into the first term (the one with
most levels) and the rest.  The first term's diagonal block is block diagonal
(one p0 x p0 block per level) and so is its Cholesky factor; the rest are
held dense, where crossed factors fill in.  With the fixed-effects-plus-
response block ``X`` (columns of X, then y) the factor is::

        | L00              |        L00: (m0, p0, p0) block diagonal
    L = | Lr0   Lrr        |        Lr0 = Lambda_r' A_r0 M0 (never formed
        | LX0   LXr   LXX  |        while optimising); Lrr: dense

where ``M0 = lambda_0 L00^-T`` per level.  The products the update needs are
taken in "A-space": with ``W0 = M0 M0'`` per level,

    Lrr Lrr' = Lambda_r' (A_rr - A_r0 W0 A_0r) Lambda_r + I
    LXr Lrr' = (A_Xr - A_X0 W0 A_0r) Lambda_r
    LXX LXX' = A_XX - LX0 LX0' - LXr LXr'

(A_r0 W0 A_0r by :mod:`sklmm._crossblock`), so an evaluation touches these
blocks only: its cost does not depend on n.  The per-level blocks of L00
(and of a nested rest term) are factored, inverted and solved with the
closed-form kernels of :mod:`sklmm._engine.smallblocks` (p <= 3), never with
batched ``numpy.linalg`` calls.

Objective (lme4's scale)::

    ML:    ldL2 - ldW + n (1 + log(2 pi pwrss / n))
    REML:  ldL2 - ldW + ldRX2 + (n - p) (1 + log(2 pi pwrss / (n - p)))

Gradient.  With G the inverse of the z-block (ML: M^-1) or of the whole
[z X] block (REML: its zz part), and S_t the sum over term t's levels of the
diagonal p_t x p_t blocks of G,

    d(log det)/d lambda_t[i, j] = 2 [(m_t I - S_t) lambda_t^-1]_{j, i}

because (G Lambda' A_zz + G_zX A_Xz) Lambda = I - G_zz.  By the envelope
theorem d pwrss / d lambda_t[i, j] = -2 sum_l (Z'W r)_{l,i} u_{l,j}, with r
the penalised residual.  Where lambda_t is singular (a boundary fit) the
term's derivatives are taken by finite differences instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack

from . import smallblocks, smalldense
from .blocks import CrossProducts, form_blocks, nested_parent
from .rest import _cholesky, make_rest
from .._model.terms import ReTerm, lower_triangle_colmajor

_LOG_2PI = np.log(2.0 * np.pi)
#: Below this, a diagonal element of lambda makes the analytic gradient
#: ill-conditioned; the term's derivatives are then taken numerically.
_SINGULAR_LAMBDA = 1e-5


@dataclass
class Factorization:
    """The blocked Cholesky factor at one theta (see the module docstring).

    ``L00`` and ``M0`` have shape (m0, p0, p0) (``M0`` is None for a model
    with one term whose blocks are p0 x p0, p0 > 1: only the rest terms read it); ``LX0`` is (p+1, q0);
    ``Lrr`` and ``LXr`` are ``None`` when the model has at most one term.
    """

    theta: np.ndarray
    lams: list
    L00: np.ndarray | None
    M0: np.ndarray | None
    LX0: np.ndarray | None
    Lrr: np.ndarray | None
    LXr: np.ndarray | None
    LXX: np.ndarray
    #: L00's inverse, (m0, p0, p0) lower triangular, when p0 > 1 (else None).
    L00inv: np.ndarray | None = None


@dataclass
class Estimates:
    """What a fit reports at one theta, read off its factor: :meth:`ProfiledDeviance.estimates`.

    ``beta`` has the intercept's ``y_offset`` restored (as :meth:`ProfiledDeviance.solve`);
    ``b`` holds each term's random effects, (n_levels, n_columns); ``LXX`` is the
    factor's small (p+1)-square block, all :meth:`ProfiledDeviance.fixed_effects_cov` reads.
    """

    theta: np.ndarray
    ldL2: float
    ldRX2: float
    pwrss: float
    beta: np.ndarray
    b: list
    LXX: np.ndarray


def _solve_lower_transposed(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x with L' x = b for a lower-triangular L (LAPACK dtrtrs, no checks)."""
    if L.shape[0] == 0:
        return np.array(b, dtype=np.float64)
    x, info = lapack.dtrtrs(L, b, lower=1, trans=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"singular triangular factor (dtrtrs info {info})")
    return x


def _solve_lower(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x with L x = b for a lower-triangular L (LAPACK dtrtrs, no checks)."""
    if L.shape[0] == 0:
        return np.array(b, dtype=np.float64)
    x, info = lapack.dtrtrs(L, b, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"singular triangular factor (dtrtrs info {info})")
    return x


def _lambda_transpose_map(lam: np.ndarray) -> np.ndarray:
    """K with vec(lam X_l') = vec(X_l) K for p x p blocks flattened row by row.

    ``(lam X')[i, d] = sum_j lam[i, j] X[d, j]``, so ``K[(d', j), (i, d)] =
    [d' = d] lam[i, j]``: M0 = lam0 L00^-T per level is one matrix product.
    """
    p = lam.shape[0]
    K = np.zeros((p, p, p, p))
    for d in range(p):
        K[d, :, :, d] = lam.T
    return K.reshape(p * p, p * p)


class ProfiledDeviance:
    """Cross products of a linear mixed model, its profiled objective and gradient.

    Parameters
    ----------
    terms : list of ReTerm
        Random-effects terms, in lme4's order (most levels first).  May be
        empty: the model is then a weighted linear regression.
    XY : ndarray of shape (n, p + 1)
        ``[X y]``: the fixed-effects model matrix (intercept column first,
        full rank) and the response, in one array (read, not copied or kept).
    weights : ndarray of shape (n,) or None
        Positive prior weights.
    reml : bool
        Minimise the REML criterion (True) or the deviance (False).
    y_offset : float, default=0.0
        The y column is ``y - y_offset`` (centred; see ``_fit.prepare``);
        :meth:`solve` and :meth:`fixed_effects` add it back to the intercept.

    Notes
    -----
    The constructor is the only pass over the n rows: it forms the blocks
    (:func:`sklmm._engine.blocks.form_blocks`) and builds the criterion from
    them, as :meth:`from_blocks` does for blocks summed over the partitions
    of a distributed collection (:mod:`sklmm._dask`).  ``factorize(theta)``
    costs O(size of L), ``objective(theta)`` reads the criterion off the
    factor and ``gradient(theta)`` adds about one more factorisation's work.
    Nothing keeps a reference to XY or the term's per-row arrays.
    """

    def __init__(self, terms: list[ReTerm], XY: np.ndarray, weights: np.ndarray | None, reml: bool, y_offset: float = 0.0):
        # The one pass over the n rows: every cross product the objective needs.
        self._set_blocks(terms, form_blocks(terms, XY, weights), reml, y_offset)

    @classmethod
    def from_blocks(cls, terms: list[ReTerm], blocks: CrossProducts, reml: bool, y_offset: float = 0.0, rest=None) -> ProfiledDeviance:
        """The criterion from cross products already formed (and summed over partitions).

        Parameters
        ----------
        terms : list of ReTerm
            The terms the blocks were formed with; only their levels, columns
            and names are read (``refs`` may be empty).
        blocks : CrossProducts
            :func:`sklmm._engine.blocks.form_blocks` of all rows, or the sum
            of its results over disjoint subsets of them.
        reml, y_offset
            As in the constructor.
        rest : DenseRest or NestedRest, optional
            The rest terms' structure already holding these blocks' values
            (:mod:`sklmm._engine.reweight`, which keeps one structure for
            the many weights of a PIRLS fit); ``blocks`` then need not carry
            the rest blocks.
        """
        problem = cls.__new__(cls)
        problem._set_blocks(terms, blocks, reml, y_offset, rest)
        return problem

    def _set_blocks(self, terms: list[ReTerm], blocks: CrossProducts, reml: bool, y_offset: float, rest=None) -> None:
        """Sets: every attribute; the rest terms' structure is chosen here, from the global pattern."""
        self.n, self.p, self.reml = blocks.n, blocks.AXX.shape[0] - 1, bool(reml)
        self.y_offset = float(y_offset)
        self.terms = terms
        self.ldW = blocks.sum_log_weights
        self.theta_slices = []
        start = 0
        for term in terms:
            self.theta_slices.append(slice(start, start + term.n_theta))
            start += term.n_theta
        self.n_theta = start
        # Read at every evaluation: each term's levels and whether it is scalar
        # (then lambda_t is theta_t itself), and the residual degrees of freedom.
        self._n_levels = np.array([term.n_levels for term in terms], dtype=np.float64)
        self._all_scalar = all(term.n_columns == 1 for term in terms)
        self._dof = (self.n - self.p) if self.reml else self.n
        bounds = []
        for term in terms:
            rows, cols = lower_triangle_colmajor(term.n_columns)
            bounds.append(np.where(rows == cols, 0.0, -np.inf))
        self._lower = np.concatenate(bounds) if bounds else np.empty(0)
        # A_XX = [X y]' W [X y]: depends on the data only.
        self.AXX = blocks.AXX

        self.m0 = self.p0 = 0
        self.q_rest = 0
        self.rest_layout: list[tuple[int, int, int]] = []  # (offset, m_t, p_t) per rest term
        if not terms:
            return
        self.m0, self.p0 = terms[0].n_levels, terms[0].n_columns
        # A_00 = Z_0' W Z_0, block diagonal (m0, p0, p0); A_X0 = [X y]' W Z_0 as (p+1, m0, p0).
        self.A00 = blocks.A00
        self.AX0 = blocks.AX0
        q_all = sum(term.n_levels * term.n_columns for term in terms)
        if len(terms) == 1:
            self._rest_zz = () if q_all <= smalldense.MAX_RANDOM_EFFECTS else None
            return
        # A small model's rest blocks also dense, for its dense evaluator (dense_evaluator).
        small = q_all <= smalldense.MAX_RANDOM_EFFECTS and blocks.Ar0 is not None and blocks.Arr is not None
        self._rest_zz = (blocks.Ar0.toarray(), blocks.Arr.toarray()) if small else None
        # The rest: every other term, stacked; dense or block-diagonal (_rest).
        if rest is None:
            rest = make_rest(terms[1:], blocks.Ar0, blocks.Arr, blocks.AXr, nested_parent(blocks.parent_range), self.m0, self.p0)
        self.rest = rest
        self.q_rest = self.rest.q
        self.rest_layout = self.rest.layout
        # Every term a scalar (p_t = 1; crossed or nested intercepts): the
        # gradient's general algebra fused into one pass (_scalar_terms_gradient).
        if self._all_scalar:
            # rest column -> its term (1-based over all terms), to spread lambda's diagonal
            self._rest_term = np.repeat(np.arange(1, len(terms)), [term.n_levels for term in terms[1:]])
            self._rest_index = self._rest_term - 1  # the same over the rest terms only

    def dense_evaluator(self) -> smalldense.DenseSmall | None:
        """The criterion of a small model by one dense factor (:mod:`sklmm._engine.smalldense`), else None.

        Built from the problem's blocks as they are now (a bootstrap
        replicate's copy, whose y rows differ, gets its own); None for a
        model with more than ``smalldense.MAX_RANDOM_EFFECTS`` random
        effects or one whose rest blocks were not formed here (a reweighted
        GLMM step given its rest structure).
        """
        rest_zz = getattr(self, "_rest_zz", None)
        if not self.terms or rest_zz is None:
            return None
        m0, p0 = self.m0, self.p0
        q0 = m0 * p0
        q = q0 + self.q_rest
        zz = np.zeros((q, q))
        if p0 == 1:
            zz.reshape(-1)[: q0 * (q + 1) : q + 1] = self.A00.reshape(-1)
        else:
            start = np.arange(m0)[:, None, None] * p0
            zz[start + np.arange(p0)[None, :, None], start + np.arange(p0)[None, None, :]] = self.A00
        if rest_zz:
            Ar0, Arr = rest_zz
            zz[q0:, :q0] = Ar0
            zz[:q0, q0:] = Ar0.T
            zz[q0:, q0:] = Arr
        return smalldense.DenseSmall(self, zz)

    # -- theta -> Lambda ------------------------------------------------------

    def lambdas(self, theta: np.ndarray) -> list[np.ndarray]:
        """Each term's p x p lower-triangular factor at theta."""
        if self._all_scalar:
            return [value.reshape(1, 1) for value in np.array(theta, dtype=np.float64)]
        return [term.lambda_from(theta[s]) for term, s in zip(self.terms, self.theta_slices)]

    def lower_bounds(self) -> np.ndarray:
        """Lower bounds of theta: 0 on lambda's diagonal, -inf elsewhere."""
        return self._lower.copy()

    def theta_scales(self) -> np.ndarray:
        """A natural unit for each element of theta, from the data's scale.

        Element (i, j) of lambda_t multiplies term column i of Z, whose
        weighted root-mean-square over the rows is s_i = sqrt(sum w z_i^2 / n):
        theta / (1 / s_i) is then on the same footing whatever the units of
        that column or the scale of the weights (a slope on a covariate in
        micro-units, weights of 1e-8).  The optimiser works in these units.
        """
        scales = []
        for t, term in enumerate(self.terms):
            if t == 0:
                mean_square = np.einsum("lcc->c", self.A00) / self.n
            else:
                mean_square = self.rest.column_mean_squares(t - 1, self.n)
            rms = np.sqrt(mean_square)
            rows, _ = lower_triangle_colmajor(term.n_columns)
            with np.errstate(divide="ignore"):
                unit = np.where(rms[rows] > 0, 1.0 / rms[rows], 1.0)
            scales.append(np.where(np.isfinite(unit), unit, 1.0))
        return np.concatenate(scales) if scales else np.empty(0)

    def column_partners(self) -> dict[int, list[int]]:
        """For each diagonal element of theta, the elements below it in lambda's column.

        With lambda_t[i, i] = 0 the objective does not depend on the signs of
        lambda_t[j, i], j > i; they decide whether moving lambda_t[i, i] off
        zero helps, so the optimiser's boundary probe tries both signs.
        """
        partners = {}
        for term, sl in zip(self.terms, self.theta_slices):
            rows, cols = lower_triangle_colmajor(term.n_columns)
            for k in np.flatnonzero(rows == cols):
                partners[sl.start + int(k)] = [sl.start + int(j) for j in np.flatnonzero((cols == cols[k]) & (rows > rows[k]))]
        return partners

    def initial_theta(self) -> np.ndarray:
        """lme4's starting value: identity lambda for every term."""
        bounds = self.lower_bounds()
        return np.where(bounds == 0.0, 1.0, 0.0)

    def moment_theta(self) -> np.ndarray | None:
        """A second starting value from one-way analyses of variance, for scalar terms; else None.

        For each term on its own, the between-level mean square of the
        least-squares residuals against the within-level one (the ANOVA
        estimator of a one-way random intercept, in A-space: level counts and
        residual sums are rows of A), then theta_t = sqrt(sigma_t^2 /
        sigma^2) with sigma^2 what the terms leave of the residual variance.
        Each estimate ignores the other terms, so it is a guess: the
        optimiser starts from it only where its objective beats lme4's start
        (see :func:`sklmm._engine.fit.optimize`).  None unless the model has
        two or more terms, all scalar.
        """
        anovas = self._one_way_anovas()
        return None if anovas is None else anovas[0]

    def moment_units(self, anovas=None) -> np.ndarray | None:
        """Natural units of theta at the moment start, from each term's one-way analysis of variance.

        For a balanced one-way random intercept with m levels of k
        observations, the profiled criterion's curvature in theta at its
        optimum is about 4 (m - 1) (k theta)^2 / (1 + k theta^2)^2, so one
        unit ``(1 + k theta^2) / (2 k theta sqrt(m - 1))`` moves it by about
        one: the optimiser working in these units meets a Hessian near the
        identity (InstEval: 1/250, 1/140 and 1/100 of theta's own units, and
        9 or 10 evaluations instead of 13).  Evaluated at
        :meth:`moment_theta`; None where that is None.  A guide for the
        optimiser's steps only (see :func:`sklmm._engine.fit.optimize`).
        ``anovas``: :meth:`_one_way_anovas` if already computed.
        """
        anovas = self._one_way_anovas() if anovas is None else anovas
        if anovas is None:
            return None
        theta, levels, per_level = anovas
        k_theta = per_level * theta
        with np.errstate(divide="ignore", invalid="ignore"):
            units = (1.0 + k_theta * theta) / (2.0 * k_theta * np.sqrt(levels - 1.0))
        return np.where(np.isfinite(units) & (units > 0), units, np.inf)

    def _one_way_anovas(self):
        """(moment theta, levels, observations per level) per term, or None (see :meth:`moment_theta`)."""
        if len(self.terms) < 2 or not self._all_scalar:
            return None
        p, n = self.p, self.n
        try:
            factor = np.linalg.cholesky(self.AXX)
        except np.linalg.LinAlgError:
            return None
        rss = factor[p, p] ** 2
        beta = _solve_lower_transposed(factor[:p, :p], factor[p, :p])
        counts = [self.A00.reshape(-1)]
        sums = [self.AX0[p].reshape(-1) - beta @ self.AX0[:p].reshape(p, -1)]
        rest_counts = self.rest.Arr.diagonal() if hasattr(self.rest, "Arr") else self.rest.A.reshape(-1)
        rest_sums = self.rest.AXr[p] - beta @ self.rest.AXr[:p]
        for offset, m, _ in self.rest_layout:
            counts.append(rest_counts[offset : offset + m])
            sums.append(rest_sums[offset : offset + m])
        variances = np.empty(len(counts))
        levels = np.array([len(count) for count in counts], dtype=np.float64)
        per_level = np.zeros(len(counts))
        for t, (count, total) in enumerate(zip(counts, sums)):
            m = len(count)
            between = float(np.sum(total * total / count))
            within = (rss - between) / max(n - m, 1)
            n_per_level = (n - float(np.sum(count * count)) / n) / (m - 1)
            variances[t] = max(between / (m - 1) - within, 0.0) / n_per_level if n_per_level > 0 else 0.0
            per_level[t] = n_per_level
        residual = max(rss / n - variances.sum(), 1e-3 * rss / n)
        theta = np.sqrt(np.maximum(variances / residual, 1e-4))
        return (theta, levels, per_level) if np.all(np.isfinite(theta)) else None

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
            return Factorization(theta, [], None, None, None, None, None, _cholesky(self.AXX.copy()))

        lams = self.lambdas(theta)
        lam0 = lams[0]
        m0, p0 = self.m0, self.p0
        L00inv = None
        # L00 L00' = lambda0' A00 lambda0 + I, level by level; M0 = lambda0 L00^-T.
        # Closed-form kernels per block (smallblocks), no batched LAPACK calls.
        if p0 == 1:  # scalar blocks: (m0, 1, 1) arrays
            l0 = lam0[0, 0]
            L00 = np.sqrt(l0 * l0 * self.A00 + 1.0)
            M0 = l0 / L00
            # L_X0 = A_X0 Lambda0 L00^-T.
            LX0 = self.AX0.reshape(p + 1, m0) * M0.reshape(m0)
        else:
            B00 = smallblocks.congruence(lam0, self.A00)
            B00.reshape(m0, p0 * p0)[:, :: p0 + 1] += 1.0
            L00 = smallblocks.cholesky(B00)
            L00inv = smallblocks.inv_lower(L00)
            # M0 is read by the rest terms' blocks only (W0 = M0 M0', L_r0 = Lambda_r' A_r0 M0)
            M0 = (L00inv.reshape(m0, p0 * p0) @ _lambda_transpose_map(lam0)).reshape(m0, p0, p0) if self.q_rest else None
            # L_X0 = (A_X0 Lambda0) L00^-T: a product with the constant lambda0,
            # then forward substitution per level.
            V = (self.AX0.reshape(-1, p0) @ lam0).reshape(p + 1, m0, p0)
            LX0 = smallblocks.solve_lower(L00, V.transpose(1, 2, 0)).transpose(2, 0, 1).reshape(p + 1, m0 * p0)
        S = self.AXX - LX0 @ LX0.T

        Lrr = LXr = None
        if self.q_rest:
            if p0 == 1:
                W0 = M0 * M0
                W0AX0 = (self.AX0.reshape(p + 1, m0) * W0.reshape(m0)).T
            else:
                W0 = smallblocks.matmul(M0, np.swapaxes(M0, 1, 2))
                W0AX0 = smallblocks.matmul(W0, self.AX0.transpose(1, 2, 0)).reshape(m0 * p0, p + 1)
            Lrr, LXr = self.rest.factor(lams[1:], W0, W0AX0)
            S -= LXr @ LXr.T
        return Factorization(theta, lams, L00, M0, LX0, Lrr, LXr, _cholesky(S), L00inv)

    def last_factorization(self, theta: np.ndarray) -> Factorization:
        """The factor at theta: the one the last :meth:`objective_and_gradient` made when it
        was at this theta, else a new one.

        Only for a caller that has not changed the problem's blocks since
        (the fit right after its optimiser); code that edits the blocks in
        place (PIRLS, batched refits) calls :meth:`factorize`.
        """
        fac = getattr(self, "_last_factorization", None)
        if fac is not None and np.array_equal(fac.theta, theta):
            return fac
        return self.factorize(theta)

    def estimates(self, theta: np.ndarray) -> Estimates:
        """The log determinants, beta and b at theta, for the fit right after its optimiser.

        Read from the last :meth:`objective_and_gradient`'s factor when it was at
        this theta; where the gradient consumes the factor (a packed rest block
        inverted in place), that evaluation kept these before inverting, so the
        optimum is never factored twice (at ml-latest's shape a factorisation is
        about 1,000 s).  Else a new factor.  The same caveat as
        :meth:`last_factorization`: the blocks must not have changed since.
        """
        kept = getattr(self, "_last_estimates", None)
        if kept is not None and np.array_equal(kept.theta, theta):
            return kept
        return self._estimates_from(self.last_factorization(theta))

    def _estimates_from(self, fac: Factorization, determinants: tuple[float, float, float] | None = None) -> Estimates:
        ldL2, ldRX2, pwrss = self.log_determinants(fac) if determinants is None else determinants
        beta, b = self.solve(fac)
        return Estimates(np.array(fac.theta, dtype=np.float64), ldL2, ldRX2, pwrss, beta, b, fac.LXX)

    def forget(self) -> None:
        """Drop the factor and estimates kept from the last evaluation (after editing the blocks)."""
        self._last_factorization = None
        self._last_estimates = None

    # -- the objective -----------------------------------------------------------

    def log_determinants(self, fac: Factorization) -> tuple[float, float, float]:
        """(ldL2, ldRX2, pwrss) read off the factor."""
        p = self.p
        ldL2 = 0.0
        if fac.L00 is not None:
            ldL2 += 2.0 * smallblocks.log_diagonal_sum(fac.L00)
        if fac.Lrr is not None:
            ldL2 += 2.0 * self.rest.log_diagonal_sum(fac.Lrr)
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
        self.forget()  # one factor alive at a time (see objective_and_gradient)
        try:
            fac = self.factorize(theta)
        except np.linalg.LinAlgError:
            return np.inf
        value = self.criterion(*self.log_determinants(fac))
        return value if np.isfinite(value) else np.inf

    # -- estimates at a theta ----------------------------------------------------

    def _solve_u(self, fac: Factorization, rhs_X: np.ndarray):
        """Solve L_zz' u = rhs for the z-rows of a right-hand side given as X-rows.

        ``rhs_X`` has the layout of a row of [LX0 LXr] (length q0 + q_r), or
        several such rows (k x q): returns u0 (k, m0, p0) and u_r (k, q_r).
        """
        rhs_X = np.atleast_2d(rhs_X)
        k = rhs_X.shape[0]
        q0 = self.m0 * self.p0
        rhs0 = rhs_X[:, :q0]
        u_r = None
        if self.q_rest:
            u_r = self.rest.solve_upper(fac.Lrr, rhs_X[:, q0:].T).T
            # rhs0 -= Lr0' u_r, with Lr0' = M0' A_0r Lambda_r
            AT = self.rest.cross.apply_T(self.rest.lam(fac.lams[1:], u_r.T))  # (q0, k)
            if self.p0 == 1:
                rhs0 = rhs0 - (fac.M0.reshape(self.m0, 1) * AT).T
            else:
                MtA = smallblocks.matmul(np.swapaxes(fac.M0, 1, 2), AT.reshape(self.m0, self.p0, k))
                rhs0 = rhs0 - MtA.reshape(q0, k).T
        if self.p0 == 1:
            u0 = (rhs0 / fac.L00.reshape(1, self.m0)).reshape(k, self.m0, 1)
        else:
            rhs0 = rhs0.reshape(k, self.m0, self.p0)
            u0 = smallblocks.solve_lower_transpose(fac.L00, rhs0.transpose(1, 2, 0)).transpose(2, 0, 1)
        return u0, u_r

    def solve(self, fac: Factorization) -> tuple[np.ndarray, list[np.ndarray]]:
        """Fixed effects beta and each term's random effects b at the factor's theta.

        Returns
        -------
        beta : ndarray of shape (p,)
        b : list of ndarray, one (n_levels, n_columns) array per term
        """
        beta, u = self._beta_u(fac)
        if self.y_offset:
            beta = beta.copy()
            beta[0] += self.y_offset
        return beta, [ut @ lam.T for ut, lam in zip(u, fac.lams)]

    def fixed_effects(self, fac: Factorization) -> np.ndarray:
        """beta at the factor's theta (with ``y_offset`` restored to the intercept).

        Read this rather than solving with ``fac.LXX`` directly: the y row of
        the factor belongs to the centred response.
        """
        p = self.p
        beta = _solve_lower_transposed(fac.LXX[:p, :p], fac.LXX[p, :p])
        if self.y_offset:
            beta[0] += self.y_offset
        return beta

    def _beta_u(self, fac: Factorization) -> tuple[np.ndarray, list[np.ndarray]]:
        """beta (for the centred y: without ``y_offset``) and the spherical random effects u, per term as (m_t, p_t)."""
        p = self.p
        LXX = fac.LXX
        beta = _solve_lower_transposed(LXX[:p, :p], LXX[p, :p])
        if not self.terms:
            return beta, []
        # L_zz' u = l_yz' - L_Xz' beta
        LXz_y = fac.LX0[p] - fac.LX0[:p].T @ beta
        if self.q_rest:
            LXz_y = np.concatenate([LXz_y, fac.LXr[p] - fac.LXr[:p].T @ beta])
        u0, u_r = self._solve_u(fac, LXz_y)
        u = [u0[0]]
        for offset, m, pt in self.rest_layout:
            u.append(u_r[0, offset : offset + m * pt].reshape(m, pt))
        return beta, u

    def sigma(self, pwrss: float) -> float:
        """Residual standard deviation from pwrss (lme4's sigma)."""
        dof = self.n - self.p if self.reml else self.n
        return float(np.sqrt(pwrss / dof))

    def fixed_effects_cov(self, fac: Factorization | Estimates, sigma: float) -> np.ndarray:
        """sigma^2 (R_X' R_X)^-1, lme4's ``vcov`` (reads only ``fac.LXX``)."""
        p = self.p
        RXinv = _solve_lower(fac.LXX[:p, :p], np.eye(p))  # LAPACK's dtrtrs, as scipy's solve_triangular calls it
        return sigma**2 * (RXinv.T @ RXinv)

    # -- the gradient ----------------------------------------------------------------

    def objective_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The objective and its gradient with respect to theta.

        Returns ``(inf, zeros)`` where the factorization fails.
        """
        theta = np.asarray(theta, dtype=np.float64)
        # The previous evaluation's factor is let go before this one is made:
        # one factor alive at a time (a dense rest block's is q_r^2 doubles).
        self.forget()
        try:
            fac = self.factorize(theta)
        except np.linalg.LinAlgError:
            return np.inf, np.zeros_like(theta)
        # The optimiser's last point is most often its optimum: the fit reads
        # the factor from here instead of factoring again (see last_factorization).
        self._last_factorization = fac
        ldL2, ldRX2, pwrss = self.log_determinants(fac)
        value = self.criterion(ldL2, ldRX2, pwrss)
        if not np.isfinite(value):
            return np.inf, np.zeros_like(theta)
        if not self.terms:
            return value, np.zeros(0)
        if not self.q_rest:
            return value, self._one_term_gradient(theta, fac, value, pwrss)
        if self.rest.consumes_factor:
            # The gradient's inverse overwrites the rest factor: keep what the fit
            # reads at its optimum (two triangular solves, O(q_r^2) against the
            # factor's O(q_r^3)), and let the factor go.
            self._last_estimates = self._estimates_from(fac, (ldL2, ldRX2, pwrss))
            self._last_factorization = None
        if self._all_scalar and fac.theta.min() >= _SINGULAR_LAMBDA:
            return value, self._scalar_terms_gradient(fac, pwrss)

        grad = np.empty_like(theta)
        beta, u = self._beta_u(fac)
        dpwrss = self._pwrss_derivatives(fac, beta, u)
        sums = self._inverse_block_sums(fac)
        scale = (self.n - self.p) if self.reml else self.n
        numeric = []
        for t, (term, sl) in enumerate(zip(self.terms, self.theta_slices)):
            lam = fac.lams[t]
            if np.min(np.abs(np.diag(lam))) < _SINGULAR_LAMBDA:
                numeric.append(t)
                continue
            pt = term.n_columns
            if pt == 1:
                dlogdet = 2.0 * (term.n_levels - sums[t]) / lam[0, 0]
            else:
                dlogdet = 2.0 * _solve_lower_transposed(lam, (term.n_levels * np.eye(pt) - sums[t]).T)
            rows, cols = lower_triangle_colmajor(pt)
            grad[sl] = dlogdet[rows, cols] + scale * dpwrss[t][rows, cols] / pwrss
        for t in numeric:
            grad[self.theta_slices[t]] = self._numeric_gradient(theta, self.theta_slices[t], value)
        return value, grad

    def _one_term_gradient(self, theta: np.ndarray, fac: Factorization, value: float, pwrss: float) -> np.ndarray:
        """The gradient for a model with one term: the general formulas, fused.

        Same algebra as the general path (``_beta_u``, ``_pwrss_derivatives``,
        ``_inverse_block_sums``) written out for one block-diagonal term, so
        that a small model's evaluation makes a few dozen array operations.
        """
        p, m0, p0 = self.p, self.m0, self.p0
        lam = fac.lams[0]
        if np.abs(lam.diagonal()).min() < _SINGULAR_LAMBDA:
            return self._numeric_gradient(theta, self.theta_slices[0], value)
        LXX, LX0, AX0 = fac.LXX, fac.LX0, self.AX0
        RX = LXX[:p, :p]
        beta = _solve_lower_transposed(RX, LXX[p, :p])
        r = LX0[p] - beta @ LX0[:p]  # L_zz' u = l_yz' - L_Xz' beta
        scale = (self.n - p) if self.reml else self.n
        if p0 == 1:
            Ld = fac.L00.reshape(m0)
            u0 = r / Ld
            R0 = AX0[p, :, 0] - beta @ AX0[:p, :, 0] - self.A00.reshape(m0) * (lam[0, 0] * u0)
            dpwrss = -2.0 * (R0 @ u0)
            inv_sum = float(np.sum(1.0 / (Ld * Ld)))
            if self.reml and p:
                P = _solve_lower(RX, LX0[:p] / Ld)
                inv_sum += float(P.ravel() @ P.ravel())
            return np.array([2.0 * (m0 - inv_sum) / lam[0, 0] + scale * dpwrss / pwrss])
        u0 = smallblocks.solve_lower_transpose(fac.L00, r.reshape(m0, p0))
        R0 = AX0[p] - (beta @ AX0[:p].reshape(p, m0 * p0)).reshape(m0, p0) - np.einsum("lcd,ld->lc", self.A00, u0 @ lam.T)
        dpwrss = -2.0 * (R0.T @ u0)
        Li = fac.L00inv.reshape(m0 * p0, p0)
        inv_sum = Li.T @ Li
        if self.reml and p:
            V = smallblocks.solve_lower_transpose(fac.L00, LX0[:p].reshape(p, m0, p0).transpose(1, 2, 0))
            P = _solve_lower(RX, V.transpose(2, 0, 1).reshape(p, m0 * p0)).reshape(p * m0, p0)
            inv_sum = inv_sum + P.T @ P
        dlogdet = 2.0 * _solve_lower_transposed(lam, (m0 * np.eye(p0) - inv_sum).T)
        rows, cols = lower_triangle_colmajor(p0)
        return dlogdet[rows, cols] + scale * dpwrss[rows, cols] / pwrss

    def _scalar_terms_gradient(self, fac: Factorization, pwrss: float) -> np.ndarray:
        """The gradient when every term is scalar: the general formulas, fused.

        Same algebra as the general path (``_beta_u``, ``_pwrss_derivatives``,
        ``_inverse_block_sums``) with Lambda diagonal: lambda_t is the scalar
        theta_t, Lambda_r the vector ``d`` over the rest columns, and the
        first term's blocks are the (m0,) vectors L00, M0.  Requires every
        theta_t >= _SINGULAR_LAMBDA (the caller falls back otherwise).
        """
        p, m0, n_terms = self.p, self.m0, len(self.terms)
        rest, cross = self.rest, self.rest.cross
        thetas = fac.theta  # every term scalar: lambda_t = theta_t
        d = thetas[self._rest_term]
        Ld, M0, Lrr = fac.L00.reshape(m0), fac.M0.reshape(m0), fac.Lrr
        LX0, LXr, LXX = fac.LX0, fac.LXr, fac.LXX
        AX0 = self.AX0.reshape(p + 1, m0)
        # beta, then u from L_zz' u = l_yz' - L_Xz' beta; with the REML part, the
        # rows L_Xz (for P = L_XX^-1 L_Xz L_zz^-1) are solved in the same calls:
        # right-hand sides in the rows of L_X. (rows 0..p-1), the y row last.
        beta = _solve_lower_transposed(LXX[:p, :p], LXX[p, :p])
        reml_rows = self.reml and p > 0
        if reml_rows:
            rhs0, rhsr = LX0.copy(), LXr.copy()
            rhs0[p] -= beta @ LX0[:p]
            rhsr[p] -= beta @ LXr[:p]
        else:
            rhs0 = (LX0[p] - beta @ LX0[:p])[None, :]
            rhsr = (LXr[p] - beta @ LXr[:p])[None, :]
        vr = rest.solve_upper(Lrr, np.ascontiguousarray(rhsr.T))  # (q_r, k): L_rr'^-1
        DV = d[:, None] * vr  # Lambda_r L_rr'^-1 rhs; its last column is Lambda_r u_r
        AT = cross.apply_T(DV)  # (m0, k)
        v0 = (rhs0 - M0 * AT.T) / Ld  # (k, m0)
        u0, ur = v0[-1], vr[:, -1]
        # Z'W r at u: R = A_zy - A_zX beta - A_zz Lambda u
        b0, br = thetas[0] * u0, DV[:, -1]
        R0 = AX0[p] - beta @ AX0[:p] - self.A00.reshape(m0) * b0 - AT[:, -1]
        Rr = rest.AXr[p] - beta @ rest.AXr[:p] - cross.apply(b0[:, None])[:, 0] - rest.times_A(br)
        # Diagonal of M^-1 (first term: J + J^2 theta0^2 T_l), summed per term;
        # REML adds the squares of P's columns, P = L_XX^-1 L_Xz L_zz^-1.
        Minv_r, T = rest.inverse_blocks(Lrr, fac.lams[1:])
        J = 1.0 / (Ld * Ld)
        gr = Minv_r[0].reshape(-1) if len(Minv_r) == 1 else np.concatenate([block.reshape(-1) for block in Minv_r])
        sums = np.empty(n_terms)
        sums[0] = J.sum() + thetas[0] ** 2 * ((J * J) @ T.reshape(m0))
        if reml_rows:
            P0 = _solve_lower(LXX[:p, :p], v0[:p])
            Pr = _solve_lower(LXX[:p, :p], vr[:, :p].T)
            sums[0] += np.vdot(P0, P0)
        dpwrss = np.empty(n_terms)
        dpwrss[0] = -2.0 * (R0 @ u0)
        if n_terms == 2:  # one rest term: its sums are plain sums
            dpwrss[1] = -2.0 * (Rr @ ur)
            sums[1] = gr.sum() + (np.vdot(Pr, Pr) if reml_rows else 0.0)
        else:
            dpwrss[1:] = -2.0 * np.bincount(self._rest_index, weights=Rr * ur, minlength=n_terms - 1)
            if reml_rows:
                gr = gr + np.einsum("kl,kl->l", Pr, Pr)
            sums[1:] = np.bincount(self._rest_index, weights=gr, minlength=n_terms - 1)
        return 2.0 * (self._n_levels - sums) / thetas + self._dof * dpwrss / pwrss

    def _pwrss_derivatives(self, fac: Factorization, beta: np.ndarray, u: list[np.ndarray]) -> list[np.ndarray]:
        """d pwrss / d lambda_t as p_t x p_t matrices: -2 R_t' U_t with R = Z'W r."""
        p = self.p
        b0 = u[0] @ fac.lams[0].T  # Lambda_0 u_0 per level
        # R = A_zy - A_zX beta - A_zz Lambda u
        R0 = self.AX0[p] - (beta @ self.AX0[:p].reshape(p, self.m0 * self.p0)).reshape(self.m0, self.p0)
        if self.p0 == 1:
            R0 = R0 - self.A00[:, :, 0] * b0
        else:
            R0 = R0 - smallblocks.matmul(self.A00, b0[:, :, None])[:, :, 0]
        out = []
        if self.q_rest:
            u_r = np.concatenate([ut.ravel() for ut in u[1:]])
            b_r = self.rest.lam(fac.lams[1:], u_r[:, None])[:, 0]
            R0 = R0 - self.rest.cross.apply_T(b_r[:, None])[:, 0].reshape(self.m0, self.p0)
            AXr = self.rest.AXr
            Rr = AXr[p] - AXr[:p].T @ beta - self.rest.cross.apply(b0.reshape(-1, 1))[:, 0] - self.rest.times_A(b_r)
        out.append(-2.0 * R0.T @ u[0])
        for (offset, m, pt), ut in zip(self.rest_layout, u[1:]):
            Rt = Rr[offset : offset + m * pt].reshape(m, pt)
            out.append(-2.0 * Rt.T @ ut)
        return out

    def _inverse_block_sums(self, fac: Factorization) -> list[np.ndarray]:
        """S_t: per term, the sum over levels of the diagonal blocks of G.

        G is M^-1 for ML and the zz block of the inverse of the whole
        [z X] block for REML (M^-1 plus P'P, P = L_XX^-1 L_Xz L_zz^-1).
        """
        if self.q_rest:
            return [blocks.sum(axis=0) for blocks in self.inverse_diagonal_blocks(fac, with_fixed=self.reml)]
        # One term: sum_l J_l = sum_l L00_l^-T L00_l^-1 is one product of the
        # stacked inverse with itself, and the REML part sum_l P_l' P_l another.
        p, m0, p0 = self.p, self.m0, self.p0
        if p0 == 1:
            S0 = np.array([[np.sum(1.0 / fac.L00**2)]])
        else:
            Li = fac.L00inv.reshape(m0 * p0, p0)
            S0 = Li.T @ Li
        if self.reml and p > 0:
            v0, _ = self._solve_u(fac, fac.LX0[:p])
            P0 = _solve_lower(fac.LXX[:p, :p], v0.reshape(p, m0 * p0)).reshape(p * m0, p0)
            S0 = S0 + P0.T @ P0
        return [S0]

    def conditional_covariances(self, fac: Factorization) -> list[np.ndarray]:
        """Per term, the diagonal blocks of M^-1, shape (m_t, p_t, p_t).

        The conditional covariance of level l's random effects given the
        data and beta is ``sigma^2 lambda_t (M^-1)_ll lambda_t'``: lme4's
        ``condVar``.
        """
        return self.inverse_diagonal_blocks(fac, with_fixed=False)

    def inverse_diagonal_blocks(self, fac: Factorization, with_fixed: bool) -> list[np.ndarray]:
        """Diagonal p_t x p_t blocks, level by level, of M^-1 or of the zz block of the [z X] inverse.

        Parameters
        ----------
        fac : Factorization
        with_fixed : bool
            False: blocks of M^-1 (random effects given beta).  True: of the
            zz block of the inverse of [[M, .], [X'WZ Lambda, X'WX]], which
            adds P'P, P = L_XX^-1 L_Xz L_zz^-1 (beta's uncertainty).

        Returns
        -------
        list of ndarray, one (m_t, p_t, p_t) array per term
        """
        p = self.p
        m0, p0 = self.m0, self.p0
        # J_l = L00_l^-T L00_l^-1 = (lambda0' A00_l lambda0 + I)^-1
        if p0 == 1:
            blocks0 = 1.0 / fac.L00**2
        else:
            Linv = fac.L00inv if fac.L00inv is not None else smallblocks.inv_lower(fac.L00)
            blocks0 = smallblocks.matmul(np.swapaxes(Linv, 1, 2), Linv)
        blocks = [blocks0]
        if with_fixed and p > 0:
            # P = L_XX^-1 L_Xz L_zz^-1 (p x q): solve L_zz' V' = L_Xz', then L_XX.
            # (Before the rest's inverse, which may overwrite the rest factor.)
            rows = np.concatenate([fac.LX0[:p], fac.LXr[:p]], axis=1) if self.q_rest else fac.LX0[:p]
            v0, v_r = self._solve_u(fac, rows)
        if self.q_rest:
            # M^-1's rest blocks, and T_l = A_r0[:, l]' Lambda_r Minv_rr Lambda_r' A_r0[:, l];
            # the first term's part of M^-1 beyond J is J lambda0' T_l lambda0 J.
            rest_blocks, T = self.rest.inverse_blocks(fac.Lrr, fac.lams[1:])
            blocks.extend(rest_blocks)
            JL = (blocks0.reshape(m0 * p0, p0) @ fac.lams[0].T).reshape(m0, p0, p0)  # J_l lambda0'
            blocks[0] = blocks0 + smallblocks.matmul(smallblocks.matmul(JL, T), np.swapaxes(JL, 1, 2))
        if with_fixed and p > 0:
            LX = fac.LXX[:p, :p]
            P0 = _solve_lower(LX, v0.reshape(p, m0 * p0)).reshape(p, m0, p0)
            blocks[0] = blocks[0] + np.einsum("klc,kld->lcd", P0, P0)
            if self.q_rest:
                Pr = _solve_lower(LX, v_r)
                for t, (offset, m, pt) in enumerate(self.rest_layout, start=1):
                    block = Pr[:, offset : offset + m * pt].reshape(p, m, pt)
                    blocks[t] = blocks[t] + np.einsum("klc,kld->lcd", block, block)
        return blocks

    def _numeric_gradient(self, theta: np.ndarray, sl: slice, value: float) -> np.ndarray:
        """Finite-difference derivatives for one term's theta (boundary fits).

        Central differences where the step stays feasible, forward (one-sided)
        at a lower bound of zero.
        """
        lower = self.lower_bounds()
        out = np.empty(sl.stop - sl.start)
        for k, i in enumerate(range(sl.start, sl.stop)):
            h = 1e-6 * max(1.0, abs(theta[i]))
            up = theta.copy()
            up[i] += h
            if theta[i] - h >= lower[i]:
                down = theta.copy()
                down[i] -= h
                out[k] = (self.objective(up) - self.objective(down)) / (2 * h)
            else:
                out[k] = (self.objective(up) - value) / h
        return out
