"""lme4's functions: ``lmer(formula, data)`` fits a :class:`MixedLinearRegressor` from a formula."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._dask import is_dask_input
from .._model.formula import evaluate_response, split_formula
from .linear import MixedLinearRegressor


def lmer(formula, data, *, reml=True, weights=None, max_iter=10_000):
    """Fit a linear mixed model from an lme4 formula, as lme4's ``lmer``.

    Parameters
    ----------
    formula : str
        A two-sided lme4 formula, ``"response ~ fixed + (random | group)"``:
        factors (string, categorical or boolean columns) with treatment
        contrasts, interactions (``a:b``, ``a*b``, ``(a + b)^2``), transforms
        (``I(x^2)``, ``log(x)``, ``center(x)``, ``scale(x)``), other contrasts
        (``C(f, contr.sum)``), ``offset(x)``; random terms ``(1 | g)``,
        ``(x | g)``, ``(x || g)``, ``(0 + f | g)``, ``(1 | a/b)``, ``(1 | a:b)``.
    data : DataFrame or dask.dataframe.DataFrame
        Every column the formula names.  A Dask DataFrame is fitted where
        its partitions live, exactly (docs: "Dask");
        ``center()`` and ``scale()`` are computed over all partitions, other
        stateful transforms (``poly()``, splines) are refused there.  Rows with a missing value in a used
        column are refused with an error naming the column (lme4 drops them).
    reml : bool, default=True
        REML (lme4's default) or maximum likelihood.
    weights : str, array-like or None, default=None
        Prior weights: a column of ``data`` or an array, as lme4's ``weights=``.
    max_iter : int, default=10000
        Maximum number of objective evaluations.

    Returns
    -------
    MixedLinearRegressor
        Fitted, with ``formula`` the one-sided right-hand side; its summary
        prints the formula as given.  ``predict(newdata)`` applies the
        training transformations to new rows.

    Examples
    --------
    >>> import sklmm
    >>> from sklmm.datasets import load_sleepstudy
    >>> data = load_sleepstudy()
    >>> model = sklmm.lmer("Reaction ~ Days + (Days | Subject)", data)
    >>> model.fixed_effects_.round(3)
                 estimate  std_error  t_value
    (Intercept)   251.405      6.825   36.838
    Days           10.467      1.546    6.771
    >>> round(model.objective_, 3)  # REML criterion, as lme4
    1743.628
    """
    parts = split_formula(formula)
    if parts.response is None:
        raise ValueError(f"lmer needs a two-sided formula 'response ~ terms', got {formula!r}")
    rhs = formula.split("~", 1)[1].strip()
    estimator = MixedLinearRegressor(formula="~ " + rhs, reml=reml, max_iter=max_iter)
    if is_dask_input(data, weights):  # the rows stay on the workers: sklmm._dask
        from .._dask.formula import fit_formula

        return fit_formula(estimator, data, None, weights, response=parts.response, formula_text=formula.strip())
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame or a Dask DataFrame, got {type(data).__name__}")
    response = _response(parts.response, data)
    sample_weight = _weights(weights, data)
    estimator._validate_params()
    label = weights if isinstance(weights, str) else None
    return estimator._fit_formula(data, response, None, sample_weight, formula_text=formula.strip(), weights_label=label)


def _response(expression: str, data: pd.DataFrame) -> np.ndarray:
    if expression in data.columns:
        values = data[expression]
        if values.isna().any():
            raise ValueError(
                f"the response column {expression!r} has {int(values.isna().sum())} missing value(s); "
                f"drop those rows first, e.g. data.dropna(subset=[{expression!r}])"
            )
        return values.to_numpy()
    return evaluate_response(expression, data)


def _weights(weights, data: pd.DataFrame):
    if weights is None:
        return None
    if isinstance(weights, str):
        if weights not in data.columns:
            raise ValueError(f"weights={weights!r} is not a column of data (columns: {list(map(str, data.columns))})")
        return data[weights].to_numpy()
    return weights
