"""Variance parameters on lme4's "sdcor" scale: standard deviations, correlations, sigma.

The optimiser works with theta (the relative covariance factors); inference
reports the random-effects covariance the way lme4's ``confint`` and
``profile`` do: per term, the lower triangle, column by column, of a matrix
holding the standard deviations on its diagonal and the correlations below
it, then the residual standard deviation::

    sd_(Intercept)|Subject, cor_Days.(Intercept)|Subject, sd_Days|Subject, sigma

(lme4's ``confint(oldNames = FALSE)`` names).  The position of each value is
the position of the matching element of theta, so the two scales convert
term by term: ``Sigma_t = sigma^2 lambda_t lambda_t'`` and back
``lambda_t = diag(sd) chol(R) / sigma``.
"""

from __future__ import annotations

import numpy as np

from .terms import lower_triangle_colmajor


def parameter_names(terms) -> list[str]:
    """lme4's ``oldNames = FALSE`` names of the variance parameters, then ``sigma``.

    Parameters
    ----------
    terms : sequence
        Random-effects terms in theta's order, each with ``columns`` and
        ``factor_name``.

    Returns
    -------
    list of str

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> term = SimpleNamespace(columns=("(Intercept)", "Days"), factor_name="Subject")
    >>> parameter_names([term])
    ['sd_(Intercept)|Subject', 'cor_Days.(Intercept)|Subject', 'sd_Days|Subject', 'sigma']
    """
    names = []
    for term in terms:
        rows, cols = lower_triangle_colmajor(len(term.columns))
        for i, j in zip(rows, cols):
            if i == j:
                names.append(f"sd_{term.columns[i]}|{term.factor_name}")
            else:
                names.append(f"cor_{term.columns[i]}.{term.columns[j]}|{term.factor_name}")
    names.append("sigma")
    return names


def term_sizes(terms) -> list[int]:
    """Number of columns of each term."""
    return [len(term.columns) for term in terms]


def theta_to_sdcor(theta: np.ndarray, sizes: list[int], sigma: float) -> np.ndarray:
    """theta and sigma to (standard deviations and correlations per term, sigma).

    A correlation with a standard deviation of zero is undefined; it is
    reported as 0, as lme4 does ("NA values in sdcor matrix converted to 0").

    Examples
    --------
    >>> import numpy as np
    >>> theta_to_sdcor(np.array([1.0, 0.0, 0.5]), [2], sigma=2.0).tolist()
    [2.0, 0.0, 1.0, 2.0]
    """
    out = np.empty(len(theta) + 1)
    start = 0
    for p in sizes:
        rows, cols = lower_triangle_colmajor(p)
        k = len(rows)
        lam = np.zeros((p, p))
        lam[rows, cols] = theta[start : start + k]
        cov = sigma**2 * (lam @ lam.T)
        sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = cov / np.outer(sd, sd)
        corr = np.where(np.isfinite(corr), np.clip(corr, -1.0, 1.0), 0.0)
        out[start : start + k] = np.where(rows == cols, sd[rows], corr[rows, cols])
        start += k
    out[-1] = sigma
    return out


def psd_cholesky(matrix: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a symmetric matrix, zero columns where it is singular.

    As lme4's ``safe_chol``, it accepts positive semi-definite matrices (a
    correlation of +/-1); a negative pivot, from a matrix that is not a
    valid correlation matrix, is treated as zero.
    """
    p = matrix.shape[0]
    L = np.zeros((p, p))
    for j in range(p):
        d = matrix[j, j] - L[j, :j] @ L[j, :j]
        if d <= 1e-14 * max(1.0, abs(matrix[j, j])):
            continue  # a zero column: the rest of the matrix does not depend on it
        L[j, j] = np.sqrt(d)
        L[j + 1 :, j] = (matrix[j + 1 :, j] - L[j + 1 :, :j] @ L[j, :j]) / L[j, j]
    return L


def sdcor_to_theta(values: np.ndarray, sizes: list[int]) -> np.ndarray:
    """(standard deviations and correlations per term, sigma) to theta.

    The inverse of :func:`theta_to_sdcor` where the covariance is positive
    definite (there, any factor with the same ``lambda lambda'`` gives the
    same model).

    Examples
    --------
    >>> import numpy as np
    >>> sdcor_to_theta(np.array([2.0, 0.0, 1.0, 2.0]), [2]).tolist()
    [1.0, 0.0, 0.5]
    """
    sigma = values[-1]
    theta = np.empty(len(values) - 1)
    start = 0
    for p in sizes:
        rows, cols = lower_triangle_colmajor(p)
        k = len(rows)
        block = values[start : start + k]
        if p == 1:
            theta[start] = block[0] / sigma
        else:
            sd = np.zeros(p)
            corr = np.eye(p)
            for value, i, j in zip(block, rows, cols):
                if i == j:
                    sd[i] = value
                else:
                    corr[i, j] = corr[j, i] = value
            lam = sd[:, None] * psd_cholesky(corr) / sigma
            theta[start : start + k] = lam[rows, cols]
        start += k
    return theta


def bounds(sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of the sdcor parameters (sigma last): sd >= 0, |cor| <= 1, sigma >= 0."""
    lower, upper = [], []
    for p in sizes:
        rows, cols = lower_triangle_colmajor(p)
        for i, j in zip(rows, cols):
            lower.append(0.0 if i == j else -1.0)
            upper.append(np.inf if i == j else 1.0)
    lower.append(0.0)
    upper.append(np.inf)
    return np.asarray(lower), np.asarray(upper)


def is_correlation(sizes: list[int]) -> np.ndarray:
    """Boolean mask of the correlation parameters (sigma last, not a correlation)."""
    lower, _ = bounds(sizes)
    return lower < 0
