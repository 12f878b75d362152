"""Checks and conversions of the inputs that scikit-learn's validate_data does not cover.

``groups`` becomes a DataFrame with one column per grouping factor;
``sample_weight`` a float array.  Every check names the offending argument
and, where it helps, the column or count.  Nothing here modifies the
caller's data: conversions copy.

Rows are paired by position, as scikit-learn pairs them.  Where that could
silently misread pandas input, :func:`check_row_alignment` refuses it: ``y``,
``groups`` or ``sample_weight`` given as a Series or DataFrame whose index
holds the same labels as X's index in another order (a shuffled or re-sorted
copy) raises an error that says how to align them.
"""

from __future__ import annotations

import functools
import numbers

import numpy as np
import pandas as pd

_PANDAS_MAJOR = int(pd.__version__.split(".")[0])


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
        # pandas >= 3 (copy-on-write): a shallow copy, new axes over the caller's
        # columns, already keeps the caller's data apart from any later edit.
        frame = groups.copy(deep=_PANDAS_MAJOR < 3)
        names = frame.columns.tolist()  # iterated once: an Index of strings iterates slowly
        if not all(isinstance(c, str) for c in names):
            names = [str(c) for c in names]
            frame.columns = names
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
    if not isinstance(groups, pd.DataFrame):
        names = frame.columns.tolist()
    if len(set(names)) != frame.shape[1]:
        raise ValueError(f"{argument} has repeated column names: {list(frame.columns)}")
    index = frame.index
    if not (isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1):
        frame.index = pd.RangeIndex(n_samples)
    for name in names:
        column = frame[name]
        try:
            if column.dtype == object:  # numbers, strings and categories always compare
                pd.factorize(column)
        except TypeError as error:
            raise TypeError(
                f"{argument} column {name!r} holds labels that cannot be compared ({error}); "
                "labels must be strings, integers or categories"
            ) from None
        if column.dtype.kind == "c":
            raise TypeError(f"{argument} column {name!r} holds complex numbers; grouping labels must be strings, integers or categories")
        if isinstance(column.dtype, pd.CategoricalDtype):
            missing = np.asarray(column.array.codes) < 0
        elif column.dtype.kind in "iub":
            continue  # integers and booleans have no missing or infinite values
        else:
            missing = column.isna().to_numpy()
        if missing.any():
            raise ValueError(
                f"{argument} column {name!r} has {int(missing.sum())} missing value(s) "
                f"(first at row {int(np.flatnonzero(missing)[0])}); every row needs a level"
            )
        if column.dtype.kind == "f" and not np.all(np.isfinite(column.to_numpy())):
            raise ValueError(f"{argument} column {name!r} has infinite values")
    return frame


def check_row_alignment(X, **others) -> None:
    """Refuse pandas inputs whose rows are the same as X's in another order.

    sklmm pairs the rows of X, y, groups and sample_weight by position, as
    scikit-learn does.  When X is a DataFrame and another input is a Series
    or DataFrame whose index holds the same labels as X's in a different
    order, pairing by position would silently misread the data (a re-sorted
    or shuffled Series), so this raises instead.  Indexes that are equal, or
    that do not hold the same labels (a Series made from an array, with a
    default index), are paired by position.

    Parameters
    ----------
    X : array-like
    **others
        The other inputs by argument name (``y=...``, ``groups=...``); ``None``
        and non-pandas values are skipped.

    Raises
    ------
    ValueError
        Naming the argument, with how to align it.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"x": [1.0, 2.0, 3.0]}, index=[10, 11, 12])
    >>> y = pd.Series([3.0, 2.0, 1.0], index=[12, 11, 10])
    >>> try:
    ...     check_row_alignment(X, y=y)
    ... except ValueError as error:
    ...     print(str(error)[:57])
    y is a pandas object whose index holds the same labels as
    """
    index = getattr(X, "index", None)
    if not isinstance(X, (pd.DataFrame, pd.Series)) or index is None:
        return
    for name, value in others.items():
        if not isinstance(value, (pd.Series, pd.DataFrame)):
            continue
        other = value.index
        if len(other) != len(index) or other.equals(index):
            continue
        try:
            same_labels = bool(np.array_equal(np.sort(other.to_numpy()), np.sort(index.to_numpy())))
        except TypeError:  # labels of mixed types cannot be sorted: compare as sets
            same_labels = index.is_unique and other.is_unique and set(other) == set(index)
        if same_labels:
            raise ValueError(
                f"{name} is a pandas object whose index holds the same labels as X's index in a "
                f"different order (X's first labels: {list(index[:3])}, {name}'s: {list(other[:3])}). "
                "sklmm pairs rows by position, as scikit-learn does, so this would pair each row of X "
                f"with another row's {name}. Align them by label first ({name} = {name}.loc[X.index] "
                f"when the labels identify the same rows), or pass {name}.to_numpy() if the rows are "
                "already in the same order."
            )


def groups_named_by_column(groups, X, n_samples: int) -> list[str] | None:
    """The names, when ``groups`` is a column name (or list of names) instead of labels.

    A string, or a list of strings that is not one label per row, is taken
    as naming columns (the statsmodels habit, ``groups="Subject"``).
    """
    if isinstance(groups, str):
        return [groups]
    if isinstance(groups, (list, tuple)) and groups and len(groups) != n_samples and all(isinstance(g, str) for g in groups):
        return list(groups)
    return None


def refuse_groups_by_name(groups, X, n_samples: int, formula_hint: str = "") -> None:
    """Raise a clear error when ``groups`` names columns instead of holding labels."""
    names = groups_named_by_column(groups, X, n_samples)
    if names is None:
        return
    columns = [str(c) for c in getattr(X, "columns", [])]
    shown = repr(groups)
    in_X = [n for n in names if n in columns]
    if in_X:
        selection = f"X[{names[0]!r}]" if len(names) == 1 else f"X[{names!r}]"
        raise ValueError(
            f"groups={shown} names column(s) of X, but groups must hold the grouping labels "
            f"themselves, one per row. Pass the column(s) and take them out of the fixed effects: "
            f"fit(X.drop(columns={names!r}), y, groups={selection}); or give the model a formula "
            f"naming them (MixedLinearRegressor(formula=\"~ ... + (1 | {names[0]})\"), fitted with "
            "fit(X, y) on an X that holds the grouping columns)." + formula_hint
        )
    raise ValueError(
        f"groups={shown} is a name, not grouping labels: groups must hold one label per row of X "
        f"(a Series, array or DataFrame with {n_samples} rows)"
        + (f"; X has no column named {names[0]!r} (its columns: {columns})" if columns else "")
    )


def as_sample_weight(sample_weight, n_samples: int) -> np.ndarray | None:
    """Validate prior weights: finite, non-negative, not all zero.

    Zero weights remove their rows from the fit (the limit of a weight going
    to zero, and scikit-learn's convention).  Returns ``None`` when no
    weights were given.
    """
    if sample_weight is None:
        return None
    if isinstance(sample_weight, str):
        raise TypeError(
            f"sample_weight={sample_weight!r} is a name; pass the weights themselves, one per row "
            f"(e.g. X[{sample_weight!r}] or data[{sample_weight!r}]; sklmm.lmer takes weights={sample_weight!r})"
        )
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


def check_numeric(X, y, factors=()) -> None:
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
            if dtype.kind not in "biuf" and str(name) in factors:
                raise TypeError(
                    f"X column {name!r} has dtype {dtype}, not numbers, and the random part names "
                    f"{str(name)!r} as a grouping factor: grouping factors are not columns of X. "
                    f"Pass it as groups=, and not in X: fit(X.drop(columns=[{str(name)!r}]), y, "
                    f"groups=X[{str(name)!r}])"
                )
            if dtype.kind not in "biuf":
                raise TypeError(
                    f"X column {name!r} has dtype {dtype}, not numbers; X must hold real numbers "
                    "(encode categories, e.g. with OneHotEncoder, and convert dates to numbers); "
                    f"if {str(name)!r} holds the grouping labels of a random effect, pass it as "
                    "groups= instead of in X"
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
    n = X.shape[0]
    w = _fingerprint_weights(n) if n <= _FINGERPRINT_CACHE_ROWS else _fingerprint_weights.__wrapped__(n)
    return np.einsum("i,ij->j", w, X)  # einsum's own loop: the same bits every call, whatever BLAS threads


#: Fingerprint weights of up to this many rows are kept (small fits repeat: drawing them
#: anew cost a tenth of a 180-row fit's validation).
_FINGERPRINT_CACHE_ROWS = 100_000


@functools.lru_cache(maxsize=16)
def _fingerprint_weights(n: int) -> np.ndarray:
    """The fingerprint's w for n rows (read-only)."""
    w = np.random.default_rng(20261121).uniform(0.5, 1.5, size=n)
    w.flags.writeable = False
    return w
