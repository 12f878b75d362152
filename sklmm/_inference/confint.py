"""Confidence intervals for the parameters of a fitted model, as lme4's ``confint.merMod``.

Rows are lme4's parameters with its ``oldNames = FALSE`` names (see
:mod:`sklmm._parameters`): per random-effects term its standard deviations
and correlations, then ``sigma``, then the fixed effects by name.  Three
methods:

``"wald"``
    ``estimate -/+ qnorm(1 - alpha/2) std_error`` for the fixed effects.  As
    lme4, the frame has every parameter's row, and the variance parameters'
    limits are NaN (Wald intervals for them are not offered);
    ``parm="beta_"`` gives the fixed effects alone.
``"profile"``
    Profile-likelihood intervals (:mod:`sklmm._inference.profile`); lme4's default.
``"bootstrap"``
    Percentile intervals of a parametric bootstrap (:mod:`sklmm._inference.bootstrap`).

The same three for a binomial or Poisson GLMM (no ``sigma`` row; the
profile is of the fit's Laplace or quadrature deviance, the bootstrap
refits each draw by PIRLS).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm

from .._model import parameters as _parameters

METHODS = {"wald": "wald", "profile": "profile", "bootstrap": "bootstrap", "boot": "bootstrap"}


def parameter_index(est) -> tuple[list[str], list[str]]:
    """(variance parameter names with sigma, fixed-effect names) of a fitted model.

    A binomial or Poisson GLMM has no sigma (lme4's ``confint`` of a glmer
    fit has no ``sigma`` row).
    """
    variance = _parameters.parameter_names(est._fitted_terms)
    if getattr(est, "family_", None) is not None:
        variance = variance[:-1]
    return variance, list(est.fixed_effects_.index)


def select_parameters(est, parm) -> list[str]:
    """lme4's ``parm``: None (all), ``"theta_"`` (variance parameters and sigma),
    ``"beta_"`` (fixed effects), a name, or a list of names (kept in its order)."""
    variance, fixed = parameter_index(est)
    every = variance + fixed
    if parm is None:
        return every
    if isinstance(parm, str):
        if parm == "theta_":
            return variance
        if parm == "beta_":
            return fixed
        parm = [parm]
    chosen = list(parm)
    unknown = [name for name in chosen if name not in every]
    if unknown:
        raise KeyError(f"unknown parameter(s) {unknown}; the model's parameters are {every} (or 'theta_', 'beta_')")
    return chosen


def _frame(rows, names, method: str, level: float) -> pd.DataFrame:
    frame = pd.DataFrame(np.asarray(rows, dtype=float).reshape(len(names), 2), index=pd.Index(names, dtype=object), columns=["lower", "upper"])
    frame.attrs.update({"method": method, "level": level})
    return frame


def wald_confint(est, level: float, names: list[str]) -> pd.DataFrame:
    """Wald limits for the fixed effects, NaN for the variance parameters (lme4's layout)."""
    z = norm.ppf(0.5 + level / 2.0)
    table = est.fixed_effects_
    rows = []
    for name in names:
        if name in table.index:
            estimate, se = table.loc[name, "estimate"], table.loc[name, "std_error"]
            rows.append((estimate - z * se, estimate + z * se))
        else:
            rows.append((np.nan, np.nan))
    return _frame(rows, names, "wald", level)


def confint(est, method: str = "profile", level: float = 0.95, parm=None, n_boot: int = 500, random_state=None, n_jobs=None) -> pd.DataFrame:
    """Dispatch to the interval method; see :meth:`MixedLinearRegressor.confint`."""
    key = METHODS.get(str(method).lower())
    if key is None:
        raise ValueError(f"method={method!r}: use 'wald', 'profile' or 'bootstrap'")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level!r} must be between 0 and 1")
    names = select_parameters(est, parm)
    if key == "wald":
        return wald_confint(est, level, names)
    if key == "profile":
        from .profile import profile_confint

        frame = profile_confint(est, level, names, n_jobs=n_jobs)
        frame.attrs.update({"method": "profile", "level": level})
        return frame
    from .bootstrap import parametric_bootstrap

    result = parametric_bootstrap(est, n_boot=n_boot, random_state=random_state, n_jobs=n_jobs)
    frame = result.percentile_intervals(level).loc[names]
    frame.index = pd.Index(names, dtype=object)
    frame.attrs.update(
        {"method": "bootstrap", "level": level, "n_boot": n_boot, "n_failed": result.n_failed, "messages": list(result.messages)}
    )
    return frame

