"""The fit as one pipeline: validated arrays in, a fitted model out.

Mirrors lme4's modular fit (``lFormula`` -> ``mkLmerDevfun`` ->
``optimizeLmer`` -> ``mkMerMod``)::

    fixed-effects design       -> X with intercept, aliased columns dropped
    random-effects terms       -> level codes, term columns, Lambda template
    cross products, once       -> ProfiledDeviance (A blocks)
    optimise theta             -> theta_hat, evaluations, convergence
    estimates at theta_hat     -> beta, b, sigma, vcov, criterion

It takes arrays and frames, never the estimator, so inference code
(bootstrap, profiling) can call it directly.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.linalg

from .. import _warnings
from .._model.terms import ReTerm, build_terms
from .deviance import ProfiledDeviance
from .._model.bars import INTERCEPT, TermSpec
from .optimize import NoFiniteObjective, OptimizeResult, optimize_theta

#: lme4's rank tolerance for the fixed-effects model matrix (``rankMatrix``).
RANK_TOLERANCE = 1e-7
#: lme4's ``isSingular`` tolerance on the bounded elements of theta.
SINGULAR_TOLERANCE = 1e-4
#: Rest blocks (and fixed-effect counts) below this size are optimised with one BLAS thread.
#: Measured on the 2-core benchmark machine (benchmarks/, --blas-threads 1 against the
#: default): one thread is never slower up to the crossed 50k x 2k model (a 2,000-square
#: block), and InstEval (1,142) fits in 1.6 s instead of 2.3 s.
SMALL_REST = 4000
#: Models with at least this many random effects, all in scalar terms, also try a moment
#: estimate as the optimiser's start (see optimize).
MOMENT_START_MIN = 1000
#: A residual standard deviation below this fraction of y's is an exact fit.
EXACT_FIT_TOLERANCE = 1e-7


@dataclass
class FittedTerm:
    """A random-effects term after the fit: what prediction and reporting need.

    Holds no per-row arrays, so a fitted model's size does not grow with n.
    """

    factor_name: str
    factors: tuple[str, ...]
    columns: tuple[str, ...]
    slope_index: tuple[int | None, ...]
    levels: pd.Index
    lam: np.ndarray  # p x p relative covariance factor
    b: np.ndarray  # (n_levels, p) conditional modes


@dataclass
class LmmFit:
    """Everything a fit produces (see :func:`fit_lmm`)."""

    fixed_names: list[str]
    beta: np.ndarray  # all fixed effects, 0.0 for dropped columns
    kept: np.ndarray  # indices of the fixed effects that were estimated
    dropped: list[str]
    vcov: np.ndarray  # over the kept fixed effects
    theta: np.ndarray
    sigma: float
    objective: float
    n_evaluations: int
    converged: bool
    singular: bool
    terms: list[FittedTerm]
    n_obs: int
    reml: bool
    n_theta: int = field(default=0)

    @property
    def n_params(self) -> int:
        """Parameters counted by lme4's AIC: fixed effects, theta, sigma."""
        return len(self.kept) + self.n_theta + 1

    @property
    def log_likelihood(self) -> float:
        return -0.5 * self.objective

    @property
    def aic(self) -> float:
        return self.objective + 2.0 * self.n_params

    @property
    def bic(self) -> float:
        return self.objective + self.n_params * np.log(self.n_obs)


def independent_columns(design: np.ndarray, weights: np.ndarray | None, tol: float = RANK_TOLERANCE) -> np.ndarray:
    """Indices of the columns lme4 keeps: each not (nearly) a combination of earlier ones.

    As R's ``qr`` (LINPACK ``dqrdc2``): columns are taken in order and one
    whose residual, after projecting on the kept columns, is below ``tol``
    times its norm is aliased.

    The common, clearly full-rank case is settled on the p x p Gram matrix
    (one BLAS pass): if every column's relative residual there exceeds
    1e-5, far above ``tol`` even after the Gram matrix's rounding, all are
    kept.  Otherwise the scan runs on the triangular factor of a QR
    decomposition of the (weighted) design, which resolves residuals down to
    ``tol``.
    """
    p = design.shape[1]
    if p == 0:
        return np.arange(0)
    scaled = design if weights is None else design * np.sqrt(weights)[:, None]
    gram = scaled.T @ scaled
    if _sequential_residuals(gram).min(initial=np.inf) > 1e-5**2:
        return np.arange(p)
    R = scipy.linalg.qr(scaled, mode="economic", check_finite=False)[1]
    if R.shape[0] < p:
        R = np.vstack([R, np.zeros((p - R.shape[0], p))])
    return _independent_from_triangular(R, tol)


def independent_columns_from_gram(gram: np.ndarray, tol: float = RANK_TOLERANCE) -> np.ndarray:
    """:func:`independent_columns` from the weighted Gram matrix X'WX alone (no rows).

    The clearly full-rank case is settled as there.  Otherwise the scan runs
    on R = D^1/2 V' from the eigendecomposition X'WX = V D V' (R'R = X'WX,
    which is all the scan reads); its residuals are resolved down to about
    sqrt(machine epsilon) ~ 1.5e-8 relative, below ``tol``, so an exactly
    aliased column is found, but a column within a few times ``tol`` of
    aliasing may be decided differently than from the rows.
    """
    p = gram.shape[0]
    if p == 0:
        return np.arange(0)
    if _sequential_residuals(gram).min(initial=np.inf) > 1e-5**2:
        return np.arange(p)
    values, vectors = np.linalg.eigh(gram)
    R = np.sqrt(np.clip(values, 0.0, None))[:, None] * vectors.T
    return _independent_from_triangular(R, tol)


def _sequential_residuals(gram: np.ndarray) -> np.ndarray:
    """Squared relative residual of each column given all earlier ones (Cholesky pivots / diagonal)."""
    p = gram.shape[0]
    norms = np.diag(gram).copy()
    if np.any(norms <= 0):
        return np.zeros(p)
    scale = 1.0 / np.sqrt(norms)
    work = gram * scale[:, None] * scale[None, :]
    out = np.empty(p)
    for j in range(p):
        pivot = work[j, j]
        out[j] = pivot
        if pivot <= 1e-15:
            return np.minimum(out, 0.0)
        work[j + 1 :, j + 1 :] -= np.outer(work[j + 1 :, j], work[j, j + 1 :]) / pivot
    return out


def _independent_from_triangular(R: np.ndarray, tol: float) -> np.ndarray:
    """The dqrdc2-style scan on the triangular factor (R'R = X'WX)."""
    norms = np.linalg.norm(R, axis=0)
    kept: list[int] = []
    basis = np.zeros((R.shape[0], 0))
    for j in range(R.shape[1]):
        column = R[:, j]
        residual = column - basis @ (basis.T @ column)
        residual = residual - basis @ (basis.T @ residual)  # re-orthogonalise
        size = np.linalg.norm(residual)
        if norms[j] > 0 and size > tol * norms[j]:
            kept.append(j)
            basis = np.column_stack([basis, residual / size])
    return np.asarray(kept, dtype=np.intp)


def check_identifiable(terms: list[ReTerm], n_obs: int) -> None:
    """lme4's checks on the number of levels and of random effects per term."""
    for term in terms:
        if term.n_levels < 2:
            raise ValueError(
                f"grouping factor {term.factor_name!r} has only {term.n_levels} level; a random "
                "effect needs at least 2 levels (use a fixed effect instead)"
            )
        if term.n_levels >= n_obs:
            raise ValueError(
                f"grouping factor {term.factor_name!r} has {term.n_levels} levels for {n_obs} "
                "observations; with one level per observation its variance cannot be separated "
                "from the residual variance"
            )
        if term.q >= n_obs:
            raise ValueError(
                f"the term for {term.factor_name!r} with columns {list(term.columns)} has "
                f"{term.q} random effects for {n_obs} observations; the random-effects "
                "parameters and the residual variance are not identifiable"
            )


@dataclass
class TrainingData:
    """The validated data a model was fitted to, as the fit used it.

    Inference (profiles, bootstrap, simulation, likelihood-ratio refits)
    rebuilds the model from it with :func:`prepare`.  ``X`` holds the
    covariates without an intercept column; ``weights`` may be ``None``.
    """

    X: np.ndarray
    y: np.ndarray
    groups: pd.DataFrame | None
    weights: np.ndarray | None
    specs: list
    feature_names: list[str]
    fit_intercept: bool
    slopes: np.ndarray | None = None  # a formula model's random-effects columns
    offset: np.ndarray | None = None  # a formula model's offset; y here is the response minus it

    @property
    def slope_source(self) -> np.ndarray:
        """The matrix that terms' ``slope_index`` refers to: the slopes, else X."""
        return self.X if self.slopes is None else self.slopes


@dataclass
class Prepared:
    """A model ready to optimise: the output of :func:`prepare`."""

    problem: ProfiledDeviance
    terms: list[ReTerm]
    design: np.ndarray  # fixed-effects columns actually estimated (n x p)
    fixed_names: list[str]
    kept: np.ndarray
    dropped: list[str]
    y: np.ndarray
    weights: np.ndarray | None
    n: int

    def response_spread(self) -> float:
        """Weighted standard deviation of y (the scale of an exact fit)."""
        return _weighted_sd(self.y, self.weights)

    def scale_summary(self) -> str:
        """The magnitudes that decide whether cross products are computable."""
        return _scale_summary(self)


def prepare(data: TrainingData, reml: bool, *, warn: bool = True) -> Prepared:
    """Fixed-effects design, random-effects terms and cross products: everything before the optimiser.

    Rows with weight 0 are left out; aliased fixed-effect columns are dropped
    (with a warning when ``warn``).
    """
    X, y, weights, groups, slopes = data.X, data.y, data.weights, data.groups, data.slopes
    if weights is not None and np.any(weights == 0):
        rows = weights > 0
        X, y, weights = X[rows], y[rows], weights[rows]
        slopes = None if slopes is None else slopes[rows]
        groups = None if groups is None else groups.loc[rows].reset_index(drop=True)
    n = len(y)

    # [design y] in one buffer: the design (intercept first) and the response
    # are views of it, so the n rows are copied once.
    offset = 1 if data.fit_intercept else 0
    fixed_names = ([INTERCEPT] if data.fit_intercept else []) + list(data.feature_names)
    stacked = np.empty((n, X.shape[1] + offset + 1))
    if offset:
        stacked[:, 0] = 1.0
    stacked[:, offset:-1] = X
    # With an intercept, y is centred (its weighted mean goes into the
    # intercept, see ProfiledDeviance.y_offset): the likelihood is unchanged
    # and the cross products keep their digits when y has a large offset.
    y_offset = (float(y.mean()) if weights is None else float(np.average(y, weights=weights))) if offset else 0.0  # np.average without weights is y.mean()
    stacked[:, -1] = y - y_offset
    kept = independent_columns(stacked[:, :-1], weights)
    kept_set = set(kept.tolist())
    dropped = [fixed_names[j] for j in range(len(fixed_names)) if j not in kept_set]
    if dropped:
        if warn:
            _warnings.warn_rank_deficient(dropped, len(fixed_names))
        stacked = stacked[:, [*kept.tolist(), stacked.shape[1] - 1]]

    terms = build_terms(data.specs, X, list(data.feature_names), groups, slopes) if data.specs else []
    check_identifiable(terms, n)
    if terms and n <= len(kept):
        raise ValueError(f"{n} observations are too few for {len(kept)} fixed effects and a residual variance")
    if dropped and 0 not in kept_set:
        stacked[:, -1] += y_offset  # the intercept was aliased: nothing to absorb the offset
        y_offset = 0.0
    problem = ProfiledDeviance(terms, stacked, weights, reml, y_offset=y_offset)
    return Prepared(problem, terms, stacked[:, :-1], fixed_names, kept, dropped, y, weights, n)


def fit_lmm(data: TrainingData, *, reml: bool = True, max_evaluations: int = 10_000) -> LmmFit:
    """Fit a linear mixed model by minimising the profiled deviance or REML criterion.

    Parameters
    ----------
    data : TrainingData
        Validated covariates (no intercept column), response, grouping
        factors (``None`` with no terms: least squares), prior weights (rows
        with weight 0 are left out), parsed terms and X's column names.
    reml : bool
    max_evaluations : int
        Budget of objective evaluations.

    Returns
    -------
    LmmFit
    """
    return fit_prepared(prepare(data, reml), reml=reml, max_evaluations=max_evaluations)


def fit_prepared(prepared, *, reml: bool, max_evaluations: int) -> LmmFit:
    """Optimise and package a prepared model (:func:`fit_lmm` after :func:`prepare`).

    ``prepared`` is a :class:`Prepared`, or any object with its attributes
    ``problem, terms, fixed_names, kept, dropped, n`` and methods
    ``response_spread()`` and ``scale_summary()`` (the distributed fit's,
    which holds no rows).
    """
    problem, terms, fixed_names, kept, dropped, n = (
        prepared.problem, prepared.terms, prepared.fixed_names, prepared.kept, prepared.dropped, prepared.n,
    )
    if not terms:
        return _least_squares_fit(problem, fixed_names, kept, dropped, n, reml)

    # The estimates' small triangular solves too run with one BLAS thread where the
    # optimiser does: with two, OpenBLAS's dtrtrs on a 2 x 2 matrix waited 4-16 ms for its
    # thread pool on a busy machine (measured), several times a small fit's whole time.
    with blas_threads_for(problem):
        check_computable(problem, prepared)
        try:
            result = optimize(problem, max_evaluations)
        except NoFiniteObjective as error:
            raise ValueError(
                f"the criterion could not be computed in double precision at any theta ({error}); "
                f"{prepared.scale_summary()}. Centre and rescale y and the columns of X (e.g. to "
                "mean 0 and standard deviation 1) and fit again."
            ) from None
        estimates = problem.estimates(result.theta)  # the optimiser's last factor, most often
        objective = problem.criterion(estimates.ldL2, estimates.ldRX2, estimates.pwrss)
        beta_kept, b = estimates.beta, estimates.b
        sigma = problem.sigma(estimates.pwrss)
        vcov = problem.fixed_effects_cov(estimates, sigma)

    lower = problem.lower_bounds()
    singular = bool(np.any(result.theta[lower == 0.0] < SINGULAR_TOLERANCE))
    fitted_terms = [
        FittedTerm(t.factor_name, t.factors, t.columns, t.slope_index, t.levels, lam, b_t)
        for t, lam, b_t in zip(terms, problem.lambdas(result.theta), b)
    ]
    beta = np.zeros(len(fixed_names))
    beta[kept] = beta_kept
    fit = LmmFit(
        fixed_names=fixed_names,
        beta=beta,
        kept=kept,
        dropped=dropped,
        vcov=vcov,
        theta=result.theta,
        sigma=sigma,
        objective=objective,
        n_evaluations=result.n_evaluations,
        converged=result.converged,
        singular=singular,
        terms=fitted_terms,
        n_obs=n,
        reml=reml,
        n_theta=problem.n_theta,
    )
    if not result.converged:
        _warnings.warn_not_converged(result.message, result.n_evaluations, max_evaluations)
    spread = prepared.response_spread()
    if spread > 0 and sigma < EXACT_FIT_TOLERANCE * spread:
        _warnings.warn_exact_fit_by_random_effects(sigma, spread)
    if singular:
        _warnings.warn_singular(fit)
    return fit


def optimize(problem: ProfiledDeviance, max_evaluations: int, theta0: np.ndarray | None = None, second_opinion: bool = True):
    """Minimise the problem's criterion over theta (see :mod:`sklmm._optimize`).

    ``theta0``: the start; by default lme4's (identity lambda), in the
    data's units (:meth:`ProfiledDeviance.theta_scales`).  ``second_opinion``:
    as :func:`optimize_theta`'s.
    """
    scale = problem.theta_scales()
    start = problem.initial_theta() * scale if theta0 is None else np.asarray(theta0, dtype=np.float64)
    # Large models of scalar terms (crossed or nested intercepts): also try a
    # moment estimate as the start (InstEval: 11 gradient evaluations instead
    # of 25, each a 1,142-square Cholesky and inverse).  Below MOMENT_START_MIN
    # random effects an evaluation is cheap and the two objective evaluations
    # that choose the start would cost more than they save.
    alternative = units = None
    if theta0 is None and problem.m0 * problem.p0 + problem.q_rest >= MOMENT_START_MIN:
        anovas = problem._one_way_anovas()  # moment_theta and moment_units, computed once
        if anovas is not None:
            alternative = anovas[0]
            # The optimiser then steps in units of the criterion's curvature
            # (ProfiledDeviance.moment_units), where the Hessian is near the identity.
            units = np.minimum(scale, problem.moment_units(anovas))
    # A small model's criterion by one dense factor (smalldense): the same numbers,
    # a fraction of the blocked path's per-evaluation overhead.
    # (From a moment start the optimiser evaluates that start with its gradient directly,
    # optimize_theta's alternative_start: it is factored once.)
    dense = problem.dense_evaluator() if units is None else None
    if dense is not None:
        objective, objective_and_gradient = dense.objective, dense.objective_and_gradient
    else:
        objective, objective_and_gradient = problem.objective, problem.objective_and_gradient
    best = _BestGradient(objective_and_gradient)
    with blas_threads_for(problem):
        result = optimize_theta(
            objective,
            best if units is not None else objective_and_gradient,
            start,
            problem.lower_bounds(),
            max_evaluations,
            scale=scale if units is None else units,
            partners=problem.column_partners(),
            second_opinion=second_opinion,
            alternative_start=alternative,
        )
        if units is not None:
            # (a packed rest block's evaluations take minutes: its fit stops at the test)
            secant = not getattr(getattr(problem, "rest", None), "consumes_factor", False)
            result = _newton_finish(best, result, problem.lower_bounds(), scale, units, max_evaluations, secant)
    return result


class _BestGradient:
    """objective_and_gradient, remembering the gradient at the best point it evaluated."""

    def __init__(self, objective_and_gradient):
        self._objective_and_gradient = objective_and_gradient
        self.theta, self.value, self.gradient = None, np.inf, None
        self.runner_up = None  # (theta, gradient) of the best point before the current best

    def __call__(self, theta):
        value, gradient = self._objective_and_gradient(theta)
        if value < self.value:
            if self.theta is not None:
                self.runner_up = (self.theta, self.gradient)
            self.theta, self.value, self.gradient = np.array(theta, copy=True), value, gradient
        return value, gradient


def _newton_finish(best: _BestGradient, result, lower: np.ndarray, scale: np.ndarray, units: np.ndarray, max_evaluations: int, secant: bool = True):
    """Hold an optimum found in curvature units to the convergence test of the data's units.

    The optimiser's test (a projected gradient below a tolerance, each
    element taken in the optimiser's units) is looser in curvature units
    than in the data's (:meth:`ProfiledDeviance.theta_scales`) whenever a
    unit is the smaller.  While the data's test fails at the optimum, a
    Newton step with the diagonal Hessian ``1 / units^2`` (at most three,
    each with its gradient; kept only if the objective falls).  Then, with
    ``secant``, one step with secant curvatures (:func:`_secant_step`).
    """
    from .optimize import _GRADIENT_TOLERANCE, _projected_gradient

    count = result.n_evaluations
    for _ in range(3):
        if best.theta is None or not np.array_equal(best.theta, result.theta) or count >= max_evaluations:
            break
        if _projected_gradient(best.theta / scale, best.gradient * scale, lower / scale) <= _GRADIENT_TOLERANCE * max(1.0, abs(best.value)):
            break
        trial = np.maximum(best.theta - units * units * best.gradient, lower)
        count += 1
        value, _ = best(trial)
        if not value < result.objective:
            break
        result = OptimizeResult(np.array(trial), float(value), count, result.converged, result.message)
    if secant:
        result, count = _secant_step(best, result, lower, scale, count, max_evaluations)
    if count != result.n_evaluations:
        result = OptimizeResult(result.theta, result.objective, count, result.converged, result.message)
    return result


#: The secant step is tried while the data-scaled projected gradient exceeds this times |objective|.
SECANT_TOLERANCE = 1e-9


def _secant_step(best: _BestGradient, result, lower: np.ndarray, scale: np.ndarray, count: int, max_evaluations: int):
    """One Newton step at the optimum with each coordinate's curvature from the last two best points.

    The convergence test (a gradient below 1e-7 |objective|) leaves up to
    g^2 / (2 H) on the table where the curvature H is small: chem97 stopped
    1.4e-8 above lme4's optimum.  Near the optimum the two best points
    differ by a short step, and ``(g_a - g_b) / (theta_a - theta_b)``
    estimates each coordinate's curvature; the step ``-g / H`` (positive,
    finite curvatures only) is kept if it lowers the objective.
    """
    from .optimize import _projected_gradient

    if best.theta is None or best.runner_up is None or count >= max_evaluations or not np.array_equal(best.theta, result.theta):
        return result, count
    if _projected_gradient(best.theta / scale, best.gradient * scale, lower / scale) <= SECANT_TOLERANCE * max(1.0, abs(best.value)):
        return result, count
    theta_b, gradient_b = best.runner_up
    moved = best.theta - theta_b
    with np.errstate(divide="ignore", invalid="ignore"):
        curvature = (best.gradient - gradient_b) / moved
    usable = (moved != 0) & np.isfinite(curvature) & (curvature > 0)
    if not usable.any():
        return result, count
    step = np.where(usable, -best.gradient / np.where(usable, curvature, 1.0), 0.0)
    trial = np.maximum(best.theta + step, lower)
    count += 1
    value, _ = best(trial)
    if value < result.objective:
        result = OptimizeResult(np.array(trial), float(value), count, result.converged, result.message)
    return result, count


def blas_threads_for(problem: ProfiledDeviance):
    """The BLAS threads an optimisation of ``problem`` runs with (a context manager).

    Where every matrix of an evaluation is small or moderate, a second BLAS
    thread does not help, and on a busy machine its spin-waiting made small
    fits up to 7x slower (measured): one thread then.
    """
    single = problem.q_rest < SMALL_REST and problem.p < SMALL_REST
    return _OneBlasThread(_blas_libraries()) if single else contextlib.nullcontext()


class _OneBlasThread:
    """threadpoolctl's ``limit(limits=1, user_api="blas")`` without its per-use bookkeeping
    (a third of its 20 us): each BLAS library not at one thread is set to one, then restored."""

    def __init__(self, libraries):
        self._libraries = libraries
        self._restore = []

    def __enter__(self):
        for library in self._libraries:
            threads = library.get_num_threads()
            if threads != 1:
                library.set_num_threads(1)
                if threads is not None:
                    self._restore.append((library, threads))
        return self

    def __exit__(self, *exc_info):
        for library, threads in self._restore:
            library.set_num_threads(threads)
        self._restore = []
        return False


@functools.lru_cache(maxsize=1)
def _blas_controller():
    """threadpoolctl's view of the loaded BLAS libraries (inspected once)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@functools.lru_cache(maxsize=1)
def _blas_libraries() -> tuple:
    """threadpoolctl's controllers of the loaded BLAS libraries (found once)."""
    return tuple(library for library in _blas_controller().lib_controllers if library.user_api == "blas")


def check_computable(problem: ProfiledDeviance, prepared: Prepared) -> None:
    """Refuse, with the reason, data whose criterion is undefined or cannot be computed.

    * cross products that overflow (or are not finite) in double precision;
    * y fitted exactly by the fixed effects: the residual variance is 0 at
      every theta and the likelihood is unbounded.
    """
    blocks = [problem.AXX] + ([problem.A00, problem.AX0] if problem.terms else [])
    if not all(np.all(np.isfinite(block)) for block in blocks):
        raise ValueError(
            "the cross products of X, y and sample_weight overflow double precision "
            f"({prepared.scale_summary()}); rescale them (e.g. to standard deviation 1) and fit again."
        )
    p = problem.p
    try:
        ols = scipy.linalg.cholesky(problem.AXX, lower=True, check_finite=False)
        rss = float(ols[p, p] ** 2)
    except np.linalg.LinAlgError:
        rss = 0.0
    total = float(problem.AXX[p, p])
    if rss <= EXACT_FIT_TOLERANCE**2 * total:
        raise ValueError(
            "y is fitted exactly by the fixed effects (the residual sum of squares of the "
            "least-squares fit is 0, e.g. a constant y or y a linear function of X): the residual "
            "variance is 0 at every theta, so the likelihood is unbounded and no variance "
            "component can be estimated."
        )


def _weighted_sd(y: np.ndarray, weights: np.ndarray | None) -> float:
    w = np.ones_like(y) if weights is None else weights
    mean = np.sum(w * y) / np.sum(w)
    return float(np.sqrt(np.sum(w * (y - mean) ** 2) / np.sum(w)))


def _scale_summary(prepared: Prepared) -> str:
    """The magnitudes that decide whether cross products are computable."""
    parts = [f"largest |y| = {np.max(np.abs(prepared.y)):.3g}, sd(y) = {np.std(prepared.y):.3g}"]
    if prepared.design.shape[1]:
        parts.append(f"largest |X| = {np.max(np.abs(prepared.design)):.3g}")
    if prepared.weights is not None:
        parts.append(f"sample_weight from {np.min(prepared.weights):.3g} to {np.max(prepared.weights):.3g}")
    return "; ".join(parts)


def _least_squares_fit(problem: ProfiledDeviance, fixed_names, kept, dropped, n, reml) -> LmmFit:
    """The model without random effects: weighted least squares, same criterion."""
    p = problem.p
    dof = n - p if reml else n
    try:
        factor = problem.factorize(np.empty(0))
        ldL2, ldRX2, pwrss = problem.log_determinants(factor)
        beta_kept, _ = problem.solve(factor)
        exact = pwrss <= 1e-24 * max(problem.AXX[p, p], 1e-300)
    except np.linalg.LinAlgError:
        # y lies in the column space of X: the normal equations' bordered
        # matrix is singular.  Solve the fixed-effects part alone.
        beta_kept = scipy.linalg.solve(problem.AXX[:p, :p], problem.AXX[:p, p], assume_a="pos")
        if problem.y_offset:
            beta_kept[0] += problem.y_offset  # the y column is centred (see prepare)
        exact = True
    if exact or dof <= 0:
        _warnings.warn_exact_fit(n, p)
        sigma, objective = 0.0, -np.inf
        vcov = np.full((p, p), np.nan)
    else:
        objective = problem.criterion(ldL2, ldRX2, pwrss)
        sigma = problem.sigma(pwrss)
        vcov = problem.fixed_effects_cov(factor, sigma)
    beta = np.zeros(len(fixed_names))
    beta[kept] = beta_kept
    return LmmFit(
        fixed_names=fixed_names, beta=beta, kept=kept, dropped=dropped, vcov=vcov,
        theta=np.empty(0), sigma=sigma, objective=objective, n_evaluations=1,
        converged=True, singular=False, terms=[], n_obs=n, reml=reml,
        n_theta=0,
    )
