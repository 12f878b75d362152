"""Profile-likelihood confidence intervals, as lme4's ``profile`` and ``confint(method = "profile")``.

lme4 profiles the maximum-likelihood deviance, also for a REML fit (which
it refits with ML first; lme4 issue #838), as a function of the parameters
on the "sdcor" scale (:mod:`sklmm._parameters`) and of the fixed effects.
For each parameter psi_k the signed root deviance is::

    zeta_k(x) = sign(x - psi_k_hat) sqrt(D_k(x) - D_hat)

with ``D_k(x)`` the deviance minimised over every other parameter with
psi_k fixed at x, and ``D_hat`` the ML deviance.  The interval at level
``1 - alpha`` is where ``zeta_k = -/+ qnorm(1 - alpha / 2)``; where the
profile reaches a bound first (a standard deviation of 0, a correlation of
+/-1) the bound is the limit, as in lme4.

lme4 tabulates zeta on a grid and interpolates with splines; here each
limit is found by bracketing and Brent's method on zeta itself, so the
limits are those of the exact profile (lme4's spline agrees to about 1e-4
relative on the reference cases).

A binomial or Poisson GLMM (:class:`_GlmmProfiler`) is profiled as lme4
profiles a glmer fit: its deviance is the fit's Laplace (or adaptive
quadrature) objective of (sdcor parameters, beta), with no sigma, and with
one parameter held it is minimised over all the others, the fixed effects
included (lme4 holds a fixed effect as an offset and refits; the minimum is
the same).  The search for the limits is the linear model's.

The linear model's deviances (beta profiled out where it is not the parameter)::

    variance parameters:  D(theta, sigma) = ldL2 - ldW + n log(2 pi sigma^2) + pwrss / sigma^2
    fixed effect j = v:   D_j(theta, v) = ldL2 - ldW + n (1 + log(2 pi r / n)),
                          r = pwrss + (v - beta_hat_j)^2 / [(R_X' R_X)^-1]_jj

(lme4's ``devfun2`` and its refits with the fixed effect as an offset);
the second holds because pwrss is a quadratic in beta with Hessian
R_X' R_X, and sigma is then profiled out analytically.  Both use one set of
cross products, so the prior weights are honoured (lme4 1.1-31's profiles
of weighted fits are wrong, lme4 issue #192).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.linalg
from scipy.optimize import Bounds, brentq, minimize
from scipy.stats import norm

from .._model import parameters as _parameters
from .._engine.deviance import ProfiledDeviance
from .._engine.fit import prepare
from .._engine.optimize import optimize_theta

_LOG_2PI = np.log(2.0 * np.pi)
#: Relative accuracy of a limit (Brent's method on zeta).
_XTOL = 1e-7
#: Steps a search for one limit may take before it gives up.
_MAX_STEPS = 60
#: Finite-difference step of the inner minimisation (on the scaled parameters).
#: The deviance carries rounding errors of about 1e-13 of its size, so a
#: step of 1e-8 (L-BFGS-B's default) gives gradients dominated by noise.
_FD_STEP = 1e-6
#: Probe steps off a zero bound in the inner minimisation (relative to the scale).
_PROBES = (1e-3, 1e-1)


@dataclass
class MLFit:
    """The maximum-likelihood fit that profiles start from."""

    problem: ProfiledDeviance
    theta: np.ndarray
    sigma: float
    beta: np.ndarray  # the estimated (kept) fixed effects
    std_error: np.ndarray
    deviance: float
    sizes: list
    names: list  # variance parameter names, then fixed-effect names


def ml_fit(est) -> MLFit:
    """The estimator's model refitted by ML (lme4's ``refitML``), started from its theta."""
    data = est._require_training_data("confint(method='profile')")
    prepared = prepare(data, reml=False, warn=False)
    problem = prepared.problem
    theta = np.asarray(est.theta_, dtype=float)
    if problem.n_theta:
        result = optimize_theta(
            problem.objective, problem.objective_and_gradient, theta, problem.lower_bounds(), 10_000,
            scale=problem.theta_scales(), partners=problem.column_partners(),
        )
        theta = result.theta
    factor = problem.factorize(theta)
    ldL2, ldRX2, pwrss = problem.log_determinants(factor)
    sigma = float(np.sqrt(pwrss / problem.n))
    beta, _ = problem.solve(factor)
    vcov = problem.fixed_effects_cov(factor, sigma)
    sizes = _parameters.term_sizes(est._fitted_terms)
    fixed = [prepared.fixed_names[j] for j in prepared.kept]
    return MLFit(
        problem=problem,
        theta=theta,
        sigma=sigma,
        beta=beta,
        std_error=np.sqrt(np.diag(vcov)),
        deviance=problem.criterion(ldL2, ldRX2, pwrss, reml=False),
        sizes=sizes,
        names=_parameters.parameter_names(est._fitted_terms) + fixed,
    )


class _Profiler:
    """zeta functions and their limits for one ML fit."""

    def __init__(self, fit: MLFit):
        self.fit = fit
        self.problem = fit.problem
        self.n = fit.problem.n
        self.p = fit.problem.p
        self.psi_hat = _parameters.theta_to_sdcor(fit.theta, fit.sizes, fit.sigma)
        self.lower, self.upper = _parameters.bounds(fit.sizes)
        # scale of each variance parameter for the inner minimisation
        scale = np.where(self.psi_hat > 0, self.psi_hat, fit.sigma)
        scale[_parameters.is_correlation(fit.sizes)] = 1.0
        self.scale = scale
        self.theta_lower = fit.problem.lower_bounds()

    # -- deviances -------------------------------------------------------------

    def deviance_sdcor(self, psi: np.ndarray) -> float:
        """ML deviance at the sdcor parameters (sigma last), beta profiled out."""
        sigma = psi[-1]
        if not sigma > 0:
            return np.inf
        theta = _parameters.sdcor_to_theta(psi, self.fit.sizes)
        try:
            factor = self.problem.factorize(theta)
        except np.linalg.LinAlgError:
            return np.inf
        ldL2, _, pwrss = self.problem.log_determinants(factor)
        value = ldL2 - self.problem.ldW + pwrss / sigma**2 + self.n * (_LOG_2PI + 2.0 * np.log(sigma))
        return float(value) if np.isfinite(value) else np.inf

    def deviance_fixed(self, j: int, value: float, theta: np.ndarray) -> float:
        """ML deviance at theta with fixed effect j equal to value (sigma and the other betas profiled out)."""
        try:
            factor = self.problem.factorize(theta)
        except np.linalg.LinAlgError:
            return np.inf
        ldL2, _, pwrss = self.problem.log_determinants(factor)
        p = self.p
        RX = factor.LXX[:p, :p]
        beta = self.problem.fixed_effects(factor)
        RXinv = scipy.linalg.solve_triangular(RX, np.eye(p), lower=True, check_finite=False)
        c_jj = float(np.sum(RXinv[:, j] ** 2))
        r = pwrss + (value - beta[j]) ** 2 / c_jj
        result = ldL2 - self.problem.ldW + self.n * (1.0 + _LOG_2PI + np.log(r / self.n))
        return float(result) if np.isfinite(result) else np.inf

    # -- zeta --------------------------------------------------------------------

    def _setup(self, k: int):
        """What profiling parameter k needs: (centre, lower, upper, scale, start, objective).

        ``objective(x, y)`` is the deviance minus the fit's with parameter k
        at x and the other free parameters at y (bounded by lower and upper,
        on the scale ``scale``, started from ``start``).
        """
        n_var = len(self.psi_hat)
        base = self.fit.deviance
        if k < n_var:
            free = np.array([i for i in range(n_var) if i != k], dtype=int)
            centre = self.psi_hat[k]
            lower = self.lower[free].copy()
            if len(free) and free[-1] == n_var - 1:  # sigma is free: keep it positive
                lower[-1] = max(lower[-1], 1e-8 * self.fit.sigma)
            upper = self.upper[free]
            scale = self.scale[free]
            start0 = self.psi_hat[free]

            def objective(x, y):
                psi = np.empty(n_var)
                psi[free] = y
                psi[k] = x
                return self.deviance_sdcor(psi) - base
        else:
            j = k - n_var
            centre = self.fit.beta[j]
            lower = self.theta_lower
            upper = np.full_like(lower, np.inf)
            scale = np.ones_like(lower)
            start0 = self.fit.theta

            def objective(x, y):
                return self.deviance_fixed(j, x, y) - base

        return centre, lower, upper, scale, start0, objective

    def zeta_function(self, k: int):
        """zeta_k as a function of the parameter value (k indexes ``fit.names``), with warm starts."""
        centre, lower, upper, scale, start0, objective = self._setup(k)
        base = self.fit.deviance
        solutions: dict[float, np.ndarray] = {}
        cache: dict[float, float] = {}

        def zeta(x: float) -> float:
            x = float(x)
            if x in cache:
                return cache[x]
            if solutions:
                nearest = min(solutions, key=lambda s: abs(s - x))
                start = solutions[nearest]
            else:
                start = start0
            if len(start):
                y, value = _minimize(lambda y: objective(x, y), start, lower, upper, scale)
                solutions[x] = y
            else:
                value = objective(x, start)
            if value < -1e-6 * max(1.0, abs(base)):
                warnings.warn(
                    f"profiling {self.fit.names[k]} found a deviance {-value:.3g} lower than the fit's: "
                    "the fit may not have reached its optimum",
                    RuntimeWarning,
                    stacklevel=2,
                )
            result = float(np.sign(x - centre) * np.sqrt(max(value, 0.0)))
            cache[x] = result
            return result

        return zeta, centre

    def limits(self, k: int, z: float) -> tuple[float, float]:
        """Lower and upper limits of parameter k where zeta = -/+ z."""
        zeta, centre = self.zeta_function(k)
        lo, hi, step = self._search(k, centre)
        name = self.fit.names[k]
        return (
            _limit(zeta, centre, -1.0, lo, hi, z, step, name),
            _limit(zeta, centre, +1.0, lo, hi, z, step, name),
        )

    def _search(self, k: int, centre: float) -> tuple[float, float, float]:
        """The range of parameter k and the first step of the search for its limits."""
        n_var = len(self.psi_hat)
        if k < n_var:
            lo, hi = self.lower[k], self.upper[k]
            if k == n_var - 1:
                lo = 0.0
            if _parameters.is_correlation(self.fit.sizes)[k]:
                step = 0.01
            else:
                step = 0.01 * centre if centre > 0 else 1e-3 * self.fit.sigma
        else:
            lo, hi = -np.inf, np.inf
            step = 0.5 * self.fit.std_error[k - n_var]
        return lo, hi, step


@dataclass
class GlmmProfileFit:
    """A GLMM fit that profiles start from (no refit: a GLMM's criterion is already the likelihood)."""

    problem: object  # sklmm._engine.pirls.GlmmProblem
    nagq: int
    theta: np.ndarray
    beta: np.ndarray  # the estimated (kept) fixed effects
    std_error: np.ndarray
    deviance: float  # the objective at (theta, beta), as the profile computes it
    sizes: list
    names: list  # variance parameter names (no sigma), then fixed-effect names
    sigma: float = 1.0


def glmm_profile_fit(est) -> GlmmProfileFit:
    """The GLMM's problem at its estimates (lme4's ``profile`` of a glmer fit uses the fit as it is)."""
    from .._engine.pirls import prepare_glmm
    from .._model.families import make_family

    fit = est._fit_result
    if fit.nagq == 0:
        raise ValueError(
            "confint(method='profile') needs a fit of the Laplace (nagq=1) or quadrature (nagq > 1) "
            "likelihood; this model was fitted with nagq=0 (beta not optimised with theta, as lme4's "
            "nAGQ = 0): refit with nagq=1, or use method='wald' or 'bootstrap'"
        )
    data = est._require_training_data("confint(method='profile')")
    prepared = prepare_glmm(data, make_family(est.family_, est.link_), warn=False)
    beta = fit.beta[prepared.kept]
    profile_fit = GlmmProfileFit(
        problem=prepared.problem,
        nagq=int(fit.nagq),
        theta=np.asarray(fit.theta, dtype=float),
        beta=beta,
        std_error=np.sqrt(np.diag(fit.vcov)),
        deviance=np.nan,
        sizes=_parameters.term_sizes(est._fitted_terms),
        names=_parameters.parameter_names(est._fitted_terms)[:-1] + [prepared.fixed_names[j] for j in prepared.kept],
    )
    return profile_fit


class _GlmmProfiler(_Profiler):
    """zeta functions of a GLMM: the Laplace (or quadrature) deviance over (sdcor, beta).

    As lme4's ``profile`` of a glmer fit: with one parameter held, the
    deviance is minimised over all the others, the fixed effects included
    (lme4 refits with the held fixed effect as an offset; here it is held
    in the same parameter vector).  Each deviance is one PIRLS for the
    conditional modes (warm-started from the previous one), then the
    Laplace or adaptive Gauss-Hermite objective of the fit's ``nagq``.
    There is no sigma: the standard deviations are those of the random
    effects themselves (lme4's ``sigma()`` is 1).
    """

    def __init__(self, fit: GlmmProfileFit):
        self.fit = fit
        self.problem = fit.problem
        self.n_var = len(fit.names) - len(fit.beta)
        self.psi_hat = _parameters.theta_to_sdcor(fit.theta, fit.sizes, 1.0)[:-1]
        lower, upper = _parameters.bounds(fit.sizes)
        self.lower = np.concatenate([lower[:-1], np.full(len(fit.beta), -np.inf)])
        self.upper = np.concatenate([upper[:-1], np.full(len(fit.beta), np.inf)])
        scale = np.where(self.psi_hat > 0, self.psi_hat, 1.0)
        scale[_parameters.is_correlation(fit.sizes)[:-1]] = 1.0
        self.scale = np.concatenate([scale, np.where(fit.std_error > 0, fit.std_error, 1.0)])
        self.estimates = np.concatenate([self.psi_hat, fit.beta])
        self._u = None
        fit.deviance = self.deviance(self.estimates)

    def deviance(self, params: np.ndarray) -> float:
        """The fit's objective at (sdcor parameters, fixed effects); beta and u are not profiled out."""
        theta = _parameters.sdcor_to_theta(np.append(params[: self.n_var], 1.0), self.fit.sizes)
        beta = params[self.n_var :]
        problem = self.problem
        u = problem.zero_u() if self._u is None else self._u
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            try:
                state = problem.pirls(theta, beta, u, joint=False)
                value = problem.objective(state, theta, self.fit.nagq)
            except (np.linalg.LinAlgError, FloatingPointError, ValueError):
                return np.inf
        if not np.isfinite(value):
            return np.inf
        self._u = state.u
        return float(value)

    def _setup(self, k: int):
        free = np.array([i for i in range(len(self.estimates)) if i != k], dtype=int)
        base = self.fit.deviance

        def objective(x, y):
            params = np.empty(len(self.estimates))
            params[free] = y
            params[k] = x
            return self.deviance(params) - base

        return self.estimates[k], self.lower[free], self.upper[free], self.scale[free], self.estimates[free], objective

    def _search(self, k: int, centre: float) -> tuple[float, float, float]:
        if k >= self.n_var:
            return -np.inf, np.inf, 0.5 * self.scale[k]
        if _parameters.is_correlation(self.fit.sizes)[k]:
            return self.lower[k], self.upper[k], 0.01
        return self.lower[k], self.upper[k], 0.01 * centre if centre > 0 else 1e-3


def _minimize(f, x0: np.ndarray, lower: np.ndarray, upper: np.ndarray, scale: np.ndarray):
    """Bounded minimisation (L-BFGS-B, finite-difference gradient) on a scaled copy of x.

    A coordinate that ends at a lower bound of zero is probed at small
    positive values: the deviance depends on a standard deviation (or on a
    diagonal element of theta) only through its square, so its gradient
    vanishes at zero even where moving off zero lowers the deviance.
    """
    lo, hi = lower / scale, upper / scale

    def fy(y):
        return f(y * scale)

    y = np.clip(np.asarray(x0, dtype=float) / scale, lo, hi)
    best_y, best = y, fy(y)
    for _ in range(4):
        result = minimize(
            fy, y, method="L-BFGS-B", bounds=Bounds(lo, hi),
            options={"maxiter": 1000, "ftol": 1e-10, "gtol": 1e-5, "eps": _FD_STEP},
        )
        if result.fun <= best:
            best_y, best = result.x, float(result.fun)
        restart = None
        for i in np.flatnonzero((lo == 0.0) & (best_y < 1e-4)):
            for step in _PROBES:
                trial = best_y.copy()
                trial[i] = step
                value = fy(trial)
                if value < best - 1e-10 * max(1.0, abs(best)):
                    restart = trial
                    break
            if restart is not None:
                break
        if restart is None:
            break
        y = restart
    return best_y * scale, best


def _limit(zeta, centre: float, direction: float, lo: float, hi: float, z: float, step: float, name: str) -> float:
    """Where ``direction * zeta(x) = z``, searching from the estimate in ``direction``.

    Steps outwards, each step extrapolating zeta linearly (at most 20 times
    the previous step), until zeta passes z, then Brent's method between
    the last two points.  If the search reaches the parameter's bound
    first, the bound is the limit.
    """
    bound = hi if direction > 0 else lo
    if centre == bound or (direction < 0 and centre <= lo) or (direction > 0 and centre >= hi):
        return float(bound)
    x_prev, g_prev = centre, 0.0
    x = float(np.clip(centre + direction * step, lo, hi))
    for _ in range(_MAX_STEPS):
        g = direction * zeta(x)
        if g >= z:
            tol = _XTOL * max(abs(x), abs(x_prev), step)
            return float(brentq(lambda t: direction * zeta(t) - z, x_prev, x, xtol=tol, rtol=1e-12))
        if x == bound:
            return float(bound)
        dx = abs(x - x_prev)
        slope = (g - g_prev) / dx
        new_step = 2.0 * dx if not slope > 0 else float(np.clip(1.2 * (z - g) / slope, 0.5 * dx, 20.0 * dx))
        x_prev, g_prev = x, g
        x = float(np.clip(x + direction * new_step, lo, hi))
    warnings.warn(f"the profile of {name} did not reach the confidence limit; it is reported as NaN", RuntimeWarning, stacklevel=3)
    return np.nan


def small_problem_threads(problem: ProfiledDeviance):
    """One BLAS thread while evaluating a small model many times over.

    Each evaluation of a small model works on matrices of a few dozen rows,
    where OpenBLAS's threads cost more than they save (measured: a
    sleepstudy fit takes 7x longer with two threads on a busy 2-core
    machine).  Models with a dense block of more than 1000 random effects
    keep the default.
    """
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    q_rest = getattr(problem, "template", problem).q_rest  # a GLMM's problem: its linear template
    return threadpool_limits(limits=1, user_api="blas") if q_rest <= 1000 else nullcontext()


def _limits_of(profiler: _Profiler, indices: list[int], z: float) -> list[tuple[float, float]]:
    with small_problem_threads(profiler.problem):
        return [profiler.limits(k, z) for k in indices]


def profile_confint(est, level: float = 0.95, parm=None, n_jobs=None) -> pd.DataFrame:
    """Profile-likelihood intervals for the parameters named by ``parm`` (all by default).

    See the module docstring.  Returns a frame indexed by parameter, with
    columns ``lower`` and ``upper``.  ``n_jobs`` profiles parameters in
    parallel (joblib).

    Examples
    --------
    >>> from sklmm import MixedLinearRegressor
    >>> from sklmm.datasets import load_dyestuff
    >>> X, y, groups = load_dyestuff(return_X_y_groups=True)
    >>> model = MixedLinearRegressor(random_effects="(1 | Batch)").fit(X, y, groups=groups)
    >>> profile_confint(model).round(2)  # lme4: 12.20 84.06 / 38.23 67.66 / 1486.45 1568.55
                            lower    upper
    sd_(Intercept)|Batch    12.20    84.06
    sigma                   38.23    67.66
    (Intercept)           1486.45  1568.55
    """
    if getattr(est, "family_", None) is not None:  # a GLMM: its own likelihood, no ML refit
        profiler = _GlmmProfiler(glmm_profile_fit(est))
    else:
        profiler = _Profiler(ml_fit(est))
    fit = profiler.fit
    z = float(norm.ppf(0.5 + level / 2.0))
    names = fit.names if parm is None else list(parm)
    indices = [fit.names.index(name) for name in names]
    workers = 1 if n_jobs is None else int(n_jobs)
    if workers < 0:
        import os

        workers = max(1, (os.cpu_count() or 1) + 1 + workers)
    workers = min(workers, len(indices))
    if workers > 1:
        from joblib import Parallel, delayed

        chunks = [indices[i::workers] for i in range(workers)]
        results = Parallel(n_jobs=workers)(delayed(_limits_of)(profiler, chunk, z) for chunk in chunks)
        by_index = {k: limits for chunk, run in zip(chunks, results) for k, limits in zip(chunk, run)}
        rows = [by_index[k] for k in indices]
    else:
        rows = _limits_of(profiler, indices, z)
    return pd.DataFrame(rows, index=pd.Index(names, dtype=object), columns=["lower", "upper"], dtype=float)
