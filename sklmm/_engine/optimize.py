"""Minimise the profiled objective over theta.

The optimiser is L-BFGS-B with the analytic gradient of
:meth:`ProfiledDeviance.objective_and_gradient`.  Measured on the ten
reference cases, REML and ML (``python benchmarks/optimizers.py``): 246
evaluations in all, each with its gradient, against lme4's 680 BOBYQA
evaluations and scipy COBYQA's 983, and 0.13 s against COBYQA's 1.0 s
(COBYQA is pure Python); every optimum within 1e-9 of lme4's or better.
L-BFGS-B with finite-difference gradients stops 1.6 units of deviance short
on chem97; Powell and Nelder-Mead need 5-10x the evaluations.

The optimiser works on theta divided by a natural unit per element (the
caller's ``scale``: ProfiledDeviance.theta_scales), so steps and tolerances
mean the same whatever the units of the covariates or the weights.  For
large models of scalar terms the caller passes a moment estimate as a second
start and units of the criterion's curvature instead (``alternative_start``): the
moment start is evaluated with its gradient and a few quasi-Newton steps
(the Hessian starting as the identity, updated by BFGS with each step's
secant) precede L-BFGS-B, whose first step is only one unit long.
Safeguards, each prompted by a case of tests/test_hard_designs.py:

* The objective depends on a scalar term's theta only through theta^2 (and
  on a column of lambda only up to its sign), so its gradient is zero at a
  bound of zero even when moving off the bound lowers it.  A diagonal
  element that ends near zero is probed at small positive values, also with
  the signs of the elements below it in its column flipped; if that is
  better, the optimiser restarts from there.
* Near the boundary, models with random slopes can have a second local
  minimum: for a near-singular optimum, COBYQA (derivative-free, the
  successor of lme4's BOBYQA) also searches from the start, and the better
  optimum is kept.
* If L-BFGS-B stops without meeting its tolerance (a line search that cannot
  make progress at the limit of floating-point precision), COBYQA polishes
  from the point reached.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy
from scipy.optimize import Bounds, minimize

#: COBYQA's final trust-region radius (fallback polish).
FINAL_RADIUS = 1e-7
#: theta elements below this (in the optimiser's units), with a lower bound of
#: zero, are "at the boundary" and probed: near the face, the objective's
#: dependence on theta^2 leaves a gradient too small to leave it.
_BOUNDARY = 1e-2
#: A projected gradient below this times max(1, |objective|) is converged.
#: Near the optimum a step along a gradient g lowers the objective by about
#: g^2 / (2 H) (H the curvature), which rounding hides once it is below
#: eps |objective|: on the reference cases L-BFGS-B stalls at gradients of
#: 1e-8 to 2e-8 |objective|.  At 1e-7 |objective| the objective is within
#: g^2 / (2 H) < 1e-5 of the optimum even for a curvature as flat as 1e-3.
_GRADIENT_TOLERANCE = 1e-7
#: Probe steps off the boundary.
_PROBES = (1e-3, 1e-1)
#: Up to this many elements, the projected gradient is taken in Python floats.
_FEW = 8


@dataclass
class OptimizeResult:
    """What the optimiser found.

    Attributes
    ----------
    theta : ndarray
        The minimiser.
    objective : float
        Objective at theta.
    n_evaluations : int
        Objective evaluations used (each L-BFGS-B evaluation includes the
        gradient).
    converged : bool
        Whether the optimiser met its tolerance within ``max_evaluations``.
    message : str
        The optimiser's own account of how it stopped.
    """

    theta: np.ndarray
    objective: float
    n_evaluations: int
    converged: bool
    message: str


class _BudgetExhausted(Exception):
    """Raised inside the objective when max_evaluations is used up."""


class _Stationary(Exception):
    """Raised inside the objective at a point whose projected gradient is negligible."""


class _Counted:
    """Wraps the objective functions, counting calls and keeping the best point.

    Raises :class:`_BudgetExhausted` instead of exceeding the budget, so
    ``n_evaluations`` never exceeds ``max_evaluations``.
    """

    def __init__(self, objective, objective_and_gradient, budget: int, lower: np.ndarray):
        self._objective = objective
        self._objective_and_gradient = objective_and_gradient
        self.budget = budget
        self.lower = lower
        self.count = 0
        self.best_theta = None
        self.best_value = np.inf
        self._recent = []  # (theta, value, gradient) of the last few value_and_gradient calls

    def _keep(self, theta, value):
        if value < self.best_value:
            self.best_theta, self.best_value = np.array(theta, copy=True), value

    def _count(self):
        if self.count >= self.budget:
            raise _BudgetExhausted
        self.count += 1

    def value(self, theta):
        self._count()
        value = self._objective(theta)
        self._keep(theta, value)
        return value

    def value_and_gradient(self, theta):
        # a point evaluated just before (L-BFGS-B starting where the Newton steps
        # ended): no new evaluation
        for seen, value, grad in self._recent:
            if np.array_equal(theta, seen):
                return value, grad.copy()
        self._count()
        value, grad = self._objective_and_gradient(theta)
        self._recent = [(np.array(theta, copy=True), value, np.array(grad, copy=True))] + self._recent[:2]
        self._keep(theta, value)
        if np.isfinite(value) and value <= self.best_value and _projected_gradient(theta, grad, self.lower) <= _GRADIENT_TOLERANCE * max(1.0, abs(value)):
            raise _Stationary
        return value, grad


class NoFiniteObjective(ArithmeticError):
    """The objective was not finite at any theta tried."""


def optimize_theta(
    objective,
    objective_and_gradient,
    theta0: np.ndarray,
    lower: np.ndarray,
    max_evaluations: int,
    scale: np.ndarray | None = None,
    partners: dict[int, list[int]] | None = None,
    second_opinion: bool = True,
    alternative_start: np.ndarray | None = None,
) -> OptimizeResult:
    """Minimise the objective over theta subject to ``theta >= lower``.

    Parameters
    ----------
    objective : callable
        theta -> float (``inf`` where undefined).
    objective_and_gradient : callable
        theta -> (float, ndarray).
    theta0 : ndarray
        Starting value, feasible.
    lower : ndarray
        Lower bounds (0 for diagonal elements of lambda, -inf elsewhere).
    max_evaluations : int
        Budget of objective evaluations.
    scale : ndarray, optional
        Natural unit of each element of theta (positive); the optimiser works
        on ``theta / scale``, so tolerances and steps mean the same whatever
        the data's units.
    partners : dict, optional
        For each diagonal element, the elements below it in its column of
        lambda, whose signs the boundary probe flips.
    second_opinion : bool, default=True
        Search again with COBYQA from the start when the optimum is near
        the boundary (see the module docstring).  The bootstrap's refits
        turn it off: COBYQA is pure Python, and one search cost about 50
        refits; they restart from lme4's start instead, as lme4's refits
        run one local optimiser.
    alternative_start : ndarray, optional
        A second candidate start (feasible, in theta's units: a moment
        estimate), given with ``scale`` in units of the objective's curvature
        (its Hessian near the identity in them).  lme4's start ``theta0`` is
        evaluated, then the candidate with its gradient; if the candidate is
        the better, quasi-Newton steps from that identity Hessian, updated
        by BFGS (at most ``NEWTON_START_STEPS``, each kept only if the
        objective falls), precede L-BFGS-B, whose first steps are only one
        unit long.  From a moment start many units from the optimum (a
        600,000-row users x items model: 13) this saves evaluations; the
        BFGS update saves one more where the units are some way off (the
        ml-latest-shaped model at scales 0.02 and 0.05: 6 evaluations
        instead of 7).  All are counted.  The
        boundary probe and the second opinion still refer to ``theta0``.

    Returns
    -------
    OptimizeResult

    Raises
    ------
    NoFiniteObjective
        If no theta tried gave a finite objective.
    """
    if theta0.size == 0:
        return OptimizeResult(theta0, float(objective(theta0)), 1, True, "no parameters")
    scale = np.ones_like(theta0) if scale is None else np.asarray(scale, dtype=np.float64)
    lower_scaled = lower / scale

    def value_scaled(t):
        return objective(t * scale)

    def value_and_gradient_scaled(t):
        value, grad = objective_and_gradient(t * scale)
        return value, grad * scale

    f = _Counted(value_scaled, value_and_gradient_scaled, max_evaluations, lower_scaled)
    bounds = _LazyBounds(lower_scaled)
    start = theta0 / scale
    converged, message = False, ""
    try:
        stationary = False
        if alternative_start is not None:
            candidate = np.maximum(np.asarray(alternative_start, dtype=np.float64), lower) / scale
            start_value = f.value(start)
            try:
                value, grad = f.value_and_gradient(candidate)
                if value < start_value:
                    start = _newton_steps(f, candidate, value, grad, lower_scaled)
            except _Stationary:
                stationary = True
                converged, message = True, "converged: projected gradient below tolerance"
        for _restart in range(0 if stationary else 4):
            try:
                # ftol=0: L-BFGS-B's relative-reduction test stops early on
                # badly scaled theta (chem97); convergence is decided by the
                # projected gradient instead (see _Counted).
                result = _lbfgsb(f.value_and_gradient, start, lower_scaled, max_evaluations)
                # L-BFGS-B stopped on its own (a stalled line search, most
                # often): accept a gradient at rounding level, else polish.
                if f.best_theta is None:
                    break
                if _projected_gradient(result.x, result.jac, lower_scaled) <= 10 * _GRADIENT_TOLERANCE * max(1.0, abs(result.fun)):
                    converged, message = True, f"converged: {result.message}"
                else:
                    converged, message = _polish(f, bounds.get())
            except _Stationary:
                converged, message = True, "converged: projected gradient below tolerance"
            better = _probe_boundary(f, lower_scaled, partners or {})
            if better is None:
                break
            start = better
        if second_opinion and f.best_theta is not None and len(start) > 1 and np.any((lower_scaled == 0.0) & (f.best_theta < _BOUNDARY)):
            improved = _second_opinion(f, bounds.get(), theta0 / scale)
            if improved:
                message = f"{message}; a derivative-free search from the start found a better optimum"
    except _BudgetExhausted:
        converged, message = False, f"stopped after max_evaluations={max_evaluations} evaluations"
    if f.best_theta is None:
        raise NoFiniteObjective(f"the objective was not finite at any of the {f.count} values of theta tried")
    theta = np.maximum(f.best_theta * scale, lower)
    return OptimizeResult(theta, float(f.best_value), f.count, converged and np.isfinite(f.best_value), message)


class _LazyBounds:
    """scipy's Bounds for the derivative-free searches, made only if one runs (most fits need none)."""

    def __init__(self, lower: np.ndarray):
        self.lower, self._bounds = lower, None

    def get(self) -> Bounds:
        if self._bounds is None:
            self._bounds = Bounds(self.lower, np.full_like(self.lower, np.inf))
        return self._bounds


@dataclass
class _LbfgsbResult:
    x: np.ndarray
    fun: float
    jac: np.ndarray
    message: str


def _setulb_driver_available() -> bool:
    """Whether scipy's L-BFGS-B routine has the C interface (scipy >= 1.15) that :func:`_lbfgsb` drives."""
    try:
        major, minor = (int(part) for part in scipy.__version__.split(".")[:2])
        from scipy.optimize import _lbfgsb  # noqa: F401
        from scipy.optimize._lbfgsb_py import status_messages, task_messages  # noqa: F401
    except (ImportError, ValueError):
        return False
    return (major, minor) >= (1, 15)


_SETULB = _setulb_driver_available()


def _lbfgsb(value_and_gradient, x0: np.ndarray, lower: np.ndarray, max_evaluations: int) -> _LbfgsbResult:
    """L-BFGS-B from x0 with lower bounds only, ``ftol = gtol = 0``: scipy's routine, driven directly.

    The loop of ``scipy.optimize.minimize(method="L-BFGS-B")`` (scipy's
    ``_minimize_lbfgsb``: the same calls of its compiled ``setulb`` with the
    same arguments, so the same iterates and evaluations) without its
    generic wrappers (``ScalarFunction``, memoisation, copies, bounds
    conversion), which cost about as much as a small model's evaluations.
    Falls back to ``minimize`` where scipy's routine has another interface
    (scipy < 1.15).
    """
    if not _SETULB:
        result = minimize(
            value_and_gradient, x0, jac=True, method="L-BFGS-B", bounds=Bounds(lower, np.full_like(lower, np.inf)),
            options={"maxfun": max_evaluations, "maxiter": max_evaluations, "ftol": 0.0, "gtol": 0.0},
        )
        return _LbfgsbResult(result.x, float(result.fun), result.jac, result.message)
    from scipy.optimize import _lbfgsb
    from scipy.optimize._lbfgsb_py import status_messages, task_messages

    m = 10  # scipy's default maxcor
    n = x0.size
    bounded = np.isfinite(lower)
    nbd = bounded.astype(np.int32)  # 1: lower bound only, 0: unbounded
    low = np.where(bounded, lower, 0.0)
    upper = np.zeros(n)
    x = np.clip(np.asarray(x0, dtype=np.float64).ravel(), lower, np.inf)
    f = np.array(0.0)
    g = np.zeros(n)
    wa = np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m)
    iwa = np.zeros(3 * n, dtype=np.int32)
    task = np.zeros(2, dtype=np.int32)
    ln_task = np.zeros(2, dtype=np.int32)
    lsave = np.zeros(4, dtype=np.int32)
    isave = np.zeros(44, dtype=np.int32)
    dsave = np.zeros(29)
    evaluated_x = None
    n_evaluations = n_iterations = 0
    while True:
        _lbfgsb.setulb(m, x, low, upper, nbd, f, g, 0.0, 0.0, wa, iwa, task, lsave, isave, dsave, 20, ln_task)
        if task[0] == 3:  # f and g wanted at x (scipy memoises: no new evaluation at the same x)
            if evaluated_x is None or not (x == evaluated_x).all():
                evaluated_x = x.copy()
                value, grad = value_and_gradient(x.copy())
                n_evaluations += 1
                f = float(value)
                g = np.array(grad, dtype=np.float64).ravel()
        elif task[0] == 1:  # a new iterate
            n_iterations += 1
            if n_iterations >= max_evaluations:
                task[0], task[1] = 5, 504
            elif n_evaluations > max_evaluations:
                task[0], task[1] = 5, 502
        else:
            break
    message = status_messages[int(task[0])] + ": " + task_messages[int(task[1])]
    return _LbfgsbResult(x, float(f), g, message)


#: Quasi-Newton steps from a moment start in curvature units (see optimize_theta's alternative_start).
NEWTON_START_STEPS = 3


def _newton_steps(f: _Counted, x: np.ndarray, value: float, grad: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Quasi-Newton steps ``x - H^-1 grad`` from the moment start, each kept only if the objective falls.

    ``H`` starts as the identity (the Hessian in curvature units) and takes
    each kept step's secant by the BFGS update (skipped where the step's
    curvature ``s'y`` is not positive), so that the later steps correct the
    units' error instead of converging linearly with it.

    Raises :class:`_Stationary` (from ``f``) at a point that is already converged.
    """
    hessian = np.eye(len(x))
    for _ in range(NEWTON_START_STEPS):
        trial = np.maximum(x - np.linalg.solve(hessian, grad), lower)
        trial_value, trial_grad = f.value_and_gradient(trial)
        if not trial_value < value:
            break
        s, y = trial - x, trial_grad - grad
        sy = float(s @ y)
        if sy > 0.0 and np.isfinite(sy):
            hs = hessian @ s
            hessian = hessian - np.outer(hs, hs) / float(s @ hs) + np.outer(y, y) / sy
        x, value, grad = trial, trial_value, trial_grad
    return x


def _projected_gradient(theta: np.ndarray, grad: np.ndarray, lower: np.ndarray) -> float:
    """Largest gradient component not blocked by an active lower bound.

    Each component is taken per relative change of its coordinate where that
    coordinate is large (|theta| > 1, in the optimiser's units): there the
    objective's curvature falls like 1 / theta^2 and an absolute test would
    stop far from the optimum.
    """
    if len(theta) <= _FEW:  # a few elements: Python floats (a tenth of the array operations' overhead)
        largest = 0.0
        for t, g, low in zip(theta.tolist(), grad.tolist(), lower.tolist()):
            if t <= low and g > 0:
                continue
            value = abs(g) * max(1.0, abs(t))
            if value != value:  # NaN, as np.max would return it
                return value
            largest = max(largest, value)
        return largest
    blocked = (theta <= lower) & (grad > 0)
    return float(np.max(np.abs(np.where(blocked, 0.0, grad)) * np.maximum(1.0, np.abs(theta)), initial=0.0))


def _polish(f: _Counted, bounds: Bounds) -> tuple[bool, str]:
    """Derivative-free finish from the best point so far."""
    result = minimize(
        f.value, f.best_theta, method="COBYQA", bounds=bounds,
        options={"maxfev": f.budget, "initial_tr_radius": 0.05, "final_tr_radius": FINAL_RADIUS},
    )
    return bool(result.success), f"L-BFGS-B line search stalled; COBYQA polish: {result.message}"


def _second_opinion(f: _Counted, bounds: Bounds, start: np.ndarray) -> bool:
    """COBYQA from the start; True if it found a better optimum than the one reached.

    Near the boundary the profiled criterion of a model with random slopes can
    have a second local minimum (the reliability tests have cases 0.02 to 0.1
    apart).  A gradient method and a derivative-free trust-region method
    (BOBYQA, lme4's) take different paths from the same start; on those
    cases each misses the global optimum on some, and the better of the two
    finds it on all.  Used only for near-singular fits.
    """
    before = f.best_value
    minimize(
        f.value, start, method="COBYQA", bounds=bounds,
        options={"maxfev": 200 * len(start), "final_tr_radius": FINAL_RADIUS},
    )
    return f.best_value < before - 1e-10 * max(1.0, abs(before))


def _probe_boundary(f: _Counted, lower: np.ndarray, partners: dict[int, list[int]]):
    """A better point just off the boundary, or None.

    Moves each bounded coordinate that sits at the boundary to each probe
    step, keeping the others at the best point; for a diagonal element of
    lambda, also with the signs of the elements below it in its column
    flipped (at the boundary they do not change the objective, but they
    decide which way off it is downhill).
    """
    theta = f.best_theta
    if theta is None:
        return None
    at_bound = np.flatnonzero((lower == 0.0) & (theta < _BOUNDARY))
    for i in at_bound:
        below = [j for j in partners.get(int(i), []) if theta[j] != 0.0]
        for flip in (False, True) if below else (False,):
            for step in _PROBES:
                trial = theta.copy()
                trial[i] = step
                if flip:
                    trial[below] = -trial[below]
                current = f.best_value
                value = f.value(trial)
                if value < current - 1e-10 * max(1.0, abs(current)):
                    return trial
    return None


def optimize_near(objective_and_gradient, theta0: np.ndarray, lower: np.ndarray, scale: np.ndarray,
                  inverse_hessian: np.ndarray, max_evaluations: int) -> OptimizeResult | None:
    """Quasi-Newton (BFGS) from a start near the optimum, with a known inverse Hessian; None where it does not apply.

    For refits of nearly the same problem (the bootstrap's replicates, which
    differ from the fitted model in the response only): the objective's
    inverse Hessian at the fitted optimum, in the optimiser's units
    (``theta / scale``), makes the first steps Newton steps, where L-BFGS-B
    starts from steepest descent with a step of unit length.  The optimum is
    accepted by the test :func:`optimize_theta` applies (projected gradient
    below ``_GRADIENT_TOLERANCE * max(1, |objective|)``).  Returns None, and
    the caller optimises as usual, if a step fails to lower the objective,
    a bounded element of theta comes near its bound (``_BOUNDARY``, where
    :func:`optimize_theta` probes the boundary), or 30 iterations or the
    budget do not suffice.

    Parameters
    ----------
    objective_and_gradient : callable
        theta -> (float, ndarray).
    theta0, lower, scale : ndarray
        Start, lower bounds and natural units, as :func:`optimize_theta`'s.
    inverse_hessian : ndarray (n_theta, n_theta)
        Symmetric positive definite, in the optimiser's units.
    max_evaluations : int

    Returns
    -------
    OptimizeResult or None
    """
    lower_scaled = lower / scale
    bounded = lower_scaled == 0.0
    count = 0

    def evaluate(x):
        nonlocal count
        count += 1
        value, grad = objective_and_gradient(x * scale)
        return float(value), np.asarray(grad, dtype=np.float64) * scale

    x = np.asarray(theta0, dtype=np.float64) / scale
    if np.any(x[bounded] < _BOUNDARY):
        return None
    H = np.array(inverse_hessian, dtype=np.float64, copy=True)
    f, g = evaluate(x)
    for _iteration in range(30):
        if not np.isfinite(f):
            return None
        if _projected_gradient(x, g, lower_scaled) <= _GRADIENT_TOLERANCE * max(1.0, abs(f)):
            theta = np.maximum(x * scale, lower)
            return OptimizeResult(theta, f, count, True, "converged: quasi-Newton from a nearby optimum")
        direction = -(H @ g)
        slope = float(g @ direction)
        if not slope < 0.0:
            return None
        step = 1.0
        for _halving in range(8):  # backtracking (Armijo)
            trial = x + step * direction
            if np.any(trial[bounded] < _BOUNDARY) or count >= max_evaluations:
                return None
            f_new, g_new = evaluate(trial)
            if np.isfinite(f_new) and f_new <= f + 1e-4 * step * slope:
                break
            step *= 0.5
        else:
            return None
        s, y = trial - x, g_new - g
        sy = float(s @ y)
        if sy > 1e-12 * float(np.sqrt((s @ s) * (y @ y))):  # BFGS update of the inverse Hessian
            rho = 1.0 / sy
            Hy = H @ y
            H = H + ((sy + y @ Hy) * rho * rho) * np.outer(s, s) - rho * (np.outer(Hy, s) + np.outer(s, Hy))
        x, f, g = trial, f_new, g_new
    return None


def inverse_hessian_at(objective_and_gradient, theta: np.ndarray, lower: np.ndarray, scale: np.ndarray, step: float = 1e-4) -> np.ndarray | None:
    """The objective's inverse Hessian at theta in the optimiser's units (central differences of the gradient), or None.

    None unless theta is away from its bounds (``_BOUNDARY`` and the step)
    and the Hessian is finite and positive definite.  Costs 2 n_theta
    gradient evaluations.
    """
    x = np.asarray(theta, dtype=np.float64) / scale
    lower_scaled = lower / scale
    if np.any(x[lower_scaled == 0.0] < max(_BOUNDARY, 2 * step)):
        return None
    k = x.size
    H = np.empty((k, k))
    for i in range(k):
        grads = []
        for sign in (1.0, -1.0):
            trial = x.copy()
            trial[i] += sign * step
            value, grad = objective_and_gradient(trial * scale)
            if not np.isfinite(value):
                return None
            grads.append(np.asarray(grad, dtype=np.float64) * scale)
        H[:, i] = (grads[0] - grads[1]) / (2 * step)
    H = (H + H.T) / 2.0
    if not np.all(np.isfinite(H)):
        return None
    try:
        factor = np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        return None
    inverse = np.linalg.inv(factor)
    return inverse.T @ inverse
