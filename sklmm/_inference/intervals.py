"""Prediction intervals for new observations of a linear mixed model.

For a new observation ``y0 = x0' beta + z0' b + e0`` the interval is
``prediction -/+ z_{(1+level)/2} sqrt(var)``, with ``var`` the variance of
the prediction error ``y0 - prediction`` given the variance parameters:

* a term whose level was seen in fit: the prediction uses the level's
  conditional mode; its error variance is the conditional mean squared
  error of ``x0' beta_hat + z0' b_hat`` (the uncertainty of beta_hat and
  of b_hat, :func:`sklmm._inference.condvar.prediction_standard_errors`);
* a term whose level is new (or every term when ``groups=None``): the
  random effect is predicted by 0 and its whole variance
  ``z0_t' Sigma_t z0_t`` (``Sigma_t = sigma^2 lambda_t lambda_t'``) is added;
* always the residual variance sigma^2 of the new observation (weight 1).

The uncertainty of the variance parameters themselves (theta, sigma) is
not included, so the intervals are somewhat too narrow in small samples;
quantiles are normal.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .._model.terms import lookup_levels
from .condvar import prediction_standard_errors


def _term_columns(term, source: np.ndarray, rows: np.ndarray) -> np.ndarray:
    z = np.ones((len(rows), len(term.columns)))
    for j, column in enumerate(term.slope_index):
        if column is not None:
            z[:, j] = source[rows, column]
    return z


def new_level_variance(est, source: np.ndarray, frame) -> np.ndarray:
    """Per row, the variance of the random effects whose level is unknown (all, without grouping factors)."""
    n = source.shape[0]
    total = np.zeros(n)
    sigma2 = est.sigma_**2
    for term in est._fitted_terms:
        unknown = np.ones(n, dtype=bool)
        if frame is not None and all(name in frame.columns for name in term.factors):
            unknown = lookup_levels(frame, term.factors, term.levels) < 0
        if not unknown.any():
            continue
        rows = np.flatnonzero(unknown)
        z = _term_columns(term, source, rows)
        Sigma = sigma2 * term.lam @ term.lam.T
        total[rows] += np.einsum("ij,jk,ik->i", z, Sigma, z)
    return total


def prediction_interval(est, X: np.ndarray, source: np.ndarray, frame, offset, level: float, index=None) -> pd.DataFrame:
    """See :meth:`MixedLinearRegressor.predict_interval` (inputs from its ``_prediction_inputs``)."""
    if not 0 < level < 1:
        raise ValueError(f"level={level!r} must be between 0 and 1")
    prediction = est._predict_arrays(X, source, frame, offset)
    se_fit = prediction_standard_errors(est, X, source, frame)
    var = se_fit**2 + new_level_variance(est, source, frame) + est.sigma_**2
    sd = np.sqrt(var)
    z = stats.norm.ppf(0.5 + level / 2.0)
    out = pd.DataFrame({"fit": prediction, "lower": prediction - z * sd, "upper": prediction + z * sd, "se": sd})
    if index is not None:
        out.index = index
    return out
