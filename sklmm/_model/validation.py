"""Checks and conversions of the inputs that scikit-learn's validate_data does not cover.

``groups`` becomes a DataFrame with one column per grouping factor;
``sample_weight`` a float array.  Every check names the offending argument
and, where it helps, the column or count.  Nothing here modifies the
caller's data: conversions copy.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd


def as_groups_frame(groups, n_samples: int, argument: str = "groups") -> pd.DataFrame:
    """Convert ``groups`` to a DataFrame of grouping factors.

    Parameters
    ----------
    groups : array-like, Series or DataFrame
        1-D (one factor: named after the Series, else ``"group"``) or 2-D (one
        column per factor: DataFrame names, else ``group0, group1, ...``).
    n_samples : int
        Rows of X, which groups must match.

    Returns
    -------
    DataFrame
        A new frame (the caller's object is never modified).
    """
    if isinstance(groups, pd.DataFrame):
        frame = groups.copy()
        frame.columns = [str(c) for c in frame.columns]
    elif isinstance(groups, pd.Series):
        name = "group" if groups.name is None else str(groups.name)
        frame = pd.DataFrame({name: groups.to_numpy()})
    else:
        if hasattr(groups, "toarray") or hasattr(groups, "tocsr"):
            raise TypeError(f"{argument} must be dense (an array, Series or DataFrame), got a sparse matrix")
        array = np.asarray(groups)
        if array.dtype.kind == "c":
            raise TypeError(f"{argument} must hold labels (strings, integers or categories), got complex numbers")
        if array.ndim == 1:
            frame = pd.DataFrame({"group": array})
        elif array.ndim == 2:
            frame = pd.DataFrame({f"group{j}": array[:, j] for j in range(array.shape[1])})
        else:
            raise ValueError(f"{argument} must be 1-D or 2-D, got an array with {array.ndim} dimensions")
    if frame.shape[1] == 0:
        raise ValueError(f"{argument} has no columns")
    if len(frame) != n_samples:
        raise ValueError(f"{argument} has {len(frame)} rows but X has {n_samples}; they must match row for row")
    if len(set(frame.columns)) != frame.shape[1]:
        raise ValueError(f"{argument} has repeated column names: {list(frame.columns)}")
    frame.index = pd.RangeIndex(n_samples)
    for name in frame.columns:
        column = frame[name]
        try:
            pd.factorize(column)
        except TypeError as error:
            raise TypeError(
                f"{argument} column {name!r} holds labels that cannot be compared ({error}); "
                "labels must be strings, integers or categories"
            ) from None
        if column.dtype.kind == "c":
            raise TypeError(f"{argument} column {name!r} holds complex numbers; grouping labels must be strings, integers or categories")
        missing = column.isna().to_numpy()
        if missing.any():
            raise ValueError(
                f"{argument} column {name!r} has {int(missing.sum())} missing value(s) "
                f"(first at row {int(np.flatnonzero(missing)[0])}); every row needs a level"
            )
        if column.dtype.kind == "f" and not np.all(np.isfinite(column.to_numpy())):
            raise ValueError(f"{argument} column {name!r} has infinite values")
    return frame


def as_sample_weight(sample_weight, n_samples: int) -> np.ndarray | None:
    """Validate prior weights: finite, non-negative, not all zero.

    Zero weights remove their rows from the fit (the limit of a weight going
    to zero, and scikit-learn's convention).  Returns ``None`` when no
    weights were given.
    """
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Number):
        sample_weight = np.full(n_samples, float(sample_weight))
    weights = np.asarray(sample_weight)
    if weights.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must be numeric, got dtype {weights.dtype}")
    weights = weights.astype(np.float64)  # a copy: the caller's array is never touched
    if weights.ndim != 1:
        raise ValueError(f"sample_weight must be 1-D, got shape {weights.shape}")
    if len(weights) != n_samples:
        raise ValueError(f"sample_weight has {len(weights)} entries but X has {n_samples} rows")
    bad = ~np.isfinite(weights)
    if bad.any():
        raise ValueError(f"sample_weight has {int(bad.sum())} NaN or infinite value(s) (first at row {int(np.flatnonzero(bad)[0])})")
    negative = weights < 0
    if negative.any():
        raise ValueError(f"sample_weight has {int(negative.sum())} negative value(s) (first at row {int(np.flatnonzero(negative)[0])}); prior weights must be >= 0")
    if not np.any(weights > 0):
        raise ValueError("sample_weight is zero for every row; at least one row needs a positive weight")
    return weights


def check_numeric(X, y) -> None:
    """Name the argument, and the column, that does not hold real numbers.

    scikit-learn's conversion would fail too, but with messages that name
    neither (``could not convert string to float``, ``Complex data not
    supported``); this runs first and says which input and column is at
    fault.  ``None`` in y (an object array) is a missing value.
    """
    if isinstance(X, pd.DataFrame):
        for name, dtype in zip(X.columns, X.dtypes):
            if dtype.kind == "c":
                raise ValueError(f"Complex data not supported: X column {name!r} holds complex numbers; X must hold real numbers")
            if dtype.kind not in "biuf":
                raise TypeError(
                    f"X column {name!r} has dtype {dtype}, not numbers; X must hold real numbers "
                    "(encode categories, e.g. with OneHotEncoder, and convert dates to numbers)"
                )
    elif not hasattr(X, "tocsr") and np.asarray(X).dtype.kind == "c":
        raise ValueError("Complex data not supported: X holds complex numbers; X must hold real numbers")
    if y is None:
        return
    values = np.asarray(y)
    if values.dtype.kind == "c":
        raise ValueError("Complex data not supported: y holds complex numbers; y must hold real numbers")
    if values.dtype.kind in "OUS":
        converted = np.empty(values.shape, dtype=np.float64)
        flat_in, flat_out = values.reshape(-1), converted.reshape(-1)
        for i, value in enumerate(flat_in):
            if value is None:
                raise ValueError(f"y has a missing value (None) at row {i}; every row needs a response")
            try:
                flat_out[i] = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"y holds {value!r} at row {i}, not a number; y must hold real numbers") from None


def shares_memory(validated: np.ndarray, original) -> bool:
    """Whether the validated array is (a view of) the caller's own data."""
    source = original.to_numpy() if hasattr(original, "to_numpy") else original
    return isinstance(source, np.ndarray) and np.shares_memory(validated, source)


def fingerprint(X: np.ndarray) -> np.ndarray:
    """X' w for a fixed pseudo-random w: one pass, and it changes with any edit of X,
    including a reordering of its rows, that could change a refit."""
    w = np.random.default_rng(20261121).uniform(0.5, 1.5, size=X.shape[0])
    return np.einsum("i,ij->j", w, X)  # einsum's own loop: the same bits every call, whatever BLAS threads
