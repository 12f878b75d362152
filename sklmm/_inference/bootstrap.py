"""Parametric bootstrap, as lme4's ``bootMer`` and ``confint(method = "boot")``.

Each replicate draws a response from the fitted model (new random effects
and residuals, :mod:`sklmm._simulate`), refits the model to it with the same
criterion (REML or ML), and records the parameters on lme4's scale:
standard deviations and correlations of the random effects, sigma, then the
fixed effects.  The interval is the percentile interval of ``boot.ci(type =
"perc")``, whose limits interpolate between order statistics on the normal
quantile scale (Davison and Hinkley 1997, eq. 5.8).

Reproducibility: one :class:`numpy.random.SeedSequence` made from
``random_state`` spawns one child seed per replicate, so the replicates do
not depend on how they are split between ``n_jobs`` workers.  lme4 uses R's
random numbers, so its replicates (and intervals) differ from these by
Monte Carlo error only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy.stats import norm

from .._model import parameters as _parameters
from .._engine.fit import SINGULAR_TOLERANCE, optimize, prepare
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
    lower = problem.lower_bounds()
    if problem.n_theta:
        result = optimize(problem, max_iter, theta0)
        singular = bool(np.any(result.theta[lower == 0.0] < SINGULAR_TOLERANCE))
        if singular:
            other = optimize(problem, max_iter)  # fit_lmm's start
            if other.objective < result.objective:
                result = other
        theta, converged = result.theta, result.converged
    else:
        theta, converged = np.empty(0), True
    factor = problem.factorize(theta)
    _, _, pwrss = problem.log_determinants(factor)
    sigma = problem.sigma(pwrss)
    beta, _ = problem.solve(factor)
    singular = bool(np.any(theta[lower == 0.0] < SINGULAR_TOLERANCE)) if problem.n_theta else False
    return theta, sigma, beta, singular, converged


def _parameters_of(theta, sigma, beta, sizes) -> np.ndarray:
    return np.concatenate([_parameters.theta_to_sdcor(theta, sizes, sigma), beta])


def _run_replicates(data, sim_model, seeds, reml: bool, theta0, max_iter: int, sizes, one_thread: bool) -> list:
    """Refit to one simulated response per seed; (parameters or None, singular, converged)."""
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas") if one_thread else nullcontext():
        return [_replicate(data, sim_model, seed, reml, theta0, max_iter, sizes) for seed in seeds]


def _replicate(data, sim_model, seed, reml: bool, theta0, max_iter: int, sizes):
    """One replicate: draw with its own seed, refit with warnings silenced (they are counted)."""
    y = sim_model.draw(np.random.default_rng(seed))
    if data.offset is not None:
        y = y - data.offset  # the training data hold the response minus the offset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            theta, sigma, beta, singular, converged = refit(replace(data, y=y), reml, theta0, max_iter)
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
    est : MixedLinearRegressor
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
    data = est._require_training_data("the parametric bootstrap")
    sizes = _parameters.term_sizes(est._fitted_terms)
    names = _parameters.parameter_names(est._fitted_terms) + list(est.fixed_effects_.index)
    estimates = np.concatenate(
        [_parameters.theta_to_sdcor(est.theta_, sizes, est.sigma_), est.fixed_effects_["estimate"].to_numpy()]
    )
    sim_model = simulation_model(data, est.coef_, est.intercept_, est._fitted_terms, est.sigma_)
    seeds = as_seed_sequence(random_state).spawn(n_boot)
    workers = 1 if n_jobs is None else int(n_jobs)
    if workers < 0:
        import os

        workers = max(1, (os.cpu_count() or 1) + 1 + workers)
    one_thread = _small(est)
    if workers > 1:
        chunks = [seeds[i::workers] for i in range(workers)]
        runs = Parallel(n_jobs=workers)(
            delayed(_run_replicates)(data, sim_model, chunk, est.reml, est.theta_, est.max_iter, sizes, one_thread) for chunk in chunks
        )
    else:
        runs = [_run_replicates(data, sim_model, seeds, est.reml, est.theta_, est.max_iter, sizes, one_thread)]
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

