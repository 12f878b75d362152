"""Denominator degrees of freedom for tests of fixed effects: Satterthwaite and Kenward-Roger.

Satterthwaite (as lmerTest 3.1-3)
---------------------------------
The variance parameters are ``varpar = (theta, sigma)``.  With

    V_beta(varpar) = sigma^2 (R_X' R_X)^-1      (lme4's vcov at theta)
    A = 2 H^+,  H the Hessian of the (unprofiled) deviance or REML criterion
                 ``devfun_vp(varpar)`` at the estimate, H^+ its pseudo-inverse
                 over the eigenvalues above 1e-8 (lmerTest's ``vcov_varpar``)
    J_k = d V_beta / d varpar_k                  (lmerTest's ``Jac_list``)

the df of the contrast ``l' beta`` is ``2 (l' V l)^2 / (g' A g)`` with
``g_k = l' J_k l``.  H and J are taken, as lmerTest takes them, by
numDeriv's Richardson extrapolation (:func:`richardson_jacobian`,
:func:`richardson_hessian`: the same steps, so boundary fits agree too).
Each evaluation is one factorisation of the engine's blocked Cholesky factor
(:class:`~sklmm._engine.deviance.ProfiledDeviance`), whose cost does not
depend on n.  F tests of several rows use lmerTest's eigen-decomposition of
``L V L'`` (:meth:`LmmTests.satterthwaite_f`).

Kenward-Roger (as pbkrtest 0.5.2)
---------------------------------
pbkrtest parameterises V = Z D Z' + sigma^2 I linearly by the elements
gamma of each term's covariance matrix (variances, covariances) and
sigma^2, so V = sum_r gamma_r G_r with ``G_r = Z E_r Z'`` (``E_r`` the
term's symmetric unit matrix in every level) and ``G = W^-1`` for the
residual.  It then forms, with ``Phi = vcov(beta)``,

    P_r = -X'V^-1 G_r V^-1 X,   Q_rs = X'V^-1 G_r V^-1 G_s V^-1 X,
    K_rs = tr(V^-1 G_r V^-1 G_s),
    I_rs = K_rs - 2 tr(Phi Q_rs) + tr(Phi P_r Phi P_s),   W = 2 I^-1,
    U = sum_rs W_rs (Q_rs - P_r Phi P_s),    Phi_A = Phi + 2 Phi U Phi,

out of n x n matrices.  Here every product is reduced to (q + p)-square
cross products: with T = [Z X], K = Z Lambda, B = K'WK, M = B + I and
G = M^-1 (q x q), V^-1 = sigma^-2 (W - W K G K' W), and

    T'V^-1 T              = sigma^-2 (T'WT - T'WK G K'WT)
    T'V^-1 R V^-1 T       = sigma^-4 (T'WT - 2 t G t' + t (G - G^2) t')
    T'V^-1 R V^-1 R V^-1 T = sigma^-6 (T'WT - 3 t G t' + 3 t (G - G^2) t' - t G (I - G)^2 t')

with ``t = T'WK`` and ``R = W^-1`` (because ``G B = I - G``), and the traces
``tr(V^-1 R) = sigma^-2 (n - q + tr G)``,
``tr((V^-1 R)^2) = sigma^-4 (n - 2 (q - tr G) + tr (I - G)^2)``.  Memory is
O(data) for the one pass forming T'WT and five (q + p)-square arrays after
it (``KR_DENSE_ARRAYS``; sums over a term's levels go by row slices).  The F
statistic and its df are pbkrtest's ``.KR_adjust``; for one row, its
``Lb_ddf``.  pbkrtest ignores prior weights (its residual G is I); here
the residual's G is W^-1, the model's, so the two agree on unweighted fits.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy import stats
from threadpoolctl import threadpool_limits

from .._engine.blocks import term_transpose_matrix as _term_transpose_matrix
from .._engine.fit import prepare
from .._engine.packedrest import MEMORY_FRACTION, physical_memory
from .._engine.rfp import BLOCK
from .._model.terms import lower_triangle_colmajor

_LOG_2PI = np.log(2.0 * np.pi)
#: numDeriv's default ``zero.tol``: sqrt(.Machine$double.eps / 7e-7).
_ZERO_TOL = np.sqrt(np.finfo(float).eps / 7e-7)
#: lmerTest's tolerance on the Hessian's eigenvalues (``as_lmerModLT(tol = 1e-8)``).
_HESSIAN_TOL = 1e-8

DDF_METHODS = ("satterthwaite", "kenward-roger")


def check_ddf(ddf, allow_none: bool = False) -> str | None:
    """Normalise the ``ddf`` argument (case-insensitive; lmerTest's spellings accepted)."""
    if ddf is None and allow_none:
        return None
    if isinstance(ddf, str):
        key = ddf.strip().lower().replace("_", "-").replace(" ", "-")
        aliases = {"satterthwaite": "satterthwaite", "kenward-roger": "kenward-roger", "kr": "kenward-roger", "kenwardroger": "kenward-roger"}
        if key in aliases:
            return aliases[key]
    allowed = ", ".join(repr(m) for m in DDF_METHODS) + (" or None" if allow_none else "")
    raise ValueError(f"ddf={ddf!r} is not a degrees-of-freedom method; use {allowed}")


# -- numDeriv's Richardson extrapolation ------------------------------------------------


def _steps(x: np.ndarray, d: float, eps: float = 1e-4) -> np.ndarray:
    return np.abs(d * x) + eps * (np.abs(x) < _ZERO_TOL)


def _richardson(a: np.ndarray, r: int) -> np.ndarray:
    """numDeriv's extrapolation over the first axis (r estimates at halving steps)."""
    for m in range(1, r):
        a = (a[1 : r + 1 - m] * 4.0**m - a[: r - m]) / (4.0**m - 1.0)
    return a[0]


def richardson_jacobian(func, x: np.ndarray, d: float = 1e-4, r: int = 4) -> np.ndarray:
    """numDeriv's ``jacobian(func, x)`` (method "Richardson", its defaults).

    ``func`` returns an array; the result has shape ``func(x).shape + (len(x),)``.
    """
    x = np.asarray(x, dtype=np.float64)
    f0 = np.asarray(func(x))
    out = np.empty(f0.shape + (len(x),))
    h0 = _steps(x, d)
    for i in range(len(x)):
        a = np.empty((r,) + f0.shape)
        h = h0.copy()
        for k in range(r):
            step = np.zeros_like(x)
            step[i] = h[i]
            a[k] = (np.asarray(func(x + step)) - np.asarray(func(x - step))) / (2.0 * h[i])
            h = h / 2.0
        out[..., i] = _richardson(a, r)
    return out


def richardson_hessian(func, x: np.ndarray, d: float = 0.1, r: int = 4) -> np.ndarray:
    """numDeriv's ``hessian(func, x)`` (``genD`` with d = 0.1, Richardson, r = 4)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    f0 = float(func(x))
    h0 = _steps(x, d)
    diag = np.empty(n)
    for i in range(n):
        approx = np.empty(r)
        h = h0.copy()
        for k in range(r):
            e = np.zeros(n)
            e[i] = h[i]
            approx[k] = (func(x + e) - 2.0 * f0 + func(x - e)) / h[i] ** 2
            h = h / 2.0
        diag[i] = _richardson(approx, r)
    H = np.diag(diag)
    for i in range(n):
        for j in range(i):
            approx = np.empty(r)
            h = h0.copy()
            for k in range(r):
                e = np.zeros(n)
                e[i] += h[i]
                e[j] += h[j]
                approx[k] = (func(x + e) - 2.0 * f0 + func(x - e) - diag[i] * h[i] ** 2 - diag[j] * h[j] ** 2) / (2.0 * h[i] * h[j])
                h = h / 2.0
            H[i, j] = H[j, i] = _richardson(approx, r)
    return H


# -- the model at the estimate ---------------------------------------------------------------


@dataclass
class LmmTests:
    """Fixed-effects tests of a fitted linear mixed model (lmerTest's and pbkrtest's quantities).

    Build with :func:`lmm_tests`.  ``beta``, ``vcov`` and ``names`` are over
    the estimated (kept) fixed effects; contrast matrices have one column
    per kept fixed effect.
    """

    names: list
    beta: np.ndarray
    vcov: np.ndarray
    sigma: float
    varpar: np.ndarray
    reml: bool
    loader: object = field(repr=False)  # () -> Prepared, the model rebuilt from the training data
    cache: dict = field(default_factory=dict, repr=False)  # small results only (kept with the model)
    _prepared: object = field(default=None, repr=False)

    @property
    def prepared(self):
        if self._prepared is None:
            self._prepared = self.loader()
        return self._prepared

    @property
    def problem(self):
        return self.prepared.problem

    # -- Satterthwaite ------------------------------------------------------------

    def covbeta(self, varpar: np.ndarray) -> np.ndarray:
        """vcov(beta) at ``varpar = (theta, sigma)`` (lmerTest's ``get_covbeta``)."""
        theta, sigma = varpar[:-1], varpar[-1]
        fac = self.problem.factorize(theta)
        return self.problem.fixed_effects_cov(fac, sigma)

    def deviance(self, varpar: np.ndarray) -> float:
        """The deviance (ML) or REML criterion at ``(theta, sigma)``, not profiled over sigma.

        lmerTest's ``devfun_vp``: ``ldL2 + pwrss / sigma^2 + n log(2 pi sigma^2)``,
        plus ``ldRX2 - p log(2 pi sigma^2)`` for REML (the log of the prior
        weights, a constant, is left out as lmerTest leaves it out).
        """
        theta, sigma2 = varpar[:-1], varpar[-1] ** 2
        problem = self.problem
        try:
            fac = problem.factorize(theta)
        except np.linalg.LinAlgError:
            return np.nan
        ldL2, ldRX2, pwrss = problem.log_determinants(fac)
        dev = ldL2 + pwrss / sigma2 + problem.n * (_LOG_2PI + np.log(sigma2))
        if self.reml:
            dev += ldRX2 - problem.p * (_LOG_2PI + np.log(sigma2))
        return float(dev)

    def satterthwaite_parts(self) -> tuple[np.ndarray, np.ndarray]:
        """(Jacobian of vcov(beta), shape (k, p, p); asymptotic covariance of varpar, (k, k))."""
        if "satterthwaite" not in self.cache:
            hessian = richardson_hessian(self.deviance, self.varpar)
            values, vectors = np.linalg.eigh(hessian)
            pos = values > _HESSIAN_TOL
            vcov_varpar = 2.0 * (vectors[:, pos] / values[pos]) @ vectors[:, pos].T
            jac = richardson_jacobian(self.covbeta, self.varpar)  # (p, p, k)
            self.cache["satterthwaite"] = (np.moveaxis(jac, -1, 0), vcov_varpar)
        return self.cache["satterthwaite"]

    def satterthwaite_t(self, L: np.ndarray) -> dict:
        """t test of each row of L (lmerTest's ``contest1D``): estimate, se, df, t, p."""
        L = np.atleast_2d(np.asarray(L, dtype=np.float64))
        jac, vcov_varpar = self.satterthwaite_parts()
        estimate = L @ self.beta
        var = np.einsum("ij,jk,ik->i", L, self.vcov, L)
        grad = np.einsum("ij,mjk,ik->im", L, jac, L)  # (rows, k)
        denom = np.einsum("im,mn,in->i", grad, vcov_varpar, grad)
        with np.errstate(divide="ignore", invalid="ignore"):
            df = 2.0 * var**2 / denom
        return _t_table(estimate, np.sqrt(var), df)

    def satterthwaite_f(self, L: np.ndarray, eps: float = np.sqrt(np.finfo(float).eps)) -> dict:
        """F test of L beta = 0 (lmerTest's ``contestMD``, Satterthwaite): the eigen-decomposition method."""
        L = np.atleast_2d(np.asarray(L, dtype=np.float64))
        if L.shape[0] == 1:
            res = self.satterthwaite_t(L)
            return _f_table(res["t"][0] ** 2, 1, res["df"][0], self.sigma)
        VL = L @ self.vcov @ L.T
        d, P = np.linalg.eigh((VL + VL.T) / 2.0)
        d, P = d[::-1], P[:, ::-1]
        tol = max(eps * d[0], 0.0)
        q = int(np.sum(d > tol))
        if q == 0:
            return _f_table(np.nan, 0, np.nan, self.sigma)
        PtL = (P.T @ L)[:q]
        if q == 1:
            res = self.satterthwaite_t(PtL)
            return _f_table(res["t"][0] ** 2, 1, res["df"][0], self.sigma)
        t2 = (PtL @ self.beta) ** 2 / d[:q]
        F = float(np.sum(t2) / q)
        jac, vcov_varpar = self.satterthwaite_parts()
        grad = np.einsum("ij,mjk,ik->im", PtL, jac, PtL)
        nu = 2.0 * d[:q] ** 2 / np.einsum("im,mn,in->i", grad, vcov_varpar, grad)
        return _f_table(F, q, _f_ddf(nu), self.sigma)

    # -- Kenward-Roger ------------------------------------------------------------

    def kenward_roger_parts(self) -> tuple[np.ndarray, list, np.ndarray]:
        """(adjusted vcov Phi_A, the P_r matrices, W): pbkrtest's ``vcovAdj`` and its attributes."""
        if not self.reml:
            raise ValueError("Kenward-Roger's method is only available for REML fits (refit with reml=True)")
        if "kenward-roger" not in self.cache:
            self.cache["kenward-roger"] = kenward_roger_adjustment(self.problem, self.prepared, self.varpar[:-1], self.sigma, self.vcov)
        return self.cache["kenward-roger"]

    @property
    def vcov_kenward_roger(self) -> np.ndarray:
        """pbkrtest's ``vcovAdj``: the Kenward-Roger adjusted covariance of beta."""
        return self.kenward_roger_parts()[0]

    def kenward_roger_t(self, L: np.ndarray) -> dict:
        """t test of each row of L with KR-adjusted se and pbkrtest's ``Lb_ddf`` (lmerTest's ``get_KR1D``)."""
        L = np.atleast_2d(np.asarray(L, dtype=np.float64))
        PhiA, P, W = self.kenward_roger_parts()
        var = np.einsum("ij,jk,ik->i", L, PhiA, L)
        df = np.array([_kr_statistics(row[None, :], self.vcov, P, W, q=1)[0] for row in L])
        return _t_table(L @ self.beta, np.sqrt(var), df)

    def kenward_roger_f(self, L: np.ndarray) -> dict:
        """F test of L beta = 0 (pbkrtest's ``KRmodcomp``, as lmerTest's ``contestMD`` reports it)."""
        L = np.atleast_2d(np.asarray(L, dtype=np.float64))
        PhiA, P, W = self.kenward_roger_parts()
        q = int(np.linalg.matrix_rank(L))
        ddf, scaling = _kr_statistics(L, self.vcov, P, W, q=q)
        Lb = L @ self.beta
        wald = float(Lb @ np.linalg.solve(L @ PhiA @ L.T, Lb))
        F_unscaled = wald / q
        return _f_table(F_unscaled, q, ddf, self.sigma, scaling=scaling)

    # -- dispatch --------------------------------------------------------------------

    def t_test(self, L: np.ndarray, ddf: str) -> dict:
        return self.satterthwaite_t(L) if ddf == "satterthwaite" else self.kenward_roger_t(L)

    def f_test(self, L: np.ndarray, ddf: str) -> dict:
        return self.satterthwaite_f(L) if ddf == "satterthwaite" else self.kenward_roger_f(L)


def _t_table(estimate, se, df) -> dict:
    with np.errstate(divide="ignore", invalid="ignore"):
        t = estimate / se
    p = 2.0 * stats.t.sf(np.abs(t), df)
    return {"estimate": np.asarray(estimate, float), "se": np.asarray(se, float), "df": np.asarray(df, float), "t": t, "p": p}


def _f_table(F, ndf, ddf, sigma, scaling: float = 1.0) -> dict:
    """lmerTest's ``mk_Ftable``: Sum Sq and Mean Sq from the unscaled F, then F scaled (KR)."""
    ms = F * sigma**2
    F = F * scaling
    p = stats.f.sf(F, ndf, ddf) if ndf > 0 else np.nan
    return {"Sum Sq": ms * ndf, "Mean Sq": ms, "NumDF": int(ndf), "DenDF": float(ddf), "F value": float(F), "Pr(>F)": float(p)}


def _f_ddf(nu: np.ndarray, tol: float = 1e-8) -> float:
    """lmerTest's ``get_Fstat_ddf``: the df of a sum of q independent F(1, nu_m)."""
    if len(nu) == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(np.mean(nu))
    if np.any(nu <= 2):
        return 2.0
    E = np.sum(nu / (nu - 2.0))
    return float(2.0 * E / (E - len(nu)))


def _kr_statistics(L, Phi, P, W, q: int) -> tuple[float, float]:
    """pbkrtest's ``.KR_adjust`` / ``Lb_ddf``: (ddf, F scaling)."""
    Theta = L.T @ np.linalg.solve(L @ Phi @ L.T, L)
    ThetaPhi = Theta @ Phi
    u = [ThetaPhi @ Pr @ Phi for Pr in P]
    traces = np.array([np.trace(ui) for ui in u])
    n = len(P)
    A1 = A2 = 0.0
    for i in range(n):
        for j in range(i, n):
            e = 1.0 if i == j else 2.0
            A1 += e * W[i, j] * traces[i] * traces[j]
            A2 += e * W[i, j] * np.sum(u[i] * u[j].T)
    B = (A1 + 6.0 * A2) / (2.0 * q)
    g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
    c1 = g / (3 * q + 2 * (1 - g))
    c2 = (q - g) / (3 * q + 2 * (1 - g))
    c3 = (q + 2 - g) / (3 * q + 2 * (1 - g))
    V0 = 1 + c1 * B
    V1 = 1 - c2 * B
    V2 = 1 - c3 * B
    V0 = 0.0 if abs(V0) < 1e-10 else V0
    x = 1 - A2 / q
    ratio = 1.0 if abs(x) < 1e-14 and abs(V1) < 1e-14 else x / V1
    rho = ratio**2 * V0 / V2 / q
    ddf = 4 + (q + 2) / (q * rho - 1)
    scaling = 1.0 if abs(ddf - 2) < 1e-2 else ddf * (1 - A2 / q) / (ddf - 2)
    return float(ddf), float(scaling)


# -- Kenward-Roger's matrices from cross products ----------------------------------------------


def _stacked_cross_products(prepared):
    """T'WT for T = [Z X] (dense, (q + p) square), with each term's row offset into Z.

    The one pass over the rows: Z as the engine's sparse Z' per term.
    """
    terms = prepared.terms
    X = prepared.design
    w = prepared.weights  # rows with weight 0 are already left out
    Zt = sp.vstack([_term_transpose_matrix(t) for t in terms], format="csr")
    ZtW = Zt if w is None else Zt @ sp.diags(w)
    WX = X if w is None else X * w[:, None]
    q, p = Zt.shape[0], X.shape[1]
    A = np.empty((q + p, q + p))
    A[:q, :q] = (ZtW @ Zt.T).toarray()
    A[:q, q:] = ZtW @ X
    A[q:, :q] = A[:q, q:].T
    A[q:, q:] = X.T @ WX
    offsets = np.cumsum([0] + [t.q for t in terms])
    n_obs = X.shape[0]
    return A, offsets, q, p, n_obs


#: (q + p)-square float64 arrays Kenward-Roger holds at its peak, measured with
#: tracemalloc (``tests/test_kenward_roger_dense.py``): T'WT (becoming sigma^2 H0),
#: t = T'WK, M = B + I (becoming its factor, then G), Y = t G and t G t'.
KR_DENSE_ARRAYS = 5
#: Rows in one slice of the blockwise symmetrisations (bounded temporaries).
_ROW_BLOCK = 2048


def kenward_roger_bytes(q: int, p: int) -> int:
    """Bytes Kenward-Roger's dense arrays take at their peak for q random effects and p fixed effects."""
    return KR_DENSE_ARRAYS * 8 * (q + p) ** 2


def _check_kenward_roger_memory(q: int, p: int) -> None:
    needed, available = kenward_roger_bytes(q, p), physical_memory()
    if available is not None and needed > MEMORY_FRACTION * available:
        raise ValueError(
            f"Kenward-Roger's df need {KR_DENSE_ARRAYS} dense square arrays of the model's "
            f"{q} random effects and {p} fixed effects ({needed / 2**30:.1f} GiB), more than "
            f"{MEMORY_FRACTION:.0%} of this machine's {available / 2**30:.1f} GiB of memory; "
            "Satterthwaite's df (ddf=\"satterthwaite\") need only the model's own factorisation."
        )


def _chunks(n: int):
    """Slices of range(n) of at most ``_ROW_BLOCK`` each."""
    return [slice(c, min(c + _ROW_BLOCK, n)) for c in range(0, n, _ROW_BLOCK)]


def _symmetrize_lower(M: np.ndarray) -> None:
    """M's lower triangle (with its diagonal) set to that of (M + M') / 2, in place, by row slices."""
    for rows in _chunks(M.shape[0]):
        M[rows, : rows.stop] += M[: rows.stop, rows].T
        M[rows, : rows.stop] *= 0.5


def _subtract_symmetric_part(A: np.ndarray, S: np.ndarray) -> None:
    """A -= (S + S') / 2 in place, by row slices (no second square temporary)."""
    for rows in _chunks(A.shape[0]):
        A[rows] -= 0.5 * (S[rows] + S[:, rows].T)


def _lower_sum_squares(M: np.ndarray) -> float:
    """The sum of the squares of a symmetric matrix's entries from its lower triangle (with its diagonal)."""
    total = 0.0
    for rows in _chunks(M.shape[0]):
        block = np.tril(M[rows, : rows.stop], k=rows.start)
        total += 2.0 * float(np.einsum("ij,ij->", block, block))
    return total - float(np.sum(np.diagonal(M) ** 2))


def kenward_roger_adjustment(problem, prepared, theta, sigma, Phi):
    """pbkrtest's ``vcovAdj``: (Phi_A, [P_r], W) with V never formed (see the module docstring).

    Memory: ``KR_DENSE_ARRAYS`` (q + p)-square arrays at the peak, checked
    before the first is made.  Beyond ``rfp.BLOCK`` random effects all of
    its dense algebra runs with one BLAS thread: the OpenBLAS in
    scipy's wheels crashes in its threaded dsyrk past about 22,500 rows
    (:mod:`sklmm._engine.rfp`).
    """
    terms = prepared.terms
    q, p = sum(t.q for t in terms), prepared.design.shape[1]
    _check_kenward_roger_memory(q, p)
    threads = threadpool_limits(1, user_api="blas") if q > BLOCK else contextlib.nullcontext()
    with threads:
        return _kenward_roger_adjustment(problem, prepared, theta, sigma, Phi)


def _kenward_roger_adjustment(problem, prepared, theta, sigma, Phi):
    terms = prepared.terms
    A, offsets, q, p, n = _stacked_cross_products(prepared)
    lams = problem.lambdas(theta)
    Lam = sp.block_diag([sp.kron(sp.identity(t.n_levels), lam) for t, lam in zip(terms, lams)], format="csr")
    t2 = np.asarray((Lam.T @ A[:, :q].T).T)  # T'WK, (q + p, q)
    M = np.asarray(Lam.T @ t2[:q])  # B = Lambda' A_zz Lambda; only its lower triangle is used
    _symmetrize_lower(M)
    M[np.diag_indices(q)] += 1.0  # M = B + I
    # M's transpose is Fortran-ordered: its upper triangle (M's lower) is factored
    # in place, U = L', so no copy of M is made.
    cho = scipy.linalg.cho_factor(M.T, lower=False, overwrite_a=True, check_finite=False)
    # Y = t G (G = M^-1 never multiplied by a q x q matrix): with t G t' = A - sigma^2 H0,
    #   H1 = (A - t G t' - Y Y') / sigma^4,   H2 = (A - t G t' - Y Y' - Y G Y') / sigma^6
    # (G B = I - G turns the powers of G into these), and only H1's zx block, the
    # within-level entries of its zz block, and the xx blocks of H1 and H2 are needed.
    Y = scipy.linalg.cho_solve(cho, t2.T, check_finite=False).T  # (q + p, q)
    s2 = sigma**2
    tGt = Y @ t2.T
    del t2
    _subtract_symmetric_part(A, tGt)
    del tGt
    A /= s2
    H0 = A  # T'V^-1 T
    Yz, Yx = Y[:q], Y[q:]
    F1 = (s2 * H0[:q, q:] - Yz @ Yx.T) / s2**2
    H1xx = (s2 * H0[q:, q:] - Yx @ Yx.T) / s2**2
    GYx = scipy.linalg.cho_solve(cho, Yx.T, check_finite=False)  # G Y_x'
    H2xx = (s2 * H0[q:, q:] - Yx @ Yx.T - Yx @ GYx) / s2**3
    # G = M^-1 in place of the factor (LAPACK's dpotri on M's transpose's upper
    # triangle: M's lower), for tr G and tr G^2.
    inverse, info = scipy.linalg.lapack.dpotri(cho[0], lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"Kenward-Roger: the inverse of Lambda'Z'WZ Lambda + I failed (dpotri info {info})")
    G = inverse.T  # G's lower triangle (the upper of the Fortran-ordered inverse)
    trG = float(np.trace(G))
    tr_VR2 = (n - 2.0 * (q - trG) + (q - 2.0 * trG + _lower_sum_squares(G))) / s2**2  # tr (I - G)^2
    del G, inverse, M, cho

    def D1_sum(i, j):
        """The sum of the entries (i, j) of H1's zz block, (sigma^2 H0 - Y Y') / sigma^4, over those pairs."""
        total = 0.0
        for c in _chunks(len(i)):
            total += float(np.sum(s2 * H0[i[c], j[c]]) - np.einsum("ij,ij->", Yz[i[c]], Yz[j[c]]))
        return total / s2**2

    C, F = H0[:q, :q], H0[:q, q:]

    # Parameters: each term's lower triangle (pbkrtest's order within a term), then the residual.
    params = []  # (rows a, rows b) index arrays into Z's columns
    for t, term in enumerate(terms):
        pt = term.n_columns
        base = offsets[t] + np.arange(term.n_levels) * pt
        rows, cols = lower_triangle_colmajor(pt)
        for a, b in zip(rows, cols):
            params.append((base + a, base + b))

    def E_rows(param):
        """E_r's rows: (i, src) with (E_r Y)[i] = Y[src] and every other row of E_r Y zero."""
        ia, ib = param
        if np.array_equal(ia, ib):
            return ia, ia
        return np.concatenate([ia, ib]), np.concatenate([ib, ia])

    k = len(params) + 1
    rows = [E_rows(param) for param in params]
    Ps, EF = [], []
    for idx, src in rows:
        ef = F[src]  # E_r F's nonzero rows
        EF.append(ef)
        Ps.append(-(F[idx].T @ ef))
    Ps.append(-H1xx)
    Ps = [(Pm + Pm.T) / 2.0 for Pm in Ps]

    # Q_rs = (E_r F)' C (E_s F) and K_rs = tr(E_r C E_s C), over slices of E_r's rows
    # (no copy of C's rows bigger than a slice).
    Q = {}
    K = np.empty((k, k))
    for r, (idx_r, src_r) in enumerate(rows):
        ef_r = EF[r]
        for s in range(r, len(params)):
            idx_s, src_s = rows[s]
            Q[r, s] = np.zeros((p, p))
            K[r, s] = 0.0
            for c in _chunks(len(idx_r)):
                Q[r, s] += ef_r[c].T @ (C[np.ix_(idx_r[c], idx_s)] @ EF[s])
                K[r, s] += np.einsum("kl,lk->", C[np.ix_(src_r[c], idx_s)], C[np.ix_(src_s, idx_r[c])])
            K[s, r] = K[r, s]
        Q[r, k - 1] = ef_r.T @ F1[idx_r]
        ia, ib = params[r]  # tr(E_r D1): the term's (a, b) entries of D1, level by level
        trace = D1_sum(ia, ib)
        K[r, k - 1] = K[k - 1, r] = trace if np.array_equal(ia, ib) else 2.0 * trace
    Q[k - 1, k - 1] = H2xx
    K[k - 1, k - 1] = tr_VR2

    IE2 = np.empty((k, k))
    for i in range(k):
        PhiPi = Phi @ Ps[i]
        for j in range(i, k):
            IE2[i, j] = IE2[j, i] = K[i, j] - 2.0 * np.sum(Phi * Q[i, j]) + np.sum(PhiPi * (Ps[j] @ Phi))
    condi = np.min(np.abs(np.linalg.eigvalsh(IE2)))
    W = 2.0 * (np.linalg.inv(IE2) if condi > 1e-10 else np.linalg.pinv(IE2))
    W = (W + W.T) / 2.0
    U = np.zeros((p, p))
    for i in range(k - 1):
        for j in range(i + 1, k):
            U += W[i, j] * (Q[i, j] - Ps[i] @ Phi @ Ps[j])
    U = U + U.T
    for i in range(k):
        U += W[i, i] * (Q[i, i] - Ps[i] @ Phi @ Ps[i])
    PhiA = Phi + 2.0 * Phi @ U @ Phi
    return PhiA, Ps, W


def lmm_tests(est) -> LmmTests:
    """The tests' machinery for a fitted MixedLinearRegressor.

    The derivatives it computes (p x p and k x k arrays: small) are kept on
    the model, so they are computed once per fit and survive pickling; the
    cross products are rebuilt from the training data when first needed.
    """
    if not est._fitted_terms:
        raise ValueError("tests with Satterthwaite or Kenward-Roger df need a model with random effects")
    cached = est.__dict__.get("_ddf_cache")
    if cached is None or cached[0] is not est.theta_:
        cached = (est.theta_, {})
        est.__dict__["_ddf_cache"] = cached

    def loader():
        data = est._require_training_data("tests of the fixed effects with Satterthwaite or Kenward-Roger df")
        return prepare(data, est.reml, warn=False)

    names = list(est.fixed_effects_.index)
    beta = est.fixed_effects_["estimate"].to_numpy()
    vcov = est.fixed_effects_cov_.to_numpy()
    varpar = np.concatenate([est.theta_, [est.sigma_]])
    return LmmTests(names, beta, vcov, float(est.sigma_), varpar, bool(est.reml), loader, cached[1])
