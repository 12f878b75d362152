"""The fit of a MixedLinearRegressor on Dask collections (see :mod:`sklmm._dask`).

Two passes over the partitions, each a map on the workers and a tree
reduction; the client receives only their sums:

``summarize``
    rows, validation (missing or infinite values, negative weights), the
    weighted mean and largest magnitude of y, the weights' range, and the
    distinct level (combinations) of every grouping factor, over the rows
    with positive weight.  From them the client codes every level once
    (:class:`LevelCoding`), as :func:`sklmm._model.terms.factor_codes` codes
    them in memory, so that a level has the same code in every partition.
``form blocks``
    each partition's cross products (:func:`sklmm._engine.blocks.form_blocks`)
    of ``[1 X y - mean(y)]`` with global level codes, compact (only the
    levels the partition holds), summed by level in the tree reduction and
    expanded over all levels once, on the client.

A partition is read by a reader (:class:`ColumnsReader` for X, y, groups,
sample_weight; :class:`sklmm._dask.formula.FormulaReader` for a formula),
sent to each worker once with the level codings.

The client then checks the fixed-effects design's rank on X'WX, builds
:meth:`ProfiledDeviance.from_blocks` and runs the in-memory pipeline's
optimisation and packaging (:func:`sklmm._engine.fit.fit_prepared`).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import dask
import numpy as np
import pandas as pd

from .. import _warnings
from .._engine.blocks import CrossProducts, form_blocks, sum_blocks
from .._engine.deviance import ProfiledDeviance
from .._engine.fit import check_identifiable, fit_prepared, independent_columns_from_gram
from .._model.bars import INTERCEPT
from .._model.terms import build_terms, factor_codes
from .._model.validation import check_numeric
from .partitions import aligned_partitions, as_frame, check_lengths, tree_reduce

# -- per-partition pieces as arrays -------------------------------------------------------


def _response(y_part) -> np.ndarray:
    y = np.asarray(y_part.iloc[:, 0] if isinstance(y_part, pd.DataFrame) else y_part, dtype=np.float64)
    bad = ~np.isfinite(y)
    if bad.any():
        raise ValueError(f"y has {int(bad.sum())} missing or infinite value(s) in a partition (first at its row {int(np.flatnonzero(bad)[0])}); every row needs a finite response")
    return y


def _weights(w_part, n: int) -> np.ndarray | None:
    if w_part is None:
        return None
    if isinstance(w_part, numbers.Number):
        return np.full(n, float(w_part))
    w = np.asarray(w_part.iloc[:, 0] if isinstance(w_part, pd.DataFrame) else w_part, dtype=np.float64)
    if not np.all(np.isfinite(w)):
        raise ValueError("sample_weight has NaN or infinite values in a partition")
    if np.any(w < 0):
        raise ValueError("sample_weight has negative values in a partition; prior weights must be >= 0")
    return w


def _groups(g_part: pd.DataFrame) -> pd.DataFrame:
    for name in g_part.columns:
        missing = g_part[name].isna().to_numpy()
        if missing.any():
            raise ValueError(f"groups column {name!r} has {int(missing.sum())} missing value(s) in a partition; every row needs a level")
    return g_part


def _covariates(X_part: pd.DataFrame) -> np.ndarray:
    X = np.asarray(X_part, dtype=np.float64)
    if not np.all(np.isfinite(X)):
        raise ValueError("X has NaN or infinite values in a partition; every row needs finite covariates")
    return X


def _kept_rows(w: np.ndarray | None):
    """Rows with positive weight (all rows without weights): a mask or None."""
    return None if w is None or np.all(w > 0) else w > 0


# -- pass 1: rows, moments, levels ---------------------------------------------------------


@dataclass
class Summary:
    """Sums over the rows (with positive weight) of some partitions; ``combine`` adds them."""

    n_rows: int
    n: int
    sum_w: float
    sum_wy: float
    max_abs_y: float
    w_min: float
    w_max: float
    uniques: dict  # factor tuple -> DataFrame of its distinct level combinations
    extra: object = None  # what the reader collects besides (a formula's factor levels), combined by it

    @staticmethod
    def combine(parts: list[Summary]) -> Summary:
        return Summary(
            n_rows=sum(p.n_rows for p in parts),
            n=sum(p.n for p in parts),
            sum_w=sum(p.sum_w for p in parts),
            sum_wy=sum(p.sum_wy for p in parts),
            max_abs_y=max(p.max_abs_y for p in parts),
            w_min=min(p.w_min for p in parts),
            w_max=max(p.w_max for p in parts),
            uniques={key: pd.concat([p.uniques[key] for p in parts], ignore_index=True).drop_duplicates(ignore_index=True) for key in parts[0].uniques},
            extra=None if parts[0].extra is None else type(parts[0].extra).combine([p.extra for p in parts]),
        )


def _summarize_partition(parts: dict, reader, factor_sets: list[tuple[str, ...]]) -> Summary:
    n_rows = check_lengths(parts)
    y, w, g = reader.response(parts)
    keep = _kept_rows(w)
    if keep is not None:
        y, w = y[keep], w[keep]
        g = None if g is None else g.loc[keep]
    uniques = {factors: g[list(factors)].drop_duplicates(ignore_index=True) for factors in factor_sets}
    sum_w = float(len(y)) if w is None else float(np.sum(w))
    return Summary(
        n_rows=n_rows,
        n=len(y),
        sum_w=sum_w,
        sum_wy=float(np.sum(y) if w is None else np.dot(w, y)),
        max_abs_y=float(np.max(np.abs(y), initial=0.0)),
        w_min=np.inf if w is None or not len(w) else float(np.min(w)),
        w_max=-np.inf if w is None or not len(w) else float(np.max(w)),
        uniques=uniques,
        extra=reader.extra(parts) if hasattr(reader, "extra") else None,
    )


@dataclass
class LevelCoding:
    """Global level codes of a grouping factor (or interaction), the same in every partition.

    Built from the factor's distinct level combinations; codes and labels
    are those :func:`factor_codes` gives for all rows at once.
    """

    factors: tuple[str, ...]
    components: list  # pandas.Index of each factor column's sorted labels
    observed: np.ndarray | None  # sorted combined codes of the observed combinations (interactions)
    levels: pd.Index

    @classmethod
    def from_uniques(cls, uniques: pd.DataFrame, factors: tuple[str, ...]) -> LevelCoding:
        _, levels = factor_codes(uniques, factors)
        if len(factors) == 1:
            return cls(factors, [levels], None, levels)
        components, combined = [], np.zeros(len(uniques), dtype=np.int64)
        for name in factors:
            codes, labels = pd.factorize(uniques[name], sort=True)
            components.append(pd.Index(np.asarray(labels)))
            combined = combined * len(labels) + codes
        return cls(factors, components, np.unique(combined), levels)

    def codes(self, groups: pd.DataFrame) -> np.ndarray:
        """Codes of a partition's rows (every label is among the levels)."""
        if self.observed is None:
            return np.asarray(self.components[0].get_indexer(np.asarray(groups[self.factors[0]])), dtype=np.intp)
        combined = np.zeros(len(groups), dtype=np.int64)
        for name, labels in zip(self.factors, self.components):
            combined = combined * len(labels) + labels.get_indexer(np.asarray(groups[name]))
        return np.searchsorted(self.observed, combined).astype(np.intp)


# -- pass 2: the blocks -------------------------------------------------------------------


@dataclass
class ColumnsReader:
    """Reads a partition of the X form: X, y, groups and sample_weight as given.

    A reader's ``response(parts)`` gives (y, weights, groups) for the first
    pass; ``read(parts)`` gives (X, y, weights, groups, slopes) for the second
    (``slopes`` None: slopes are columns of X).  ``weight`` is a scalar
    sample_weight (else None: the partition's own column, or no weights).
    """

    weight: float | None

    def response(self, parts: dict):
        n_rows = check_lengths(parts)
        y = _response(parts["y"])
        w = _weights(parts["sample_weight"] if self.weight is None else self.weight, n_rows)
        g = None if parts["groups"] is None else _groups(parts["groups"])
        return y, w, g

    def read(self, parts: dict):
        n_rows = check_lengths(parts)
        X = _covariates(parts["X"])
        y = _response(parts["y"])
        w = _weights(parts["sample_weight"] if self.weight is None else self.weight, n_rows)
        g = None if parts["groups"] is None else parts["groups"]
        return X, y, w, g, None


def _partition_blocks(parts: dict, reader, specs, names, codings, fit_intercept: bool, y_offset: float, y_mean: float):
    """(CrossProducts of ``[1 X y - y_offset]``, extras) of one partition, with global level codes.

    The blocks hold only the levels the partition's rows have
    (:func:`sklmm._engine.blocks.form_blocks` with ``compact=True``): a
    task's memory grows with its rows, not with the number of levels.
    """
    X, y, w, g, slopes = reader.read(parts)
    keep = _kept_rows(w)
    if keep is not None:
        X, y, w = X[keep], y[keep], w[keep]
        g = None if g is None else g.loc[keep]
        slopes = None if slopes is None else slopes[keep]
    offset = 1 if fit_intercept else 0
    stacked = np.empty((len(y), X.shape[1] + offset + 1))
    if offset:
        stacked[:, 0] = 1.0
    stacked[:, offset:-1] = X
    stacked[:, -1] = y - y_offset
    terms = []
    if specs:
        codes = {key: (coding.codes(g), coding.levels) for key, coding in codings.items()}
        terms = build_terms(specs, X, names, g, slopes=slopes, codes=codes)
    blocks = form_blocks(terms, stacked, w, compact=True)
    deviation = y - y_mean
    extras = np.array([np.max(np.abs(X), initial=0.0), float(np.sum(deviation * deviation) if w is None else np.dot(w, deviation * deviation))])
    return blocks, extras


def _combine_blocks(parts):
    total = sum_blocks([blocks for blocks, _ in parts])
    extras = np.array([max(more[0] for _, more in parts), sum(more[1] for _, more in parts)])
    return total, extras


# -- the fit ---------------------------------------------------------------------------------


@dataclass
class DistributedPrepared:
    """What :func:`sklmm._engine.fit.fit_prepared` needs, from reduced sums only (no rows)."""

    problem: ProfiledDeviance
    terms: list
    fixed_names: list[str]
    kept: np.ndarray
    dropped: list[str]
    n: int
    spread: float
    summary: str

    def response_spread(self) -> float:
        return self.spread

    def scale_summary(self) -> str:
        return self.summary


def _subset(blocks: CrossProducts, rows: list[int]) -> CrossProducts:
    """The blocks of [X y] restricted to the given columns of [X y] (exact: a selection)."""
    rows = np.asarray(rows)
    blocks.AXX = blocks.AXX[np.ix_(rows, rows)]
    if blocks.AX0 is not None:
        blocks.AX0 = blocks.AX0[rows]
    if blocks.AXr is not None:
        blocks.AXr = blocks.AXr[rows]
    return blocks


def _template_terms(specs, names, groups_meta: pd.DataFrame, codings, n_slopes: int | None = None) -> list:
    """The terms, in lme4's order, with global levels and no rows (names and slopes checked).

    ``n_slopes``: a formula model's number of random-effects columns (None: slopes are columns of X).
    """
    empty = {key: (np.empty(0, dtype=np.intp), coding.levels) for key, coding in codings.items()}
    slopes = None if n_slopes is None else np.empty((0, n_slopes))
    return build_terms(specs, np.empty((0, len(names))), names, groups_meta, slopes=slopes, codes=empty)


def summarize(first_pass: list, reader, factor_sets: list[tuple[str, ...]]) -> Summary:
    """Pass 1 over the partitions (see the module docstring): the reduced :class:`Summary`."""
    task = dask.delayed(_summarize_partition, pure=False)
    shared = dask.delayed(reader, pure=True, traverse=False)  # one key, sent to each worker once
    (summary,) = dask.compute(tree_reduce([task(parts, shared, factor_sets) for parts in first_pass], Summary.combine))
    if summary.n_rows < 2:
        raise ValueError(f"Found array with {summary.n_rows} sample(s) while a minimum of 2 is required.")
    if summary.n == 0:
        raise ValueError("sample_weight is zero for every row; at least one row needs a positive weight")
    return summary


def fit_distributed(X, y, groups, sample_weight, specs, names, fit_intercept: bool, reml: bool, max_evaluations: int):
    """An :class:`sklmm._engine.fit.LmmFit` from Dask collections of the X form (see the module docstring)."""
    scalar_weight = float(sample_weight) if isinstance(sample_weight, numbers.Number) else None
    weights = None if scalar_weight is not None else sample_weight
    partitions = aligned_partitions({"X": X, "y": y, "groups": groups, "sample_weight": weights})
    factor_sets = list(dict.fromkeys(spec.factors for spec in specs))
    groups_meta = None if groups is None else groups._meta
    if specs:
        _template_terms(specs, names, groups_meta, {})  # names of factors and slopes, before any pass
    reader = ColumnsReader(scalar_weight)
    first_pass = aligned_partitions({"X": None, "y": y, "groups": groups, "sample_weight": weights})  # X is not read
    summary = summarize(first_pass, reader, factor_sets)
    return fit_blocks(partitions, reader, summary, specs, names, groups_meta, fit_intercept, sample_weight is not None, reml, max_evaluations)


def fit_blocks(partitions, reader, summary: Summary, specs, names, groups_meta, fit_intercept: bool, weighted: bool, reml: bool, max_evaluations: int, n_slopes: int | None = None):
    """Pass 2 (the blocks, summed) and the fit on the client, after :func:`summarize`."""
    factor_sets = list(dict.fromkeys(spec.factors for spec in specs))
    codings = {factors: LevelCoding.from_uniques(summary.uniques[factors], factors) for factors in factor_sets}
    terms = _template_terms(specs, names, groups_meta, codings, n_slopes) if specs else []
    check_identifiable(terms, summary.n)

    y_mean = summary.sum_wy / summary.sum_w
    y_offset = y_mean if fit_intercept else 0.0
    form = dask.delayed(_partition_blocks, pure=False)
    # the codings (O(levels)) and the reader travel as one key each, to each worker once, not with every task
    shared_codings = dask.delayed(codings, pure=True, traverse=False)
    shared_reader = dask.delayed(reader, pure=True, traverse=False)
    mapped = [form(parts, shared_reader, specs, names, shared_codings, fit_intercept, y_offset, y_mean) for parts in partitions]
    ((blocks, extras),) = dask.compute(tree_reduce(mapped, _combine_blocks))
    if terms:
        blocks = blocks.expanded([t.n_levels for t in terms], [t.n_columns for t in terms])

    fixed_names = ([INTERCEPT] if fit_intercept else []) + list(names)
    p = len(fixed_names)
    kept = independent_columns_from_gram(blocks.AXX[:p, :p])
    kept_set = set(kept.tolist())
    dropped = [fixed_names[j] for j in range(p) if j not in kept_set]
    if dropped:
        _warnings.warn_rank_deficient(dropped, p)
        if fit_intercept and 0 not in kept_set:
            raise ValueError("the intercept is aliased (every weight is zero?); fit without Dask to diagnose the design")
        blocks = _subset(blocks, [*kept.tolist(), p])
    if terms and summary.n <= len(kept):
        raise ValueError(f"{summary.n} observations are too few for {len(kept)} fixed effects and a residual variance")
    problem = ProfiledDeviance.from_blocks(terms, blocks, reml, y_offset=y_offset)
    spread = float(np.sqrt(extras[1] / summary.sum_w))
    scale = f"largest |y| = {summary.max_abs_y:.3g}, sd(y) = {spread:.3g}"
    if len(kept):
        scale += f"; largest |X| = {max(extras[0], 1.0 if fit_intercept else 0.0):.3g}"
    if weighted:
        scale += f"; sample_weight from {summary.w_min:.3g} to {summary.w_max:.3g}"
    prepared = DistributedPrepared(problem, terms, fixed_names, kept, dropped, summary.n, spread, scale)
    return fit_prepared(prepared, reml=reml, max_evaluations=max_evaluations)


def fit_estimator(est, X, y, groups=None, sample_weight=None):
    """``MixedLinearRegressor.fit`` on Dask collections: sets the fitted attributes, returns ``est``.

    The fitted model equals the in-memory fit of the same rows; it keeps no
    rows, so methods that need them (profile and bootstrap intervals,
    simulation, conditional variances, likelihood-ratio refits) say so.
    """
    est._validate_params()
    if getattr(est, "formula", None) is not None:
        if groups is not None:
            raise ValueError(
                "groups was passed to fit, but a formula model takes its grouping factors from the "
                "columns of X that the formula names; pass groups=None and keep those columns in X"
            )
        from .formula import fit_formula

        return fit_formula(est, X, y, sample_weight)
    X = as_frame(X, "X", "x0")
    y = as_frame(y, "y", "y")
    if y._meta.shape[1] != 1:
        raise ValueError(f"y must be one column, got a Dask DataFrame with {y._meta.shape[1]} columns")
    check_numeric(X._meta, y._meta.iloc[:, 0])
    if groups is not None:
        groups = as_frame(groups, "groups", "group")
        groups = groups.rename(columns={c: str(c) for c in groups.columns})
        if len(set(groups.columns)) != len(groups.columns):
            raise ValueError(f"groups has repeated column names: {list(groups.columns)}")
    if sample_weight is not None and not isinstance(sample_weight, numbers.Number):
        sample_weight = as_frame(sample_weight, "sample_weight", "sample_weight")
        if sample_weight._meta.dtypes.iloc[0].kind not in "biuf":
            raise TypeError(f"sample_weight must be numeric, got dtype {sample_weight._meta.dtypes.iloc[0]}")

    columns = list(X.columns)
    if hasattr(est, "feature_names_in_"):
        del est.feature_names_in_
    if columns and all(isinstance(c, str) for c in columns):
        est.feature_names_in_ = np.asarray(columns, dtype=object)
        names = columns
    else:
        names = [f"x{j}" for j in range(len(columns))]
    est.n_features_in_ = len(columns)
    if groups is None and not columns:
        raise ValueError("X has 0 feature(s), while a minimum of 1 is required without groups")
    frame_meta = None if groups is None else groups._meta
    specs = est._term_specs(frame_meta)
    est._check_slopes_without_column_names(specs, names)
    from .._estimators.linear import _warn_factor_columns_in_X

    _warn_factor_columns_in_X([str(c) for c in columns], specs)

    fit = fit_distributed(X, y, groups, sample_weight, specs, names, est.fit_intercept, est.reml, est.max_iter)
    est._set_fitted(fit, est.fit_intercept, [] if frame_meta is None else list(frame_meta.columns))
    est._training_data = None
    est._design = None
    est._training_fingerprint = None
    est._fitted_on_dask = True
    return est
