"""Minimise the profiled objective over theta.

The optimiser is scipy's COBYQA (Powell's derivative-free trust-region method
with bounds, the successor of the BOBYQA that lme4 uses through nloptr).
Measured on the ten reference cases, REML and ML (benchmarks/optimizers.py):
COBYQA reaches lme4's optimum or better on all of them with about 1.5x
lme4's evaluations; L-BFGS-B with finite-difference gradients stops early on
crossed models (chem97: 1.6 units of deviance short), and Powell needs 5-10x
the evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, minimize

#: COBYQA's final trust-region radius: theta is on the scale of a ratio of
#: standard deviations, so 1e-7 resolves the objective far below 1e-6.
FINAL_RADIUS = 1e-7


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
        Objective evaluations used.
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


def optimize_theta(objective, theta0: np.ndarray, lower: np.ndarray, max_evaluations: int) -> OptimizeResult:
    """Minimise ``objective(theta)`` subject to ``theta >= lower``.

    Parameters
    ----------
    objective : callable
        theta -> float (``inf`` where undefined).
    theta0 : ndarray
        Starting value, feasible.
    lower : ndarray
        Lower bounds (0 for diagonal elements of lambda, -inf elsewhere).
    max_evaluations : int
        Budget of objective evaluations.

    Returns
    -------
    OptimizeResult
    """
    if theta0.size == 0:
        return OptimizeResult(theta0, float(objective(theta0)), 1, True, "no parameters")

    best = {"theta": theta0.copy(), "value": np.inf}
    count = [0]

    def tracked(theta):
        count[0] += 1
        value = objective(theta)
        if value < best["value"]:
            best["theta"], best["value"] = np.array(theta, copy=True), value
        return value

    result = minimize(
        tracked,
        theta0,
        method="COBYQA",
        bounds=Bounds(lower, np.full_like(lower, np.inf)),
        options={"maxfev": max_evaluations, "final_tr_radius": FINAL_RADIUS},
    )
    # COBYQA returns its best point, but keep the best ever seen in case the
    # last step was not an improvement.
    theta = np.maximum(best["theta"], lower)
    value = float(objective(theta)) if np.any(theta != best["theta"]) else best["value"]
    converged = bool(result.success) and np.isfinite(value)
    return OptimizeResult(theta, value, count[0], converged, str(result.message))
