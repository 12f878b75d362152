"""Parametric bootstrap, as lme4's ``bootMer`` and ``confint(method = "boot")``.

Each replicate draws a response from the fitted model (new random effects
and residuals, :mod:`sklmm._simulate`), refits the model to it with the same
criterion (REML or ML), and records the parameters on lme4's scale:
standard deviations and correlations of the random effects, sigma, then the
fixed effects.  The interval is the percentile interval of ``boot.ci(type =
"perc")``, whose limits interpolate between order statistics on the normal
quantile scale (Davison and Hinkley 1997, eq. 5.8).

Batched refits: only the response changes between replicates, so the
design's cross products are formed once (:class:`ResponseRefitter`); each
replicate replaces the y row of the cross-product blocks (X'Wy, Z'Wy, y'Wy,
formed for all replicates at once by a few matrix products) and optimises
from lme4's ``refit`` start, the fitted theta: by quasi-Newton steps whose
first matrix is the inverse Hessian of the fitted model's objective there
(computed once; the replicates' objectives differ in the response only), or
where those do not apply (near the boundary) by the usual optimiser.

GLMMs (binomial, Poisson): each replicate draws new random effects, then
the response from the family (:class:`~sklmm._inference.simulate.GlmmSimulationModel`),
and is refitted by :func:`sklmm._engine.pirls.fit_glmm` with the fit's
``nagq``; PIRLS reweights the rows at every step, so nothing of the cross
products carries over.  The parameters are the random effects' standard
deviations and correlations (no sigma), then the fixed effects.

Reproducibility: one :class:`numpy.random.SeedSequence` made from
``random_state`` spawns one child seed per replicate, so the replicates do
not depend on how they are split between ``n_jobs`` workers.  lme4 uses R's
random numbers, so its replicates (and intervals) differ from these by
Monte Carlo error only.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy.stats import norm

from .._model import parameters as _parameters
from .._engine.blocks import term_transpose_matrix as _term_transpose_matrix
from .._engine.fit import SINGULAR_TOLERANCE, blas_threads_for, optimize, prepare
from .._engine.optimize import inverse_hessian_at, optimize_near
from .simulate import as_seed_sequence, simulation_model


@dataclass
class BootstrapResult:
    """Replicates of a parametric bootstrap.

    Attributes
    ----------
    estimates : Series
        The parameters of the fitted model (lme4's ``t0``).
    replicates : DataFrame
        One row per replicate, one column per parameter; a failed refit is
        a row of NaN.
    n_failed : int
        Refits that raised an error.
    n_singular : int
        Refits that ended on the boundary (lme4 reports these as messages).
    n_not_converged : int
        Refits whose optimiser did not meet its tolerance.
    messages : list of str
        The counts above in words (lme4 reports them as messages).

    Examples
    --------
    >>> from sklmm import MixedLinearRegressor, bootstrap
    >>> from sklmm.datasets import load_dyestuff
    >>> X, y, groups = load_dyestuff(return_X_y_groups=True)
    >>> model = MixedLinearRegressor(random_effects="(1 | Batch)").fit(X, y, groups=groups)
    >>> result = bootstrap(model, n_boot=50, random_state=0)
    >>> list(result.replicates.columns)
    ['sd_(Intercept)|Batch', 'sigma', '(Intercept)']
    >>> bool(result.replicates["(Intercept)"].std() > 0)
    True
    """

    estimates: pd.Series
    replicates: pd.DataFrame
    n_failed: int = 0
    n_singular: int = 0
    n_not_converged: int = 0
    messages: list = field(default_factory=list)

    def percentile_intervals(self, level: float = 0.95) -> pd.DataFrame:
        """``boot.ci(type = "perc")`` limits per parameter: a frame with ``lower`` and ``upper``.

        Examples
        --------
        >>> import numpy as np, pandas as pd
        >>> result = BootstrapResult(pd.Series({"a": 0.0}), pd.DataFrame({"a": np.arange(1.0, 40.0)}))
        >>> result.percentile_intervals()  # 39 replicates: the 1st and 39th order statistics
           lower  upper
        a    1.0   39.0
        """
        alpha = np.array([(1.0 - level) / 2.0, (1.0 + level) / 2.0])
        rows = [_norm_inter(self.replicates[name].to_numpy(), alpha) for name in self.replicates.columns]
        return pd.DataFrame(rows, index=self.replicates.columns.copy(), columns=["lower", "upper"], dtype=float)


def _norm_inter(t: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The ``boot`` package's ``norm.inter``: order statistics interpolated on the normal scale.

    Examples
    --------
    >>> import numpy as np
    >>> _norm_inter(np.arange(1.0, 40.0), np.array([0.025, 0.975])).tolist()
    [1.0, 39.0]
    """
    t = np.sort(t[np.isfinite(t)])
    R = len(t)
    if R == 0:
        return np.full(len(alpha), np.nan)
    rk = (R + 1) * alpha
    k = np.trunc(rk).astype(int)
    out = np.empty(len(alpha))
    for i, (ki, rki, a) in enumerate(zip(k, rk, alpha)):
        if ki == rki and 1 <= ki <= R:
            out[i] = t[ki - 1]
        elif ki <= 0:
            out[i] = t[0]
        elif ki >= R:
            out[i] = t[R - 1]
        else:
            z, z_k, z_k1 = norm.ppf(a), norm.ppf(ki / (R + 1)), norm.ppf((ki + 1) / (R + 1))
            tk, tk1 = t[ki - 1], t[ki]
            out[i] = tk + (z - z_k) / (z_k1 - z_k) * (tk1 - tk)
    return out


class ResponseRefitter:
    """Refit one model to new responses, reusing the design's cross products.

    The cross products of [Z X y] depend on y only through their y row:
    X'Wy, Z'Wy and y'Wy.  Everything else (Z'WZ, X'WZ, X'WX, the rest
    blocks) is formed once, by :func:`prepare` on the training data; for
    each new response the y row is recomputed (for a batch of responses in
    a few matrix products) and swapped into a shallow copy of the problem.

    Parameters
    ----------
    data : TrainingData
        The model's training data (its y is replaced).
    reml : bool

    Examples
    --------
    >>> from sklmm import MixedLinearRegressor
    >>> from sklmm.datasets import load_dyestuff
    >>> X, y, groups = load_dyestuff(return_X_y_groups=True)
    >>> model = MixedLinearRegressor(random_effects="(1 | Batch)").fit(X, y, groups=groups)
    >>> refitter = ResponseRefitter(model._training_data, reml=True)
    >>> theta, sigma, beta, singular, converged = refitter.refit(y.to_numpy(), model.theta_, 1000)
    >>> bool(abs(sigma - model.sigma_) < 1e-6)
    True
    """

    def __init__(self, data, reml: bool):
        weights = data.weights
        self.rows = None if weights is None or not np.any(weights == 0) else weights > 0
        prepared = prepare(data, reml, warn=False)
        self.problem = problem = prepared.problem
        self.weights = prepared.weights
        self.design = prepared.design  # (n, p) kept fixed-effect columns
        # prepare centres y (its weighted mean goes into the intercept) when
        # the intercept is estimated; the replicates are centred the same way.
        self.centre = bool(data.fit_intercept) and 0 in set(prepared.kept.tolist())
        terms = problem.terms
        self.Zt0 = _term_transpose_matrix(terms[0]) if terms else None
        self.Zt_rest = None
        if len(terms) > 1:
            import scipy.sparse as sp

            self.Zt_rest = sp.vstack([_term_transpose_matrix(t) for t in terms[1:]], format="csr")
        self.lower = problem.lower_bounds()
        self.scale = problem.theta_scales() if problem.n_theta else None  # depends on the design only
        self._near = None  # (theta0, inverse Hessian there) for the replicates' quasi-Newton start

    def near_start(self, theta0: np.ndarray):
        """(scale, inverse Hessian of the fitted model's objective at theta0) for :func:`optimize_near`, or None.

        The replicates' objectives differ from the fitted model's in the
        response only, so its curvature at its optimum is a good first
        quasi-Newton matrix for every replicate (computed once: 2 n_theta
        gradient evaluations).
        """
        if not self.problem.n_theta:
            return None
        theta0 = np.asarray(theta0, dtype=np.float64)
        if self._near is None or not np.array_equal(self._near[0], theta0):
            with warnings.catch_warnings(), blas_threads_for(self.problem):
                warnings.simplefilter("ignore")
                inverse = inverse_hessian_at(self.problem.objective_and_gradient, theta0, self.lower, self.scale)
            self._near = (theta0.copy(), inverse)
        return None if self._near[1] is None else (self.scale, self._near[1])

    def _y_rows(self, Y: np.ndarray):
        """The y rows of the cross products for responses Y (n, k), centred as ``prepare`` does."""
        w = self.weights
        if self.centre:
            offsets = (Y.mean(axis=0) if w is None else (w @ Y) / w.sum())
            Y = Y - offsets
        else:
            offsets = np.zeros(Y.shape[1])
        WY = Y if w is None else Y * w[:, None]
        XtWY = self.design.T @ WY  # (p, k)
        yWy = np.einsum("ik,ik->k", Y, WY)
        Z0WY = None if self.Zt0 is None else np.asarray(self.Zt0 @ WY)
        ZrWY = None if self.Zt_rest is None else np.asarray(self.Zt_rest @ WY)
        return offsets, XtWY, yWy, Z0WY, ZrWY

    def _problem_for(self, offset, XtWy, yWy, Z0Wy, ZrWy):
        """A shallow copy of the problem with the y rows replaced."""
        base = self.problem
        p = base.p
        problem = copy.copy(base)
        problem.forget()  # the base's factor and estimates are of another response
        problem.y_offset = float(offset)
        AXX = base.AXX.copy()
        AXX[p, :p] = AXX[:p, p] = XtWy
        AXX[p, p] = yWy
        problem.AXX = AXX
        if base.terms:
            AX0 = base.AX0.copy()
            AX0[p] = Z0Wy.reshape(base.m0, base.p0)
            problem.AX0 = AX0
        if base.q_rest:
            rest = copy.copy(base.rest)
            AXr = base.rest.AXr.copy()
            AXr[p] = ZrWy
            rest.AXr = AXr
            problem.rest = rest
        return problem

    def problems(self, Y: np.ndarray):
        """One problem per column of Y (n_rows_of_data, k), built from one batch of products."""
        if self.rows is not None:
            Y = Y[self.rows]
        offsets, XtWY, yWy, Z0WY, ZrWY = self._y_rows(Y)
        for i in range(Y.shape[1]):
            yield self._problem_for(
                offsets[i], XtWY[:, i], yWy[i],
                None if Z0WY is None else Z0WY[:, i], None if ZrWY is None else ZrWY[:, i],
            )

    def refit(self, y: np.ndarray, theta0: np.ndarray, max_iter: int):
        """:func:`refit` for one response y (of the training data's length)."""
        return _refit_problem(next(self.problems(np.asarray(y, dtype=np.float64)[:, None])), self.lower, theta0, max_iter)


def _refit_problem(problem, lower, theta0: np.ndarray, max_iter: int, near=None):
    """Optimise a problem from theta0, lme4's ``refit``; see :func:`refit`.

    ``near``: ``(scale, inverse Hessian)`` from :meth:`ResponseRefitter.near_start`:
    quasi-Newton steps from theta0 first (:func:`optimize_near`), the usual
    optimiser where they do not apply.
    """
    if problem.n_theta:
        result = None
        if near is not None:
            with blas_threads_for(problem):
                result = optimize_near(problem.objective_and_gradient, theta0, lower, near[0], near[1], max_iter)
        # No derivative-free second opinion (optimize_theta's): it costs about
        # 50 refits; a singular optimum is checked from a second start instead.
        if result is None:
            result = optimize(problem, max_iter, theta0, second_opinion=False)
        singular = bool(np.any(result.theta[lower == 0.0] < SINGULAR_TOLERANCE))
        if singular:
            other = optimize(problem, max_iter, second_opinion=False)  # fit_lmm's start
            if other.objective < result.objective:
                result = other
        theta, converged = result.theta, result.converged
    else:
        theta, converged = np.empty(0), True
    with blas_threads_for(problem):  # small triangular solves: see fit_prepared
        estimates = problem.estimates(theta)  # the optimiser's last point, most often
        sigma = problem.sigma(estimates.pwrss)
        beta = estimates.beta
    singular = bool(np.any(theta[lower == 0.0] < SINGULAR_TOLERANCE)) if problem.n_theta else False
    return theta, sigma, beta, singular, converged


def refit(data, reml: bool, theta0: np.ndarray, max_iter: int):
    """Refit to new data starting from theta0, as lme4's ``refit``.

    lme4's ``bootMer`` refits from the original fit's theta.  When that
    ends on the boundary, the fit is repeated from ``fit_lmm``'s start and
    the better optimum kept (a boundary optimum reached from one start is
    the one most likely to be a local one).

    Returns
    -------
    theta, sigma, beta (the estimated fixed effects), singular, converged
    """
    prepared = prepare(data, reml, warn=False)
    problem = prepared.problem
    return _refit_problem(problem, problem.lower_bounds(), theta0, max_iter)


def _parameters_of(theta, sigma, beta, sizes) -> np.ndarray:
    return np.concatenate([_parameters.theta_to_sdcor(theta, sizes, sigma), beta])


def _run_replicates(data, sim_model, seeds, reml: bool, theta0, max_iter: int, sizes, one_thread: bool) -> list:
    """Refit to one simulated response per seed; (parameters or None, singular, converged)."""
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    out = []
    with threadpool_limits(limits=1, user_api="blas") if one_thread else nullcontext():
        refitter = ResponseRefitter(data, reml)
        for batch in range(0, len(seeds), _BATCH):
            chunk = seeds[batch : batch + _BATCH]
            # one draw per seed (its own generator), then the y rows of all in one product
            Y = np.column_stack([sim_model.draw(np.random.default_rng(seed)) for seed in chunk])
            if data.offset is not None:
                Y = Y - data.offset[:, None]  # the training data hold the response minus the offset
            near = refitter.near_start(theta0)
            for problem in refitter.problems(Y):
                out.append(_replicate(problem, refitter.lower, theta0, max_iter, sizes, near))
    return out


#: Responses whose cross products are formed together (bounds the n x k buffer).
_BATCH = 64


def _run_glmm_replicates(data, sim_model, seeds, family, nagq: int, max_iter: int, sizes, one_thread: bool) -> list:
    """A GLMM's replicates: one draw per seed (its own generator), each refitted by :func:`fit_glmm`.

    PIRLS reweights the rows at every step, so no cross products carry over
    between responses (unlike :class:`ResponseRefitter`): each replicate is
    a fit of the simulated response, as lme4's ``refit``.
    """
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    out = []
    with threadpool_limits(limits=1, user_api="blas") if one_thread else nullcontext():
        for seed in seeds:
            y = sim_model.draw(np.random.default_rng(seed))
            out.append(_glmm_replicate(data, y, family, nagq, max_iter, sizes))
    return out


def _glmm_replicate(data, y: np.ndarray, family, nagq: int, max_iter: int, sizes):
    """One GLMM replicate's refit, with warnings silenced (they are counted)."""
    from dataclasses import replace

    from .._engine.pirls import fit_glmm

    y = np.where(np.isfinite(y), y, 0.0)  # rows of weight 0 (NaN draws) are left out of the fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fit = fit_glmm(replace(data, y=y), family, nagq=nagq, max_evaluations=max_iter)
        except (ValueError, np.linalg.LinAlgError, ArithmeticError):
            return None, False, False
    params = np.concatenate([_parameters.theta_to_sdcor(fit.theta, sizes, 1.0)[:-1], fit.beta[fit.kept]])
    return params, fit.singular, fit.converged


def _replicate(problem, lower, theta0, max_iter: int, sizes, near=None):
    """One replicate's refit, with warnings silenced (they are counted)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            theta, sigma, beta, singular, converged = _refit_problem(problem, lower, theta0, max_iter, near)
        except (ValueError, np.linalg.LinAlgError, ArithmeticError):  # ArithmeticError: no finite objective
            return None, False, False
    return _parameters_of(theta, sigma, beta, sizes), singular, converged


def _small(est) -> bool:
    """Whether the model's random effects beyond the first term are few (see _profile.small_problem_threads)."""
    rest = sum(len(t.levels) * len(t.columns) for t in est._fitted_terms[1:])
    return rest <= 1000


def parametric_bootstrap(est, n_boot: int = 500, random_state=None, n_jobs=None) -> BootstrapResult:
    """Simulate from the fitted model and refit, ``n_boot`` times.

    Parameters
    ----------
    est : MixedLinearRegressor, MixedGLMRegressor or MixedLogisticRegression
        A fitted model (with its training data: not unpickled).
    n_boot : int, default=500
        Number of replicates (lme4's ``nsim``).
    random_state : int, SeedSequence, Generator or None
        Seed; the replicates are the same for any ``n_jobs``.
    n_jobs : int or None
        Parallel workers (joblib; ``None`` is 1, ``-1`` all cores).

    Returns
    -------
    BootstrapResult

    Examples
    --------
    >>> from sklmm import MixedLinearRegressor, bootstrap
    >>> from sklmm.datasets import load_dyestuff
    >>> X, y, groups = load_dyestuff(return_X_y_groups=True)
    >>> model = MixedLinearRegressor(random_effects="(1 | Batch)").fit(X, y, groups=groups)
    >>> result = bootstrap(model, n_boot=20, random_state=0)
    >>> result.replicates.shape
    (20, 3)
    """
    from functools import partial

    from .confint import parameter_index

    data = est._require_training_data("the parametric bootstrap")
    sizes = _parameters.term_sizes(est._fitted_terms)
    variance, fixed = parameter_index(est)
    names = variance + fixed
    sdcor = _parameters.theta_to_sdcor(est.theta_, sizes, est.sigma_)[: len(variance)]  # a GLMM: no sigma
    estimates = np.concatenate([sdcor, est.fixed_effects_["estimate"].to_numpy()])
    if getattr(est, "family_", None) is not None:  # a GLMM: draws from its family, refits by PIRLS
        from .._model.families import make_family
        from .simulate import glmm_simulation_model

        sim_model = glmm_simulation_model(est, data)
        family = make_family(est.family_, est.link_)
        run = partial(_run_glmm_replicates, data, sim_model, family=family, nagq=est._fit_result.nagq,
                      max_iter=est.max_iter, sizes=sizes, one_thread=_small(est))
    else:
        sim_model = simulation_model(data, est.coef_, est.intercept_, est._fitted_terms, est.sigma_)
        run = partial(_run_replicates, data, sim_model, reml=est.reml, theta0=est.theta_,
                      max_iter=est.max_iter, sizes=sizes, one_thread=_small(est))
    seeds = as_seed_sequence(random_state).spawn(n_boot)
    workers = 1 if n_jobs is None else int(n_jobs)
    if workers < 0:
        import os

        workers = max(1, (os.cpu_count() or 1) + 1 + workers)
    if workers > 1:
        chunks = [seeds[i::workers] for i in range(workers)]
        runs = Parallel(n_jobs=workers)(delayed(run)(chunk) for chunk in chunks)
    else:
        runs = [run(seeds)]
    # put the replicates back in seed order: chunk c holds seeds c, c + workers, ...
    ordered = [None] * n_boot
    for c, run in enumerate(runs):
        for i, item in enumerate(run):
            ordered[c + i * len(runs)] = item
    values = np.full((n_boot, len(names)), np.nan)
    n_failed = n_singular = n_not_converged = 0
    for i, (params, singular, converged) in enumerate(ordered):
        if params is None:
            n_failed += 1
            continue
        values[i] = params
        n_singular += singular
        n_not_converged += not converged
    messages = []
    if n_singular:
        messages.append(f"{n_singular} of {n_boot} refits were singular (boundary) fits")
    if n_not_converged:
        messages.append(f"{n_not_converged} of {n_boot} refits did not meet the optimiser's tolerance")
    if n_failed:
        messages.append(f"{n_failed} of {n_boot} refits failed; they are left out of the intervals")
        warnings.warn(messages[-1], RuntimeWarning, stacklevel=2)
    return BootstrapResult(
        estimates=pd.Series(estimates, index=pd.Index(names, dtype=object)),
        replicates=pd.DataFrame(values, columns=pd.Index(names, dtype=object)),
        n_failed=n_failed,
        n_singular=n_singular,
        n_not_converged=n_not_converged,
        messages=messages,
    )

