"""Random-effects terms as data: level codes, term columns and the Lambda template.

A term (``(1 + x | g)``) becomes a :class:`ReTerm`: the integer level code of
every row (``refs``), the term's columns (``z``, n x p; ``None`` for a scalar
intercept, which is a column of ones), the level labels, and the map from the
term's slice of theta to its lower-triangular p x p factor ``lambda``.

Terms are ordered as lme4 orders them (:func:`lme4_term_order`): by number of
levels, largest first.  ``theta`` follows that order.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .bars import INTERCEPT, TermSpec


@dataclass
class ReTerm:
    """One random-effects term resolved against the data.

    Attributes
    ----------
    factor_name : str
        The grouping factor (``"a:b"`` for an interaction).
    factors : tuple of str
        The grouping columns whose interaction it is.
    columns : tuple of str
        Term column names (``"(Intercept)"`` and slope names).
    slope_index : tuple of int or None
        For each column, its index in ``X`` (``None`` for the intercept).
    refs : ndarray of intp, shape (n,)
        Level code of each row, in ``0 .. n_levels - 1``.
    levels : pandas.Index
        Level labels; ``levels[refs[i]]`` is row i's level.
    z : ndarray of shape (n, p) or None
        The term's columns per row; ``None`` means a single column of ones.
    """

    factor_name: str
    factors: tuple[str, ...]
    columns: tuple[str, ...]
    slope_index: tuple[int | None, ...]
    refs: np.ndarray
    levels: pd.Index
    z: np.ndarray | None

    @functools.cached_property
    def n_levels(self) -> int:
        return len(self.levels)  # cached: len of an Index of strings is slow, and it is read often

    @property
    def n_columns(self) -> int:
        return len(self.columns)

    @property
    def q(self) -> int:
        """Number of random effects of the term: levels x columns."""
        return self.n_levels * self.n_columns

    @property
    def n_theta(self) -> int:
        p = self.n_columns
        return p * (p + 1) // 2

    @property
    def theta_rows_cols(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions in lambda of the term's theta, lower triangle column-major."""
        return lower_triangle_colmajor(self.n_columns)

    def lambda_from(self, theta_t: np.ndarray) -> np.ndarray:
        """The p x p lower-triangular relative covariance factor for this term."""
        p = self.n_columns
        lam = np.zeros((p, p))
        rows, cols = self.theta_rows_cols
        lam[rows, cols] = theta_t
        return lam

    def z_values(self) -> np.ndarray:
        """The term's columns as an (n, p) array (ones for an intercept-only term)."""
        if self.z is None:
            return np.ones((len(self.refs), 1))
        return self.z


@functools.lru_cache(maxsize=64)
def lower_triangle_colmajor(p: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of a p x p lower triangle, column by column.

    This is lme4's order for theta: ``(0,0), (1,0), ..., (p-1,0), (1,1), ...``.
    Cached (it is read at every evaluation); the arrays are read-only.
    """
    upper_rows, upper_cols = np.triu_indices(p)
    upper_rows.flags.writeable = False
    upper_cols.flags.writeable = False
    return upper_cols, upper_rows


def _column_codes(column: pd.Series, name=None) -> tuple[np.ndarray, pd.Index]:
    """Level codes (intp) and sorted labels of one grouping column, unused levels dropped.

    A categorical's codes are its level codes, in category order; only unused
    categories need dropping (a bincount, no hashing), and its categories are
    the labels as they are (no conversion to numpy and back).
    """
    if isinstance(column.dtype, pd.CategoricalDtype):
        values = column.array
        codes = np.asarray(values.codes, dtype=np.intp)
        categories = values.categories
        if codes.min(initial=0) >= 0:
            used = np.bincount(codes, minlength=len(categories)) > 0
            if used.all():
                return codes, categories.rename(name)
            remap = np.cumsum(used) - 1
            return remap[codes].astype(np.intp), categories[used].rename(name)
    codes, uniques = pd.factorize(column, sort=True)
    if isinstance(uniques, pd.CategoricalIndex | pd.Categorical):
        uniques = pd.Index(np.asarray(uniques))
    return codes.astype(np.intp, copy=False), pd.Index(uniques, name=name)


def factor_codes(groups: pd.DataFrame, factors: tuple[str, ...]) -> tuple[np.ndarray, pd.Index]:
    """Level codes and labels of a grouping factor or interaction of factors.

    Levels are sorted (categoricals keep their category order) and unused
    levels are dropped.  An interaction ``a:b`` has one level per observed
    pair, labelled ``"<a>:<b>"`` as R's ``interaction`` labels them.

    Parameters
    ----------
    groups : DataFrame
        One column per grouping factor, no missing values.
    factors : tuple of str
        Column names whose interaction defines the factor.

    Returns
    -------
    refs : ndarray of intp
    levels : pandas.Index
    """
    if len(factors) == 1:
        return _column_codes(groups[factors[0]], factors[0])

    combined = np.zeros(len(groups), dtype=np.int64)
    parts = []
    for name in factors:
        codes, uniques = _column_codes(groups[name])
        combined = combined * len(uniques) + codes
        parts.append((codes, np.asarray(uniques)))
    observed, refs = np.unique(combined, return_inverse=True)
    # Recover each component's code for the observed combinations.
    labels = []
    first_row = np.zeros(len(observed), dtype=np.intp)
    first_row[refs[::-1]] = np.arange(len(refs))[::-1]
    for codes, uniques in parts:
        labels.append(uniques[codes[first_row]].astype(str))
    joined = labels[0]
    for part in labels[1:]:
        joined = np.char.add(np.char.add(joined, ":"), part)
    if len(set(joined.tolist())) < len(joined):
        clash = pd.Series(joined).value_counts().index[0]
        raise ValueError(
            f"the levels of {', '.join(map(repr, factors))} contain ':' so that different level "
            f"combinations of the interaction {':'.join(factors)!r} have the same label {clash!r} "
            "(labels are '<a>:<b>', as R writes them); rename the levels so that they do not contain ':'"
        )
    return refs.astype(np.intp, copy=False), pd.Index(joined, name=":".join(factors))


def build_terms(
    specs: list[TermSpec],
    X: np.ndarray,
    feature_names: list[str],
    groups: pd.DataFrame,
    slopes: np.ndarray | None = None,
    codes: dict[tuple[str, ...], tuple[np.ndarray, pd.Index]] | None = None,
) -> list[ReTerm]:
    """Resolve parsed terms against the data and order them as lme4 does.

    Parameters
    ----------
    specs : list of TermSpec
        Parsed ``random_effects``.
    X : ndarray of shape (n, n_features)
        Fixed-effect covariates; slopes are taken from its columns.
    feature_names : list of str
        Names of X's columns.
    groups : DataFrame
        Grouping factors, one column each.
    slopes : ndarray of shape (n, k), optional
        A formula model's random-effects columns: terms with ``positions``
        take their columns from it (and ``slope_index`` then indexes it).
    codes : dict, optional
        Level codes and labels already known, per tuple of factor names
        (``(refs, levels)`` as :func:`factor_codes` returns them): used instead
        of coding ``groups``.  A partition of a distributed collection passes
        the codes of its rows among ALL levels (:mod:`sklmm._dask`).

    Returns
    -------
    list of ReTerm
        In lme4's order: by number of levels, largest first.
    """
    position = {name: i for i, name in enumerate(feature_names)}
    codes_cache: dict[tuple[str, ...], tuple[np.ndarray, pd.Index]] = dict(codes or {})
    seen: set[tuple[str, str]] = set()
    terms = []
    for spec in specs:
        for name in spec.factors:
            if name not in groups.columns:
                raise ValueError(
                    f"random_effects names the grouping factor {name!r}, which is not a "
                    f"column of groups (columns: {list(map(str, groups.columns))})"
                    + (
                        f"; an unnamed Series or array is called {groups.columns[0]!r}: name it "
                        f"(groups.rename({name!r}), or a DataFrame with a column {name!r})"
                        if list(groups.columns) in (["group"], ["group0"]) else ""
                    )
                )
        slope_index = []
        source = X
        if spec.positions is not None:
            source = slopes
            slope_index = list(spec.positions)
        for column in spec.columns if spec.positions is None else ():
            if column == INTERCEPT:
                slope_index.append(None)
            elif column in position:
                slope_index.append(position[column])
            else:
                raise ValueError(
                    f"random_effects names the slope {column!r} for factor "
                    f"{spec.factor_name!r}, which is not a column of X "
                    f"(columns: {feature_names})"
                )
        for column in spec.columns:
            key = (spec.factor_name, column)
            if key in seen:
                raise ValueError(
                    f"random_effects has the column {column!r} twice for factor "
                    f"{spec.factor_name!r}; its variance would not be identifiable"
                )
            seen.add(key)
        if spec.factors not in codes_cache:
            codes_cache[spec.factors] = factor_codes(groups, spec.factors)
        refs, levels = codes_cache[spec.factors]
        if slope_index == [None]:
            z = None
        else:
            z = np.column_stack(
                [np.ones(len(groups)) if j is None else source[:, j] for j in slope_index]
            ).astype(np.float64, copy=False)
        terms.append(
            ReTerm(
                factor_name=spec.factor_name,
                factors=spec.factors,
                columns=spec.columns,
                slope_index=tuple(slope_index),
                refs=refs,
                levels=levels,
                z=z,
            )
        )
    return [terms[i] for i in lme4_term_order([t.n_levels for t in terms])]


def lme4_term_order(n_levels: list[int]) -> list[int]:
    """lme4's ordering of terms (``mkReTrms``): by decreasing number of levels.

    lme4 reorders only when some term has more levels than the one before
    it, and then takes ``rev(order(nl))``, which puts tied terms in reverse
    formula order.  sklmm does the same, so that theta lines up with lme4's.
    """
    if not any(b > a for a, b in zip(n_levels, n_levels[1:])):
        return list(range(len(n_levels)))
    return list(np.argsort(n_levels, kind="stable")[::-1])


def lookup_levels(groups: pd.DataFrame, factors: tuple[str, ...], levels: pd.Index) -> np.ndarray:
    """Codes of new rows among fitted levels; -1 where a level was not seen in fit.

    Labels are matched by value, so categoricals whose categories are in a
    different order, or that carry unused categories, map correctly.
    """
    if len(factors) == 1:
        values = np.asarray(groups[factors[0]])
    else:
        values = np.asarray(groups[factors[0]]).astype(str)
        for name in factors[1:]:
            values = np.char.add(np.char.add(values, ":"), np.asarray(groups[name]).astype(str))
    try:
        codes = np.asarray(levels.get_indexer(values), dtype=np.intp)
    except (TypeError, ValueError):
        # Labels of a type that cannot be compared with the fitted ones: none is known.
        codes = np.full(len(values), -1, dtype=np.intp)
    if len(values) and not np.any(codes >= 0) and _is_numeric(levels) != _is_numeric(values):
        fitted = "numbers" if _is_numeric(levels) else "strings"
        given = "numbers" if _is_numeric(values) else "strings"
        warnings.warn(
            f"groups column {':'.join(factors)!r} holds {given} but the model was fitted with "
            f"{fitted} as its levels, so no level matches and every prediction is population-level "
            f"for this factor. Convert the labels to the type used in fit (e.g. .astype(str)).",
            UserWarning,
            stacklevel=3,
        )
    return codes


def _is_numeric(values) -> bool:
    """Numbers (not strings or other objects) as labels."""
    dtype = getattr(values, "dtype", None)
    return dtype is not None and dtype.kind in "iufb"
