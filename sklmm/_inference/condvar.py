"""Conditional variances of the random effects (lme4's ``condVar``) and prediction standard errors.

Given the data, theta and beta, the spherical random effects u are normal
with covariance ``sigma^2 M^-1`` (M = Lambda' Z'WZ Lambda + I).  The
conditional covariance of level l's random effects of term t is therefore::

    sigma^2 lambda_t (M^-1)_ll lambda_t'

with ``(M^-1)_ll`` the p_t x p_t diagonal block of M^-1 for that level,
which is what lme4's ``ranef(fit, condVar = TRUE)`` reports (its
``postVar`` attribute).

For predictions, the standard error of the population-level prediction
``x' beta_hat`` is ``sqrt(x' V x)`` with V lme4's ``vcov``.  For a
prediction conditional on known levels, ``x' beta_hat + z' b_hat``, the
standard error reported is the root of its conditional mean squared error
as a predictor of ``x' beta + z' b`` given theta and sigma::

    sigma^2 v' C^-1 v,   v = [Lambda' z; x],   C = [[M, .], [X'WZ Lambda, X'WX]]

(Henderson's mixed-model equations in lme4's spherical coordinates), which
takes the uncertainty of beta_hat and of b_hat into account but not that
of theta.  ``v' C^-1 v = |L^-1 v|^2`` with L the blocked Cholesky factor,
so one forward solve per row gives it.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from .._model.terms import lookup_levels
from .._engine.fit import prepare


def _prepared_factor(est):
    data = est._require_training_data("the conditional variances of the random effects")
    prepared = prepare(data, est.reml, warn=False)
    factor = prepared.problem.factorize(est.theta_)
    return prepared, factor


def random_effects_covariances(est) -> dict[str, np.ndarray]:
    """Per grouping factor, the conditional covariance matrix of each level's random effects.

    Returns
    -------
    dict of str to ndarray of shape (n_levels, p, p)
        Keys, level order and column order as ``est.random_effects_``.
        Terms on the same factor (``(1 + x || g)``) are uncorrelated by
        construction: their covariance blocks are zero.
    """
    if not est._fitted_terms:
        return {}
    prepared, factor = _prepared_factor(est)
    blocks = prepared.problem.conditional_covariances(factor)
    sigma2 = est.sigma_**2
    out: dict[str, np.ndarray] = {}
    for term, block, fitted in zip(prepared.terms, blocks, est._fitted_terms):
        lam = fitted.lam
        cov = sigma2 * np.einsum("ij,ljk,mk->lim", lam, block, lam)
        frame = est.random_effects_[fitted.factor_name]
        positions = [list(frame.columns).index(c) for c in fitted.columns]
        full = out.setdefault(fitted.factor_name, np.zeros((len(frame), frame.shape[1], frame.shape[1])))
        rows = frame.index.get_indexer(fitted.levels)
        full[np.ix_(rows, positions, positions)] = cov
    return out


def _forward_solve_z(problem, factor, v0: np.ndarray, v_r: np.ndarray | None):
    """w = L_zz^-1 v for v given as the first term's part (k, m0, p0) and the rest (k, q_r).

    L_zz = [[L00, 0], [L_r0, L_rr]] with L_r0 = Lambda_r' A_r0 M0 (never formed).
    """
    if problem.p0 == 1:
        w0 = v0 / factor.L00[None, :, 0, :]
    else:
        w0 = np.stack([np.linalg.solve(factor.L00, r[:, :, None])[:, :, 0] for r in v0])
    w_r = None
    if problem.q_rest:
        rest = problem.rest
        k = v0.shape[0]
        M0w0 = np.einsum("lcd,kld->klc", factor.M0, w0).reshape(k, -1)
        rhs = (v_r.T - rest.lam(factor.lams[1:], rest.cross.apply(M0w0.T), transpose=True))  # (q_r, k)
        w_r = rest.solve_lower(factor.Lrr, rhs).T
    return w0, w_r


def prediction_standard_errors(est, X: np.ndarray, source: np.ndarray, frame) -> np.ndarray:
    """Standard errors of ``est.predict`` (see the module docstring).

    ``X``: the fixed-effects columns without the intercept; ``source``: the
    matrix the terms' ``slope_index`` refers to; ``frame``: the grouping
    factors (None: population-level).
    """
    intercept, names_in = est._fixed_input_names()
    prediction_X = np.column_stack([np.ones(len(X)), X]) if intercept else X
    names = list(est.fixed_effects_cov_.index)
    all_names = (["(Intercept)"] if intercept else []) + names_in
    kept = [all_names.index(name) for name in names]
    x = prediction_X[:, kept]
    if frame is None or not est._fitted_terms:
        V = est.fixed_effects_cov_.to_numpy()
        return np.sqrt(np.einsum("ij,jk,ik->i", x, V, x))

    prepared, factor = _prepared_factor(est)
    problem = prepared.problem
    n = len(X)
    # v = [Lambda' z; x] per row, laid out as the factor's z-rows (first term, rest) and X-rows
    v0 = np.zeros((n, problem.m0, problem.p0)) if problem.m0 else None
    v_r = np.zeros((n, problem.q_rest)) if problem.q_rest else None
    offsets = [0] + [offset for offset, _, _ in problem.rest_layout]
    for t, term in enumerate(est._fitted_terms):
        if any(name not in frame.columns for name in term.factors):
            continue
        codes = lookup_levels(frame, term.factors, term.levels)
        rows = np.flatnonzero(codes >= 0)
        if not len(rows):
            continue
        z = np.ones((len(rows), len(term.columns)))
        for j, column in enumerate(term.slope_index):
            if column is not None:
                z[:, j] = source[rows, column]
        lz = z @ term.lam  # (Lambda' z)' per row
        if t == 0:
            v0[rows, codes[rows], :] = lz
        else:
            p_t = len(term.columns)
            cols = offsets[t] + codes[rows][:, None] * p_t + np.arange(p_t)
            v_r[rows[:, None], cols] = lz
    w0, w_r = _forward_solve_z(problem, factor, v0, v_r)
    p = problem.p
    # w_X = L_XX^-1 (x - L_Xz w_z)
    rhs = x.T - factor.LX0[:p] @ w0.reshape(n, -1).T
    if problem.q_rest:
        rhs -= factor.LXr[:p] @ w_r.T
    w_X = scipy.linalg.solve_triangular(factor.LXX[:p, :p], rhs, lower=True, check_finite=False)
    total = np.sum(w0.reshape(n, -1) ** 2, axis=1) + np.sum(w_X**2, axis=0)
    if problem.q_rest:
        total += np.sum(w_r**2, axis=1)
    return est.sigma_ * np.sqrt(total)
