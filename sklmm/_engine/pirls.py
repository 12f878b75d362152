"""Generalised linear mixed models: PIRLS, the Laplace approximation and adaptive Gauss-Hermite quadrature.

The same terms, cross products and blocked Cholesky factor as the linear
model (:class:`~sklmm._engine.deviance.ProfiledDeviance`): each step of
penalised iteratively reweighted least squares (PIRLS) is the penalised
least-squares problem of a linear mixed model whose prior weights are the
working weights and whose response is the working response, so one PIRLS
step is one vectorised pass over the rows plus one blocked factorisation.

Model and notation (Bates et al. 2015; lme4's ``glmer``; MixedModels.jl)::

    eta = offset + X beta + Z Lambda(theta) u,   u ~ N(0, I)
    mu  = linkinv(eta),   y | u ~ family(mu) with prior weights w

Symbol table

==========  ===============================================================
pw          prior weights (binomial: numbers of trials), 1 when not given
w           working weights  pw mu_eta^2 / variance(mu)
z           working response  eta - offset(-X beta) + (y - mu) / mu_eta
pdev        penalised deviance  sum dev_resid(y, mu) + ||u||^2
ldL2        log det(Lambda' Z' W Z Lambda + I) at the working weights
saturated   -2 log p(y | mu = y): the deviance -> -2 log-likelihood constant
==========  ===============================================================

Objective, lme4's ``-2 logLik`` (``resp$Laplace``; ``glmerAGQ``)::

    Laplace (nagq = 1):  pdev(u_hat) + ldL2 + saturated
    AGQ (nagq > 1, one scalar term, levels l, modes u_l, sd_l = 1 / L_ll):
        sum_l devc_l(u_l) + ldL2 - 2 sum_l log sum_k w_k exp((z_k^2 + devc_l(u_l) - devc_l(u_l + z_k sd_l)) / 2)
        + saturated,    devc_l(u) = sum of the level's deviance residuals + u^2

with (z_k, w_k) the Gauss-Hermite rule for the standard normal.  The fit
reports the AGQ value without ``saturated``, as lme4 1.1 reports it (its
``logLik`` for nAGQ > 1): compare such fits only with fits of the same nagq.

Stages, as lme4's ``glmer``: stage 1 minimises the Laplace objective over
theta with beta and u found together by PIRLS (lme4's ``nAGQ = 0``); stage 2
minimises the Laplace or AGQ objective over (theta, beta) together, PIRLS
finding u alone.  The fixed effects' covariance is lme4's default: twice the
inverse of the finite-difference Hessian of the stage-2 objective, its beta
block.

Speed.  Stage 2 starts at stage 1's optimum, close to its own, so it takes
Newton steps on that same finite-difference Hessian (two in a typical fit,
the last one giving the covariance), where lme4 and MixedModels.jl run a
derivative-free search (COBYQA remains the fallback at a bound or where
the curvature is not positive).  The PIRLS steps of one fit share the
weighted problems' sparsity pattern (:mod:`sklmm._engine.reweight`), start
from the previous or extrapolated modes, and take Newton's steps for
non-canonical links (Fisher scoring converges only linearly).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.linalg
from scipy.optimize import Bounds, minimize

from .. import _warnings
from .._model.families import Family
from .._model.bars import INTERCEPT
from .._model.terms import ReTerm, build_terms
from .deviance import Factorization, ProfiledDeviance
from .fit import SINGULAR_TOLERANCE, SMALL_REST, FittedTerm, _blas_controller, independent_columns
from .reweight import WeightedBlocks
from .optimize import NoFiniteObjective, OptimizeResult, optimize_theta

#: PIRLS stops when a full step moves the linear predictor by less than this (relative to max |eta|).
PIRLS_TOLERANCE = 1e-12
#: PIRLS iterations (from a warm start Newton needs 2 to 4; Fisher scoring, for non-canonical links, converges linearly).
PIRLS_MAX_ITER = 100
#: Stage 2's final trust-region radius (in standard errors of beta, natural units of theta):
#: the objective is then within about radius^2 of its minimum.  Measured on cbpp, epil and
#: Contraception: 1e-4 gives the objective of 1e-7 to 1e-6 and beta to 1e-4 standard errors,
#: with 25-45% fewer evaluations.
STAGE2_RADIUS = 1e-4
#: Stage 2's Newton iterations (each one finite-difference Hessian) before falling back to COBYQA.
NEWTON_MAX_ITER = 6
#: Newton decrement (predicted fall of the objective) at which stage 2 has converged ...
NEWTON_DONE = 1e-8
#: ... and at which one last full step is taken without another Hessian.
NEWTON_FINAL = 1e-3
#: Step of the finite-difference Hessian (in the optimiser's units: theta's natural units, beta's standard errors).
HESSIAN_STEP = 1e-3
#: PIRLS tolerance while optimising: the objective to about 1e-9, which the
#: optimisers' steps do not resolve; the final fit and the Hessian use
#: PIRLS_TOLERANCE.  It saves one of the three PIRLS iterations an evaluation
#: near the previous one takes.
SEARCH_TOLERANCE = 1e-8
#: R's glm.control(epsilon): IRLS convergence tolerance on the deviance.
GLM_TOLERANCE = 1e-8
#: Step halvings per PIRLS iteration.
MAX_HALVINGS = 20
#: Relative step of the finite differences of the objective (in the optimiser's units).
FD_STEP = 1e-4
#: R's glm.fit: fitted probabilities within this of 0 or 1 are "numerically 0 or 1".
_SEPARATION_EPS = 10 * np.finfo(float).eps


@dataclass
class GlmmData:
    """Validated data of a GLMM fit (the ``TrainingData`` of the linear model, plus an offset)."""

    X: np.ndarray
    y: np.ndarray
    groups: pd.DataFrame | None
    weights: np.ndarray | None
    offset: np.ndarray | None
    specs: list
    feature_names: list[str]
    fit_intercept: bool
    slopes: np.ndarray | None = None  # a formula model's random-effects columns
    trials: np.ndarray | None = None  # binomial row totals of a cbind() response (the prior weights are these times weights=)

    @property
    def slope_source(self) -> np.ndarray:
        """The matrix that terms' ``slope_index`` refers to: the slopes, else X."""
        return self.X if self.slopes is None else self.slopes


@dataclass
class PirlsState:
    """The conditional modes at one (theta, beta) and what the objective needs."""

    beta: np.ndarray
    u: list  # one (m_t, p_t) array per term
    eta: np.ndarray
    mu: np.ndarray
    pdev: float
    ldL2: float
    linear: ProfiledDeviance  # the weighted linear problem at the converged working weights
    factor: Factorization
    iterations: int
    converged: bool


class GlmmProblem:
    """A GLMM's data, with PIRLS, the Laplace and AGQ objectives.

    Parameters
    ----------
    terms : list of ReTerm
        Random-effects terms in lme4's order (may be empty: a GLM).
    X : ndarray of shape (n, p)
        Fixed-effects model matrix, full rank, intercept column first.
    y : ndarray of shape (n,)
        Response (binomial: proportions).
    weights : ndarray or None
        Prior weights (binomial: numbers of trials).
    offset : ndarray or None
    family : Family
    trials : ndarray or None
        Binomial numbers of trials when they are not the prior weights
        (a ``cbind()`` response with ``weights=``): they enter only the
        saturated constant.
    """

    def __init__(self, terms: list[ReTerm], X: np.ndarray, y: np.ndarray, weights, offset, family: Family, trials=None):
        self.terms = terms
        self.X = X
        self.y = y
        self.n, self.p = X.shape
        self.pw = np.ones(self.n) if weights is None else weights
        self.offset = np.zeros(self.n) if offset is None else offset
        self.family = family
        self.saturated = family.saturated(y, self.pw, trials)
        self.dev_resid = family.dev_resid_function(y, self.pw)
        # theta's layout, bounds and units: the linear problem with unit weights.
        self.template = ProfiledDeviance(terms, np.ones((self.n, 1)), None, reml=False)
        # The weighted problems of the PIRLS steps: one pattern, new weights each step.
        self.weighted = WeightedBlocks(terms) if terms else None
        self.n_theta = self.template.n_theta
        self.state: PirlsState | None = None
        self._XZ = None  # [X z] buffer of the joint PIRLS steps
        self.n_pirls = 0

    # -- the linear predictor ----------------------------------------------------

    def random_part(self, lams: list[np.ndarray], u: list[np.ndarray]) -> np.ndarray:
        """Z Lambda u, row by row (vectorised over rows, per term)."""
        out = np.zeros(self.n)
        for term, lam, ut in zip(self.terms, lams, u):
            b = ut @ lam.T  # (m_t, p_t)
            if term.z is None:
                out += b[term.refs, 0]
                continue
            for c, j in enumerate(term.slope_index):  # a column at a time: no (n, p) temporaries
                values = b[:, c][term.refs]
                out += values if j is None else values * term.z[:, c]
        return out

    def _eta(self, lams, beta, u, joint: bool, fixed_eta):
        """The linear predictor; ``fixed_eta`` (offset + X beta) is reused when beta is held."""
        base = self.offset + self.X @ beta if joint else fixed_eta
        return base + self.random_part(lams, u)

    def _with_response(self, z: np.ndarray) -> np.ndarray:
        """``[X z]`` in a buffer kept between PIRLS steps (X copied in once; z overwrites the last column).

        The array is reused by the next call: the weighted problem reads it
        and keeps nothing of it.
        """
        if self._XZ is None:
            self._XZ = np.empty((self.n, self.p + 1))
            self._XZ[:, : self.p] = self.X
        self._XZ[:, self.p] = z
        return self._XZ

    def zero_u(self) -> list[np.ndarray]:
        return [np.zeros((t.n_levels, t.n_columns)) for t in self.terms]

    def penalised_deviance(self, mu: np.ndarray, u: list[np.ndarray]) -> float:
        return float(np.sum(self.dev_resid(mu)) + sum(float(np.sum(ut * ut)) for ut in u))

    # -- PIRLS ----------------------------------------------------------------------

    def pirls(self, theta: np.ndarray, beta: np.ndarray, u: list[np.ndarray], *, joint: bool, eta: np.ndarray | None = None, tol: float = None) -> PirlsState:
        """Conditional modes by penalised iteratively reweighted least squares.

        ``joint``: beta and u together (lme4's stage 1 / nAGQ = 0), starting
        from ``beta``; otherwise u alone at the given beta.  ``eta``: a
        starting linear predictor for the first working weights (the GLM
        start), else the one at (beta, u).

        Each iteration forms the working weights and response in one pass
        over the rows, the weighted linear problem's cross products and its
        blocked factor at theta, and the penalised least-squares solution;
        the step is halved until the penalised deviance falls.  PIRLS stops
        when a full step moves eta by less than ``PIRLS_TOLERANCE`` (relative
        to max |eta|; ``tol`` overrides it): the current point is the mode
        and its factor (at its own working weights) gives ldL2, to O(tol).
        """
        family, link = self.family, self.family.link
        lams = self.template.lambdas(theta)
        theta = np.asarray(theta, dtype=np.float64)
        forced = eta is not None
        if eta is None:
            eta = self.offset + self.X @ beta + self.random_part(lams, u)
        mu = link.linkinv(eta)
        pdev = np.inf if forced else self.penalised_deviance(mu, u)
        fixed = self.offset if joint else self.offset + self.X @ beta
        fixed_eta = None if joint else fixed
        converged = False
        last_move = np.inf
        tol = PIRLS_TOLERANCE if tol is None else tol
        for iteration in range(1, PIRLS_MAX_ITER + 1):
            self.n_pirls += 1
            mu_eta = link.mu_eta(eta)
            w = self.pw * mu_eta * mu_eta / family.variance(mu)
            residual = (self.y - mu) / mu_eta
            # Newton's weights where the link is not canonical (Fisher scoring
            # then converges only linearly: 7 to 21 iterations per evaluation
            # on the probit, cloglog and sqrt reference cases, against 3);
            # Fisher's where any is not positive.  The mode is the same.
            step_w = w
            if not family.canonical:
                observed = family.observed_weights(self.y, mu, eta, mu_eta, w, self.pw)
                if np.all(observed > 0.0):
                    step_w = observed
                    residual = residual * (w / observed)
            z = eta - fixed + residual
            XY = self._with_response(z) if joint else z[:, None]
            linear = self.weighted.problem(XY, step_w)
            factor = linear.factorize(theta)
            beta_new, u_new = linear._beta_u(factor)
            if not joint:
                beta_new = beta
            # Converged when the full step no longer moves the linear
            # predictor: the current point is then the mode to within
            # rounding, and its own factor gives ldL2.  The tolerance is
            # tight because ldL2 is not stationary at the mode: a point delta
            # from it errs by O(delta) in the objective, which would spoil
            # finite-difference gradients and Hessians.
            beta_c, u_c = beta_new, u_new
            eta_c = self._eta(lams, beta_c, u_c, joint, fixed_eta)
            move = np.max(np.abs(eta_c - eta), initial=0.0)
            size = max(1.0, np.max(np.abs(eta), initial=0.0))
            # Newton's steps shrink quadratically; one that stops shrinking
            # while tiny is at the rounding floor of the solve.
            if not forced and (move <= tol * size or (move <= 1e-7 * size and move > 0.5 * last_move)):
                converged = True
                break
            last_move = move
            # Step halving on the penalised deviance (Fisher scoring, for a
            # non-canonical link, can point uphill in pdev's curvature); a
            # rise within rounding of pdev is no rise.
            slack = 1e-13 * abs(pdev) if np.isfinite(pdev) else 0.0
            step = 1.0
            for _ in range(MAX_HALVINGS):
                mu_c = link.linkinv(eta_c)
                pdev_c = self.penalised_deviance(mu_c, u_c)
                if pdev_c <= pdev + slack:
                    break
                step *= 0.5
                beta_c = beta + step * (beta_new - beta) if joint else beta
                u_c = [uo + step * (un - uo) for uo, un in zip(u, u_new)]
                eta_c = self._eta(lams, beta_c, u_c, joint, fixed_eta)
            if not pdev_c <= pdev + slack:
                converged = not forced  # no step lowers pdev: at the mode, to rounding
                if converged:
                    break
            forced = False
            beta, u, eta, mu, pdev = beta_c, u_c, eta_c, mu_c, pdev_c
        if step_w is not w:
            # The Laplace approximation's log determinant (and the covariances
            # read off the factor) are at Fisher's weights, as lme4's.
            z = eta - fixed + (self.y - mu) / mu_eta
            linear = self.weighted.problem(self._with_response(z) if joint else z[:, None], w)
            factor = linear.factorize(theta)
        ldL2 = linear.log_determinants(factor)[0] if self.terms else 0.0
        return PirlsState(beta, u, eta, mu, pdev, ldL2, linear, factor, iteration, converged)

    # -- objectives ---------------------------------------------------------------------

    def laplace(self, state: PirlsState) -> float:
        """lme4's -2 log-likelihood at the Laplace approximation."""
        return state.pdev + state.ldL2 + self.saturated

    def agq(self, state: PirlsState, theta: np.ndarray, nagq: int) -> float:
        """lme4's -2 log-likelihood by adaptive Gauss-Hermite quadrature (one scalar term)."""
        term = self.terms[0]
        refs, m = term.refs, term.n_levels
        lam = self.template.lambdas(theta)[0]
        u0 = state.u[0][:, 0]
        sd = 1.0 / state.factor.L00[:, 0, 0]
        fixed = state.eta - lam[0, 0] * (u0[refs] if term.z is None else u0[refs] * term.z[:, 0])
        zcol = 1.0 if term.z is None else term.z[:, 0]
        link, family = self.family.link, self.family
        devc0 = np.bincount(refs, weights=self.dev_resid(state.mu), minlength=m) + u0 * u0
        nodes, weights = gauss_hermite_normal(nagq)
        mult = np.zeros(m)
        for z_k, w_k in zip(nodes, weights):
            if z_k == 0.0:
                mult += w_k
                continue
            u1 = u0 + z_k * sd
            mu1 = link.linkinv(fixed + lam[0, 0] * u1[refs] * zcol)
            devc = np.bincount(refs, weights=self.dev_resid(mu1), minlength=m) + u1 * u1
            mult += w_k * np.exp((z_k * z_k + devc0 - devc) / 2.0)
        return float(np.sum(devc0) + state.ldL2 - 2.0 * np.sum(np.log(mult)) + self.saturated)

    def objective(self, state: PirlsState, theta: np.ndarray, nagq: int) -> float:
        return self.laplace(state) if nagq <= 1 else self.agq(state, theta, nagq)


@functools.lru_cache(maxsize=32)
def gauss_hermite_normal(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and weights for the standard normal density (weights sum to 1).

    Cached (every AGQ evaluation reads them; computing them is an
    eigenproblem, a third of an evaluation on small data); read-only arrays.
    """
    nodes, weights = np.polynomial.hermite_e.hermegauss(k)
    nodes = np.where(np.abs(nodes) < 1e-14, 0.0, nodes)
    weights = weights / np.sqrt(2.0 * np.pi)
    nodes.flags.writeable = False
    weights.flags.writeable = False
    return nodes, weights


@dataclass
class GlmResult:
    """The plain GLM (no random effects) by IRLS."""

    beta: np.ndarray
    eta: np.ndarray
    mu: np.ndarray
    deviance: float
    vcov: np.ndarray
    iterations: int
    converged: bool


def irls_glm(X: np.ndarray, y: np.ndarray, pw: np.ndarray, offset: np.ndarray, family: Family, *, max_iter: int = 50) -> GlmResult:
    """R's ``glm.fit``: IRLS from ``mustart`` with step halving, each step a least-squares solve.

    The weighted least-squares step is solved by ``lstsq`` (rank revealing),
    so working weights that underflow (separated classes) do not break it.
    Converged, as R's, when the deviance changes by less than
    ``GLM_TOLERANCE * (|deviance| + 0.1)`` (IRLS converges quadratically, so
    the estimates are then accurate to far more digits than that).  With
    separated classes R's tolerance also stops the divergence before the
    linear predictor reaches the link's clamps.
    """
    link = family.link
    eta = link.linkfun(family.initial_mu(y, pw)) + 0.0
    mu = link.linkinv(eta)
    dev = np.inf
    beta = np.zeros(X.shape[1])
    converged = False
    for iteration in range(1, max_iter + 1):
        mu_eta = link.mu_eta(eta)
        w = pw * mu_eta * mu_eta / family.variance(mu)
        z = eta - offset + (y - mu) / mu_eta
        sw = np.sqrt(w)
        beta_new = np.linalg.lstsq(X * sw[:, None], z * sw, rcond=None)[0]
        step = 1.0
        for _ in range(MAX_HALVINGS):
            beta_c = beta + step * (beta_new - beta) if np.isfinite(dev) else beta_new
            eta_c = offset + X @ beta_c
            mu_c = link.linkinv(eta_c)
            dev_c = float(np.sum(family.dev_resid(y, mu_c, pw)))
            if np.isfinite(dev_c) and (not np.isfinite(dev) or dev_c <= dev * (1 + 1e-14)):
                break
            step *= 0.5
        if not np.isfinite(dev_c):
            break
        change = abs(dev - dev_c)
        beta, eta, mu = beta_c, eta_c, mu_c
        done = change <= GLM_TOLERANCE * (abs(dev_c) + 0.1)
        dev = dev_c
        if done:
            converged = True
            break
    mu_eta = link.mu_eta(eta)
    w = pw * mu_eta * mu_eta / family.variance(mu)
    vcov = np.linalg.pinv((X * w[:, None]).T @ X, hermitian=True)
    return GlmResult(beta, eta, mu, dev, vcov, iteration, converged)


@dataclass
class GlmmFit:
    """Everything a GLMM fit produces (see :func:`fit_glmm`)."""

    fixed_names: list[str]
    beta: np.ndarray  # all fixed effects, 0.0 for dropped columns
    kept: np.ndarray
    dropped: list[str]
    vcov: np.ndarray
    theta: np.ndarray
    objective: float
    n_evaluations: int
    converged: bool
    singular: bool
    terms: list[FittedTerm]
    n_obs: int
    family: Family
    nagq: int
    n_theta: int = 0
    conditional_covariances: list = field(default_factory=list)  # per term (m_t, p_t, p_t), b scale
    deviance: float = np.nan  # sum of deviance residuals at the modes
    sigma: float = 1.0
    reml: bool = False
    has_residual: bool = False

    @property
    def n_params(self) -> int:
        """Parameters counted by lme4's AIC for glmer: fixed effects and theta."""
        return len(self.kept) + self.n_theta

    @property
    def log_likelihood(self) -> float:
        return -0.5 * self.objective

    @property
    def aic(self) -> float:
        return self.objective + 2.0 * self.n_params

    @property
    def bic(self) -> float:
        return self.objective + self.n_params * np.log(self.n_obs)


@dataclass
class GlmmPrepared:
    problem: GlmmProblem
    terms: list[ReTerm]
    fixed_names: list[str]
    kept: np.ndarray
    dropped: list[str]
    rows: np.ndarray | None  # rows used (weights > 0), None for all


def prepare_glmm(data: GlmmData, family: Family, *, warn: bool = True) -> GlmmPrepared:
    """Fixed-effects design, terms and the GLMM problem: everything before the optimiser.

    Rows with prior weight 0 are left out; aliased fixed-effect columns are
    dropped (with a warning), as :func:`sklmm._engine.fit.prepare`.
    """
    X, y, weights, offset, groups, slopes = data.X, data.y, data.weights, data.offset, data.groups, data.slopes
    trials = data.trials
    rows = None
    if weights is not None and np.any(weights == 0):
        rows = weights > 0
        X, y, weights = X[rows], y[rows], weights[rows]
        trials = None if trials is None else trials[rows]
        slopes = None if slopes is None else slopes[rows]
        offset = None if offset is None else offset[rows]
        groups = None if groups is None else groups.loc[rows].reset_index(drop=True)
    family.check_response(y, np.ones_like(y) if weights is None else weights)
    n = len(y)
    fixed_names = ([INTERCEPT] if data.fit_intercept else []) + list(data.feature_names)
    design = np.column_stack([np.ones(n), X]) if data.fit_intercept else np.array(X, dtype=np.float64)
    kept = independent_columns(design, weights)
    dropped = [fixed_names[j] for j in range(len(fixed_names)) if j not in set(kept.tolist())]
    if dropped:
        if warn:
            _warnings.warn_rank_deficient(dropped, len(fixed_names))
        design = design[:, kept]
    terms = build_terms(data.specs, X, list(data.feature_names), groups, slopes) if data.specs else []
    for term in terms:
        if term.n_levels < 2:
            raise ValueError(
                f"grouping factor {term.factor_name!r} has only {term.n_levels} level; a random "
                "effect needs at least 2 levels (use a fixed effect instead)"
            )
    problem = GlmmProblem(terms, np.ascontiguousarray(design), y, weights, offset, family, trials)
    return GlmmPrepared(problem, terms, fixed_names, kept, dropped, rows)


def _fd_gradient(f, x: np.ndarray, value: float, lower: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Central differences (forward at a lower bound) of f at x."""
    grad = np.empty_like(x)
    for i in range(len(x)):
        h = steps[i]
        up = x.copy()
        up[i] += h
        if x[i] - h >= lower[i]:
            down = x.copy()
            down[i] -= h
            grad[i] = (f(up) - f(down)) / (2.0 * h)
        else:
            grad[i] = (f(up) - value) / h
    return grad


def fd_hessian(f, x: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Finite-difference Hessian of f at x: central on the diagonal, one-sided off it.

    ``H_ii = (f(x + h_i) - 2 f(x) + f(x - h_i)) / h_i^2`` and
    ``H_ij = (f(x + h_i + h_j) - f(x + h_i) - f(x + h_j) + f(x)) / (h_i h_j)``:
    k (k + 3) / 2 + 1 evaluations instead of 2 k^2 + 1, with an error of
    O(h) relative to the curvature (1e-3 at the steps used), far inside the
    2e-2 at which lme4's own finite-difference standard errors are matched.
    """
    return fd_derivatives(f, x, steps)[2]


def fd_derivatives(f, x: np.ndarray, steps: np.ndarray, f0: float | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """f(x), its central-difference gradient and :func:`fd_hessian`, from the same evaluations.

    The gradient ``(f(x + h_i) - f(x - h_i)) / (2 h_i)`` reuses the
    Hessian's diagonal evaluations, so it costs nothing extra; ``f0``, when
    given, is f(x) already known (one evaluation fewer).
    """
    k = len(x)
    f0 = f(x) if f0 is None else f0
    up = np.empty(k)
    grad = np.empty(k)
    H = np.empty((k, k))
    for i in range(k):
        e = np.zeros(k)
        e[i] = steps[i]
        up[i] = f(x + e)
        down = f(x - e)
        H[i, i] = (up[i] - 2.0 * f0 + down) / steps[i] ** 2
        grad[i] = (up[i] - down) / (2.0 * steps[i])
    for i in range(k):
        for j in range(i):
            e = np.zeros(k)
            e[i], e[j] = steps[i], steps[j]
            H[i, j] = H[j, i] = (f(x + e) - up[i] - up[j] + f0) / (steps[i] * steps[j])
    return f0, grad, H


def fit_glmm(data: GlmmData, family: Family, *, nagq: int = 1, max_evaluations: int = 10_000) -> GlmmFit:
    """Fit a GLMM as lme4's ``glmer``: GLM start, stage 1 (theta; beta by PIRLS), stage 2 (theta and beta).

    Parameters
    ----------
    data : GlmmData
    family : Family
    nagq : int
        0: stage 1 only (lme4's ``nAGQ = 0``); 1: Laplace; > 1: adaptive
        Gauss-Hermite quadrature with that many nodes (one scalar term only).
    max_evaluations : int
        Budget of objective evaluations per stage.

    Returns
    -------
    GlmmFit
    """
    prepared = prepare_glmm(data, family)
    # As the linear fit (fit.optimize): one BLAS thread where every matrix is small or
    # moderate; a second thread's spin-waiting made a 181-square Cholesky 100x slower on
    # a busy machine (measured: 119 ms instead of about 1 ms).
    single = prepared.problem.template.q_rest < SMALL_REST and prepared.problem.p < SMALL_REST
    with _blas_controller().limit(limits=1, user_api="blas") if single else contextlib.nullcontext():
        return _fit_glmm(prepared, family, nagq, max_evaluations)


def _fit_glmm(prepared: GlmmPrepared, family: Family, nagq: int, max_evaluations: int) -> GlmmFit:
    problem, terms = prepared.problem, prepared.terms
    if nagq > 1 and not (len(terms) == 1 and terms[0].n_columns == 1):
        raise ValueError(
            f"nagq={nagq} (adaptive Gauss-Hermite quadrature) needs a model with a single, scalar "
            "random-effects term, as lme4's nAGQ > 1; use nagq=1 (the Laplace approximation)"
        )
    p = problem.p
    # GLM start: IRLS from R's mustart, no random effects.
    glm = irls_glm(problem.X, problem.y, problem.pw, problem.offset, family)
    n_evaluations = glm.iterations
    converged = glm.converged
    if not terms:
        theta = np.empty(0)
        beta_hat, mu_hat = glm.beta, glm.mu
        objective = glm.deviance + problem.saturated
        vcov = glm.vcov
        fitted_terms, condcov = [], []
        _check_separation(family, problem.y, glm.mu)
        if not glm.converged:
            _warnings.warn_not_converged("IRLS did not converge", glm.iterations, 50)
    else:
        template = problem.template
        lower_theta = template.lower_bounds()
        theta_scale = template.theta_scales()
        memo = {"beta": glm.beta, "u": problem.zero_u()}
        n_evaluations = 0

        def stage1(theta):
            try:
                st = problem.pirls(theta, memo["beta"], memo["u"], joint=True, tol=SEARCH_TOLERANCE)
            except (np.linalg.LinAlgError, FloatingPointError, ValueError):
                return np.inf
            value = problem.laplace(st)
            if np.isfinite(value):
                memo["beta"], memo["u"] = st.beta, st.u
                memo["state"] = st
                return value
            return np.inf

        def stage1_grad(theta):
            value = stage1(theta)
            return value, _fd_gradient(stage1, theta, value, lower_theta, FD_STEP * theta_scale)

        start = template.initial_theta() * theta_scale
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            try:
                result1 = optimize_theta(stage1, stage1_grad, start, lower_theta, max_evaluations, scale=theta_scale, partners=template.column_partners())
            except NoFiniteObjective as error:
                raise ValueError(f"the Laplace objective could not be computed at any theta ({error}); rescale the columns of X") from None
        n_evaluations += result1.n_evaluations
        theta = result1.theta
        st1 = problem.pirls(theta, memo["beta"], memo["u"], joint=True)
        converged = result1.converged
        if nagq == 0:
            state, objective = st1, problem.laplace(st1)
            vcov = _vcov_from_factor(st1.linear, st1.factor)
        else:
            beta_scale = np.sqrt(np.diag(_vcov_from_factor(st1.linear, st1.factor)))
            beta_scale = np.where(np.isfinite(beta_scale) & (beta_scale > 0), beta_scale, 1.0)
            k = problem.n_theta
            lower = np.concatenate([lower_theta, np.full(p, -np.inf)])
            scale = np.concatenate([theta_scale, beta_scale])
            memo2 = {"u": st1.u, "x": None, "around": {}}
            steps = HESSIAN_STEP * scale

            def stage2(params, keep=True, tol=SEARCH_TOLERANCE):
                th, beta = params[:k], params[k:]
                start_u, offset = _difference_start(memo2, params, steps)
                try:
                    st = problem.pirls(th, beta, start_u, joint=False, tol=tol)
                except (np.linalg.LinAlgError, FloatingPointError, ValueError):
                    return np.inf
                value = problem.objective(st, th, nagq)
                if np.isfinite(value):
                    if keep:
                        memo2["u"], memo2["x"], memo2["around"] = st.u, params.copy(), {}
                    elif offset is not None and len(offset) == 1 and offset[0][1] == 1:
                        memo2["around"][offset[0][0]] = st.u
                return value if np.isfinite(value) else np.inf

            start2 = np.concatenate([theta, st1.beta])
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                # Newton's points keep their modes as the warm start of the
                # finite differences around them (fewer PIRLS iterations).
                result2, hessian = _minimize_newton(
                    lambda x: stage2(x, keep=True, tol=PIRLS_TOLERANCE), lambda x: stage2(x, keep=False, tol=PIRLS_TOLERANCE),
                    start2, lower, scale, max_evaluations,
                )
                if hessian is None:  # Newton could not finish (a bound, curvature): derivative-free from its best point
                    n_evaluations += result2.n_evaluations
                    result2 = _minimize_derivative_free(stage2, result2.theta, lower, scale, max_evaluations)
                n_evaluations += result2.n_evaluations
                converged = result2.converged
                theta, beta = result2.theta[:k], result2.theta[k:]
                state = problem.pirls(theta, beta, memo2["u"], joint=False)
                objective = problem.objective(state, theta, nagq)
                if nagq > 1:
                    # lme4 (1.1-31) reports -2 logLik for nAGQ > 1 without the
                    # saturated constant (its AGQ deviance); so does sklmm, so that
                    # objective_, logLik, AIC and BIC are lme4's.
                    objective -= problem.saturated
                if hessian is not None:
                    vcov = _vcov_from_matrix(hessian, k)
                else:
                    vcov = _vcov_from_hessian(lambda x: stage2(x, keep=False, tol=PIRLS_TOLERANCE), result2.theta, lower, scale, k)
                memo2["u"] = state.u
            if vcov is None:
                vcov = _vcov_from_joint(problem, state, theta)
        lams = template.lambdas(theta)
        b = [ut @ lam.T for ut, lam in zip(state.u, lams)]
        fitted_terms = [
            FittedTerm(t.factor_name, t.factors, t.columns, t.slope_index, t.levels, lam, b_t)
            for t, lam, b_t in zip(terms, lams, b)
        ]
        blocks = state.linear.conditional_covariances(state.factor)
        condcov = [lam @ blk @ lam.T for lam, blk in zip(lams, blocks)]
        if not converged:
            _warnings.warn_not_converged(result1.message if nagq == 0 else "the stage-2 optimiser stopped early", n_evaluations, max_evaluations)
        _check_separation(family, problem.y, state.mu)
        beta_hat, mu_hat = state.beta, state.mu

    lower = problem.template.lower_bounds()
    singular = bool(np.any(theta[lower == 0.0] < SINGULAR_TOLERANCE)) if len(theta) else False
    beta_all = np.zeros(len(prepared.fixed_names))
    beta_all[prepared.kept] = beta_hat
    fit = GlmmFit(
        fixed_names=prepared.fixed_names, beta=beta_all, kept=prepared.kept, dropped=prepared.dropped,
        vcov=vcov, theta=theta, objective=float(objective), n_evaluations=int(n_evaluations),
        converged=bool(converged), singular=singular, terms=fitted_terms,
        n_obs=problem.n if prepared.rows is None else len(prepared.rows),  # lme4's nobs counts rows of weight 0
        family=family, nagq=int(nagq), n_theta=problem.n_theta, conditional_covariances=condcov,
        deviance=float(np.sum(family.dev_resid(problem.y, mu_hat, problem.pw))),
    )
    if singular:
        _warnings.warn_singular(fit)
    return fit


def _difference_start(memo: dict, params: np.ndarray, steps: np.ndarray):
    """PIRLS's starting modes for a finite-difference point around the last kept point.

    The finite differences visit x + h_i, x - h_i and x + h_i + h_j around a
    centre x (``memo["x"]``, modes ``memo["u"]``).  The modes are smooth in
    (theta, beta), so from the modes at x + h_i (kept in ``memo["around"]``)
    ``2 u(x) - u(x + h_i)`` and ``u(x + h_i) + u(x + h_j) - u(x)`` are within
    O(h^2) of the modes at x - h_i and x + h_i + h_j: PIRLS then needs two
    iterations instead of three (measured on the reference cases).

    Returns (modes to start from, the point's offset from x as a list of
    (coordinate, +1/-1), or None when it is not such a point).
    """
    centre, u = memo["x"], memo["u"]
    if centre is None or len(centre) != len(params):
        return u, None
    ratio = (params - centre) / steps
    nearest = np.rint(ratio)
    if np.any(np.abs(ratio - nearest) > 1e-6) or np.any(np.abs(nearest) > 1):
        return u, None
    offset = [(int(i), int(nearest[i])) for i in np.flatnonzero(nearest)]
    around = memo["around"]
    if len(offset) == 1 and offset[0][1] == -1 and offset[0][0] in around:
        return [2.0 * a - b for a, b in zip(u, around[offset[0][0]])], offset
    if len(offset) == 2 and all(sign == 1 and i in around for i, sign in offset):
        (i, _), (j, _) = offset
        return [a + b - c for a, b, c in zip(around[i], around[j], u)], offset
    return u, offset


def _minimize_newton(f, probe, start: np.ndarray, lower: np.ndarray, scale: np.ndarray, max_evaluations: int):
    """Stage 2 by Newton's method on finite-difference derivatives, from stage 1's optimum.

    Stage 1 ends close to stage 2's optimum (the two objectives differ only
    in how beta is found), where the objective is nearly quadratic: each
    Newton step takes the gradient and Hessian of :func:`fd_derivatives` at
    the fit's Hessian steps (``HESSIAN_STEP`` standard errors of beta,
    natural units of theta; k (k + 3) / 2 evaluations), halving the step
    until the objective falls.  Once the Newton decrement ``g' H^-1 g / 2``
    (the predicted fall to the minimum) is below ``NEWTON_FINAL`` the last
    step is taken without another Hessian: the objective is then within
    about the square of that of its minimum, and the Hessian, from within
    ``sqrt(2 NEWTON_FINAL)`` standard errors of the optimum, is the one the
    fixed effects' covariance uses.  Measured against COBYQA (the previous
    stage 2) on the glmer reference cases: two Hessians in all, 2 to 5x
    fewer evaluations, the same optima to 1e-7 or lower.

    ``f`` evaluates the objective at the points Newton moves to, ``probe``
    at the finite-difference points around them (the same function; the
    caller may keep f's modes as warm starts).

    Returns
    -------
    (OptimizeResult, ndarray or None)
        The point reached and the Hessian there; the Hessian is ``None``
        when Newton could not finish (a theta within a step of its bound, a
        Hessian not positive definite, no fall along the step, or
        ``NEWTON_MAX_ITER`` steps): the result is then the best point found,
        for a derivative-free search to go on from.
    """
    steps = HESSIAN_STEP * scale
    x = start.copy()
    value = f(x)
    count = 1
    for _ in range(NEWTON_MAX_ITER):
        if np.any(x - steps < lower) or count + len(x) * (len(x) + 3) // 2 + 1 > max_evaluations:
            break
        value, grad, H = fd_derivatives(probe, x, steps, value)
        count += len(x) * (len(x) + 3) // 2
        if not (np.isfinite(value) and np.all(np.isfinite(grad)) and np.all(np.isfinite(H))):
            break
        try:
            factor = scipy.linalg.cho_factor(H, lower=True)
        except np.linalg.LinAlgError:
            break
        step = -scipy.linalg.cho_solve(factor, grad)
        decrement = -0.5 * float(grad @ step)
        if decrement <= NEWTON_DONE:
            return OptimizeResult(x, value, count, True, "Newton: converged"), H
        t = 1.0
        while t >= 1.0 / 64.0:
            trial = x + t * step
            if np.all(trial >= lower):
                trial_value = f(trial)
                count += 1
                if trial_value <= value:
                    break
            t *= 0.5
        else:
            break
        x, value = trial, trial_value
        if t == 1.0 and decrement <= NEWTON_FINAL:
            return OptimizeResult(x, value, count, True, "Newton: converged"), H
    return OptimizeResult(x, value, count, False, "Newton: stopped"), None


def _minimize_derivative_free(f, start: np.ndarray, lower: np.ndarray, scale: np.ndarray, max_evaluations: int) -> OptimizeResult:
    """Stage 2's fallback: COBYQA (the successor of lme4's BOBYQA) over (theta, beta) in the optimiser's units.

    Derivative-free, as lme4's and MixedModels.jl's second stage, where
    :func:`_minimize_newton` cannot finish (a theta at its bound, curvature
    not positive).  From its start, a trust region of 0.1 standard errors
    (and natural units of theta) shrinking to ``STAGE2_RADIUS`` of them.
    """
    count = [0]
    best = [np.inf, start.copy()]

    def g(x):
        count[0] += 1
        value = f(x * scale)
        if value < best[0]:
            best[0], best[1] = value, x * scale
        return value

    bounds = Bounds(lower / scale, np.full_like(lower, np.inf))
    result = minimize(
        g, start / scale, method="COBYQA", bounds=bounds,
        options={"maxfev": max_evaluations, "initial_tr_radius": 0.1, "final_tr_radius": STAGE2_RADIUS},
    )
    x = np.maximum(best[1], lower)
    return OptimizeResult(x, float(best[0]), count[0], bool(result.success), f"COBYQA: {result.message}")


def _vcov_from_factor(linear: ProfiledDeviance, factor: Factorization) -> np.ndarray:
    """(R_X' R_X)^-1 of a joint (X included) weighted problem: the PIRLS covariance of beta."""
    return linear.fixed_effects_cov(factor, 1.0)


def _vcov_from_joint(problem: GlmmProblem, state: PirlsState, theta: np.ndarray) -> np.ndarray:
    """(R_X' R_X)^-1 at the modes' working weights (lme4's ``use.hessian = FALSE``)."""
    family, link = problem.family, problem.family.link
    mu_eta = link.mu_eta(state.eta)
    w = problem.pw * mu_eta * mu_eta / family.variance(state.mu)
    # Any y not in [Z X]'s column space: R_X does not depend on it.  A draw
    # from a seed users are unlikely to use; should it fall in that space
    # anyway (the factorisation fails), another draw.
    for seed in _PLACEHOLDER_SEEDS:
        XY = np.column_stack([problem.X, np.random.default_rng(seed).normal(size=problem.n)])
        linear = problem.weighted.problem(XY, w)
        try:
            factor = linear.factorize(theta)
        except np.linalg.LinAlgError:
            continue
        return linear.fixed_effects_cov(factor, 1.0)
    raise np.linalg.LinAlgError("the fixed effects' covariance could not be factorised")


#: Seeds of the placeholder responses of :func:`_vcov_from_joint`.
_PLACEHOLDER_SEEDS = (0x5EED_C0F, 0xB0A7_5EED, 0x1729)


def _vcov_from_matrix(H: np.ndarray, k: int) -> np.ndarray:
    """2 H^-1 restricted to beta (H positive definite, as :func:`_minimize_newton` checks)."""
    inv = np.linalg.inv(H)
    V = 2.0 * inv[k:, k:]
    return (V + V.T) / 2.0


def _vcov_from_hessian(f, x: np.ndarray, lower: np.ndarray, scale: np.ndarray, k: int):
    """lme4's default ``vcov`` for glmer: 2 H^-1 restricted to beta, H the objective's Hessian.

    ``None`` if a theta sits at its bound (no two-sided differences) or the
    Hessian is not positive definite: the caller then uses R_X.
    """
    steps = HESSIAN_STEP * scale
    if np.any(x - steps < lower):
        return None
    H = fd_hessian(f, x, steps)
    if not np.all(np.isfinite(H)):
        return None
    try:
        np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        return None
    return _vcov_from_matrix(H, k)


def _check_separation(family: Family, y: np.ndarray, mu: np.ndarray) -> None:
    """Warn, as R's glm.fit, when fitted probabilities are numerically 0 or 1."""
    if family.name != "binomial":
        return
    extreme = (mu < _SEPARATION_EPS) | (mu > 1.0 - _SEPARATION_EPS)
    if np.any(extreme):
        _warnings.warn_separation(int(np.sum(extreme)), len(y))
