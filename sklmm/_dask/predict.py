"""``predict`` and ``score`` on Dask collections: lazy, partition by partition.

Each partition is predicted by the fitted estimator's in-memory ``predict``
(the estimator travels to the workers without training rows: pickling drops
them), so a prediction on Dask input equals the in-memory one row for row.
``score`` is R^2 as scikit-learn's ``r2_score`` computes it (weighted mean of
y first, then the two sums of squares), from per-partition sums.
"""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from .partitions import aligned_partitions, as_frame, check_lengths, tree_reduce


def _frame_for_estimator(est, X_part: pd.DataFrame):
    """X as the estimator saw it in fit: named columns, or an array when fitted on unnamed columns."""
    return X_part if hasattr(est, "feature_names_in_") else X_part.to_numpy()


def _predict_partition(est, X_part, groups_part):
    check_lengths({"X": X_part, "groups": groups_part})
    values = est.predict(_frame_for_estimator(est, X_part), groups=groups_part)
    return pd.Series(values, index=X_part.index, name="prediction")


def predict(est, X, groups=None):
    """A Dask Series of predictions, one partition per partition of X (lazy)."""
    X = as_frame(X, "X", "x0")
    if groups is not None:
        groups = as_frame(groups, "groups", "group")
        groups = groups.rename(columns={c: str(c) for c in groups.columns})
    partitions = aligned_partitions({"X": X, "groups": groups})
    task = dask.delayed(_predict_partition, pure=False)
    shared = dask.delayed(est, pure=False, traverse=False)  # the fitted model (O(levels)) as one key, not in every task
    pieces = [task(shared, parts["X"], parts["groups"]) for parts in partitions]
    meta = pd.Series(np.empty(0, dtype=np.float64), index=X._meta.index, name="prediction")
    return dd.from_delayed(pieces, meta=meta, divisions=X.divisions, verify_meta=False)


def _partition_sums(est, parts: dict, y_mean):
    """(sum w, sum w y) when ``y_mean`` is None; else (sum w (y - prediction)^2, sum w (y - y_mean)^2)."""
    n = check_lengths(parts)
    y = np.asarray(parts["y"], dtype=np.float64).reshape(n)
    w = np.ones(n) if parts["sample_weight"] is None else np.asarray(parts["sample_weight"], dtype=np.float64).reshape(n)
    if y_mean is None:
        return np.array([np.sum(w), np.dot(w, y)])
    prediction = est.predict(_frame_for_estimator(est, parts["X"]), groups=parts["groups"])
    residual, deviation = y - prediction, y - y_mean
    return np.array([np.dot(w, residual * residual), np.dot(w, deviation * deviation)])


def _add(parts):
    return np.sum(parts, axis=0)


def _mean(sums):
    return sums[1] / sums[0]


def _r2(sums) -> float:
    numerator, denominator = sums
    if denominator == 0.0:
        return 1.0 if numerator == 0.0 else 0.0  # scikit-learn's force_finite
    return float(1.0 - numerator / denominator)


def score(est, X, y, sample_weight=None, groups=None):
    """R^2 of the predictions as a lazy Dask value (``.compute()`` gives the float)."""
    X = as_frame(X, "X", "x0")
    y = as_frame(y, "y", "y")
    if groups is not None:
        groups = as_frame(groups, "groups", "group")
        groups = groups.rename(columns={c: str(c) for c in groups.columns})
    if sample_weight is not None:
        sample_weight = as_frame(sample_weight, "sample_weight", "sample_weight")
    partitions = aligned_partitions({"X": X, "y": y, "groups": groups, "sample_weight": sample_weight})
    sums = dask.delayed(_partition_sums, pure=False)
    est = dask.delayed(est, pure=False, traverse=False)
    y_mean = dask.delayed(_mean, pure=False)(tree_reduce([sums(est, parts, None) for parts in partitions], _add))
    totals = tree_reduce([sums(est, parts, y_mean) for parts in partitions], _add)
    return dask.delayed(_r2, pure=False)(totals)
