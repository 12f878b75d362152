"""The one pass over the rows: cross-product blocks of [Z X y]' W [Z X y].

Everything the profiled criterion needs from the data is a sum over rows, so
the pass is a map-reduce: :func:`form_blocks` takes any subset of the rows
(all of them, or one partition of a Dask collection) whose level codes are
GLOBAL (every subset codes a level the same way and ``n_levels`` counts all
levels), and :class:`CrossProducts` from disjoint subsets add up
(``a + b``) to the blocks of their union, exactly up to the order of
floating-point summation.  :meth:`ProfiledDeviance.from_blocks
<sklmm._engine.deviance.ProfiledDeviance.from_blocks>` builds the criterion
from the sum.

Blocks (symbols as in :mod:`sklmm._engine.deviance`; the first term is the
one with most levels, "rest" the others stacked)::

    AXX   (p+1, p+1)        [X y]' W [X y]
    A00   (m0, p0, p0)      Z_0' W Z_0, block diagonal: one p0 x p0 block per level
    AX0   (p+1, m0, p0)     [X y]' W Z_0
    Ar0   sparse (q_r, q0)  Z_r' W Z_0
    Arr   sparse (q_r, q_r) Z_r' W Z_r
    AXr   (p+1, q_r)        [X y]' W Z_r

The rest blocks stay sparse here: how they are held while optimising
(dense, pair-structured, nested block diagonal; :mod:`sklmm._engine.rest`)
depends on the global sparsity pattern, so that choice is made after the sum.
With exactly one rest term the blocks also carry, per first-term level, the
lowest and highest rest level it occurs with (``parent_range``): the first
term is nested in the rest term when the two agree for every level.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._model.terms import ReTerm

#: ``parent_range`` of a first-term level that a subset of rows does not contain.
_NO_LEVEL = np.iinfo(np.int64).max


@dataclass
class CrossProducts:
    """Weighted cross products of [Z X y] over some rows; ``a + b`` adds disjoint row sets.

    Attributes
    ----------
    n : int
        Rows summed.
    sum_log_weights : float
        ``sum(log w)`` over those rows (0 without weights).
    AXX, A00, AX0, Ar0, Arr, AXr
        The blocks of the module docstring; ``A00``/``AX0`` are ``None``
        without random effects, the rest blocks without a second term.
    parent_range : ndarray of shape (2, m0) or None
        With exactly one rest term: the lowest and highest rest level code
        each first-term level occurs with (``_NO_LEVEL``/-1 where absent).
    levels0, columns_r : ndarray of int64 or None
        Compact blocks (``form_blocks(..., compact=True)``): the sorted global
        codes of the first term's levels these rows hold, and the sorted
        global indices of the rest columns they touch.  ``A00``, ``AX0``,
        ``parent_range`` then hold those levels only (``len(levels0)`` in
        place of m0), ``AXr`` those columns only, and ``Ar0``/``Arr`` are COO
        matrices of global shape holding only their nonzeros: the blocks of a
        subset of rows take memory in proportion to the subset, not to the
        number of levels.  :meth:`expanded` gives the ordinary (dense over
        all levels) blocks.
    """

    n: int
    sum_log_weights: float
    AXX: np.ndarray
    A00: np.ndarray | None = None
    AX0: np.ndarray | None = None
    Ar0: sp.csr_matrix | None = None
    Arr: sp.csr_matrix | None = None
    AXr: np.ndarray | None = None
    parent_range: np.ndarray | None = None
    levels0: np.ndarray | None = None
    columns_r: np.ndarray | None = None

    @property
    def compact(self) -> bool:
        return self.levels0 is not None

    def __add__(self, other: CrossProducts) -> CrossProducts:
        if self.compact or other.compact:
            return _sum_compact([self, other])

        def add(a, b):
            return None if a is None else a + b

        parent = None
        if self.parent_range is not None:
            parent = np.stack([np.minimum(self.parent_range[0], other.parent_range[0]), np.maximum(self.parent_range[1], other.parent_range[1])])
        return CrossProducts(
            n=self.n + other.n,
            sum_log_weights=self.sum_log_weights + other.sum_log_weights,
            AXX=self.AXX + other.AXX,
            A00=add(self.A00, other.A00),
            AX0=add(self.AX0, other.AX0),
            Ar0=None if self.Ar0 is None else (self.Ar0 + other.Ar0).tocsr(),
            Arr=None if self.Arr is None else (self.Arr + other.Arr).tocsr(),
            AXr=add(self.AXr, other.AXr),
            parent_range=parent,
        )

    def nbytes(self) -> int:
        """Memory held by the blocks (what a reduction moves between workers)."""
        total = 0
        for block in (self.AXX, self.A00, self.AX0, self.AXr, self.parent_range):
            total += 0 if block is None else block.nbytes
        for block in (self.levels0, self.columns_r):
            total += 0 if block is None else block.nbytes
        for block in (self.Ar0, self.Arr):
            if block is not None:
                total += sum(getattr(block, name).nbytes for name in ("data", "indices", "indptr", "row", "col") if hasattr(block, name))
        return total

    def expanded(self, n_levels: list[int], n_columns: list[int]) -> CrossProducts:
        """The ordinary blocks (dense over every level) of compact ones; ``self`` when not compact.

        ``n_levels``, ``n_columns``: of each term, in lme4's order.
        """
        if not self.compact:
            return self
        m0, p0 = n_levels[0], n_columns[0]
        k = self.AXX.shape[0]
        A00 = np.zeros((m0, p0, p0))
        A00[self.levels0] = self.A00
        AX0 = np.zeros((k, m0, p0))
        AX0[:, self.levels0] = self.AX0
        out = CrossProducts(self.n, self.sum_log_weights, self.AXX, A00, AX0)
        if self.AXr is not None:
            q_r = sum(m * p for m, p in zip(n_levels[1:], n_columns[1:]))
            AXr = np.zeros((k, q_r))
            AXr[:, self.columns_r] = self.AXr
            out.AXr = AXr
            out.Ar0 = self.Ar0.tocsr()
            out.Arr = self.Arr.tocsr()
        if self.parent_range is not None:
            parent = np.empty((2, m0), dtype=np.int64)
            parent[0], parent[1] = _NO_LEVEL, -1
            parent[:, self.levels0] = self.parent_range
            out.parent_range = parent
        return out


def sum_blocks(parts) -> CrossProducts:
    """The sum of several :class:`CrossProducts` (one node of a tree reduction)."""
    parts = list(parts)
    if any(part.compact for part in parts):
        return _sum_compact(parts)
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def _scatter_index(keys: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The sorted union of sorted key arrays, and each array's positions in it."""
    union = np.unique(np.concatenate(keys)) if keys else np.empty(0, dtype=np.int64)
    return union, [np.searchsorted(union, key) for key in keys]


def _sum_compact(parts: list[CrossProducts]) -> CrossProducts:
    """The sum of compact blocks: the union of their levels, each part added at its own."""
    first = parts[0]
    if not all(part.compact for part in parts):
        raise ValueError("compact and dense cross products cannot be added; expand the compact ones first")
    levels0, where = _scatter_index([part.levels0 for part in parts])
    k, p0 = first.AXX.shape[0], first.A00.shape[1]
    A00 = np.zeros((len(levels0), p0, p0))
    AX0 = np.zeros((k, len(levels0), p0))
    for part, index in zip(parts, where):
        A00[index] += part.A00  # index: distinct positions within a part
        AX0[:, index] += part.AX0
    total = CrossProducts(
        n=sum(part.n for part in parts),
        sum_log_weights=sum(part.sum_log_weights for part in parts),
        AXX=np.sum([part.AXX for part in parts], axis=0),
        A00=A00,
        AX0=AX0,
        levels0=levels0,
    )
    if first.parent_range is not None:
        parent = np.empty((2, len(levels0)), dtype=np.int64)
        parent[0], parent[1] = _NO_LEVEL, -1
        for part, index in zip(parts, where):
            parent[0, index] = np.minimum(parent[0, index], part.parent_range[0])
            parent[1, index] = np.maximum(parent[1, index], part.parent_range[1])
        total.parent_range = parent
    if first.AXr is not None:
        columns_r, where_r = _scatter_index([part.columns_r for part in parts])
        AXr = np.zeros((k, len(columns_r)))
        for part, index in zip(parts, where_r):
            AXr[:, index] += part.AXr
        total.AXr, total.columns_r = AXr, columns_r
        total.Ar0 = _sum_coo([part.Ar0 for part in parts])
        total.Arr = _sum_coo([part.Arr for part in parts])
    return total


def _sum_coo(matrices: list) -> sp.coo_matrix:
    """The sum of COO matrices of one shape, duplicates summed (memory: their nonzeros)."""
    rows = np.concatenate([m.row for m in matrices])
    cols = np.concatenate([m.col for m in matrices])
    data = np.concatenate([m.data for m in matrices])
    total = sp.coo_matrix((data, (rows, cols)), shape=matrices[0].shape)
    total.sum_duplicates()
    return total


def _global_coo(local: sp.spmatrix, row_map: np.ndarray, col_map: np.ndarray, shape: tuple[int, int]) -> sp.coo_matrix:
    """A block over local columns as a COO matrix of global ``shape`` (indices mapped)."""
    coo = local.tocoo()
    return sp.coo_matrix((coo.data, (row_map[coo.row], col_map[coo.col])), shape=shape)


def _local_term(term: ReTerm) -> tuple[ReTerm, np.ndarray]:
    """The term over the levels its rows hold (codes 0..k-1), and those levels' global codes."""
    present, local = np.unique(term.refs, return_inverse=True)
    return dataclasses.replace(term, refs=local.astype(np.intp, copy=False), levels=pd.RangeIndex(len(present))), present


def _form_compact(terms: list[ReTerm], XY: np.ndarray, weights: np.ndarray | None) -> CrossProducts:
    """:func:`form_blocks` with ``compact=True`` (see :class:`CrossProducts`)."""
    local_terms, present = zip(*[_local_term(term) for term in terms])
    blocks = form_blocks(list(local_terms), XY, weights)
    blocks.levels0 = present[0]
    if len(terms) == 1:
        return blocks
    # global index of each local rest column: the term's offset + level * p_t + column
    col_maps, start = [], 0
    for term, levels in zip(terms[1:], present[1:]):
        p = term.n_columns
        col_maps.append(start + (levels[:, None] * p + np.arange(p)).ravel())
        start += term.q
    rest_map = np.concatenate(col_maps).astype(np.int64)
    first = terms[0]
    p0 = first.n_columns
    first_map = (present[0][:, None] * p0 + np.arange(p0)).ravel().astype(np.int64)
    blocks.Ar0 = _global_coo(blocks.Ar0, rest_map, first_map, (start, first.q))
    blocks.Arr = _global_coo(blocks.Arr, rest_map, rest_map, (start, start))
    blocks.columns_r = rest_map
    if blocks.parent_range is not None:
        # local rest codes to global ones (an increasing map: minima and maxima are kept)
        parent = blocks.parent_range.copy()
        parent[0] = present[1][blocks.parent_range[0]]  # every first level present occurs with some rest level
        parent[1] = present[1][blocks.parent_range[1]]
        blocks.parent_range = parent
    return blocks


def term_transpose_matrix(term: ReTerm) -> sp.csc_matrix:
    """Z_t' as a sparse (q_t x n) matrix, one column per observation.

    Row ``l * p + c`` of Z_t' holds column c of the term for level l.  It is
    built directly in CSC form (each observation has exactly p entries), so no
    sort is needed; it holds as many numbers as the term's data.
    """
    n = len(term.refs)
    p = term.n_columns
    z = term.z_values()
    indices = (term.refs[:, None] * p + np.arange(p)).ravel()
    indptr = np.arange(0, n * p + 1, p)
    return sp.csc_matrix((z.ravel(), indices, indptr), shape=(term.q, n))


#: A_X0 by bincounts (one per column of [X y] and term column) up to this many of them.
_BINCOUNT_MAX = 12
#: Form the rest terms' blocks with dense Z when n x (q0 + q_rest) is at most this.
_DENSE_PRODUCTS_MAX = 200_000


def _dense_to_csr(D: np.ndarray) -> sp.csr_matrix:
    """``scipy.sparse.csr_matrix(D)`` (the same matrix, canonical) without its generic conversion (half the time)."""
    rows, cols = np.nonzero(D)
    indptr = np.zeros(D.shape[0] + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=D.shape[0]), out=indptr[1:])
    return sp.csr_matrix((D[rows, cols], cols.astype(np.int32), indptr), shape=D.shape)


def _dense_z(terms: list[ReTerm], n: int) -> np.ndarray:
    """[Z_t for t in terms] as one dense (n, sum q_t) array."""
    Z = np.zeros((n, sum(t.q for t in terms)))
    rows = np.arange(n)[:, None]
    offset = 0
    for term in terms:
        p = term.n_columns
        Z[rows, offset + term.refs[:, None] * p + np.arange(p)] = term.z_values()
        offset += term.q
    return Z


def form_blocks(terms: list[ReTerm], XY: np.ndarray, weights: np.ndarray | None, compact: bool = False) -> CrossProducts:
    """The cross products of some rows (the one pass over them).

    Parameters
    ----------
    terms : list of ReTerm
        Random-effects terms in lme4's order, their ``refs`` for these rows
        coded against all levels (``n_levels`` counts every level).
    XY : ndarray of shape (n, p + 1)
        ``[X y]`` for these rows (read, not kept).
    weights : ndarray of shape (n,) or None
        Positive prior weights.
    compact : bool, default=False
        Hold only the levels these rows have (see :class:`CrossProducts`):
        for a partition of many levels' rows; sums of compact blocks stay
        compact until :meth:`CrossProducts.expanded`.

    Returns
    -------
    CrossProducts
    """
    if compact and terms:
        return _form_compact(terms, XY, weights)
    n, p = XY.shape[0], XY.shape[1] - 1
    sum_log_weights = 0.0 if weights is None else float(np.sum(np.log(weights)))
    WXY = XY if weights is None else XY * weights[:, None]
    AXX = XY.T @ WXY
    AXX = (AXX + AXX.T) / 2.0
    if not terms:
        return CrossProducts(n, sum_log_weights, AXX)

    first, rest = terms[0], terms[1:]
    m0, p0 = first.n_levels, first.n_columns
    z0 = first.z_values()
    wz0 = z0 if weights is None else z0 * weights[:, None]
    A00 = np.empty((m0, p0, p0))
    for c in range(p0):
        for d in range(c + 1):
            A00[:, c, d] = A00[:, d, c] = np.bincount(first.refs, weights=wz0[:, c] * z0[:, d], minlength=m0)
    if (p + 1) * p0 <= _BINCOUNT_MAX:
        # A_X0 = [X y]' W Z_0: one bincount per (column of [X y], term column);
        # for a few columns, cheaper than forming the sparse Z_0'.
        AX0 = np.empty((p + 1, m0, p0))
        for c in range(p0):
            for k in range(p + 1):
                AX0[k, :, c] = np.bincount(first.refs, weights=wz0[:, c] * XY[:, k], minlength=m0)
    else:
        AX0 = np.asarray((term_transpose_matrix(first) @ WXY).T).reshape(p + 1, m0, p0)
    blocks = CrossProducts(n, sum_log_weights, AXX, A00, AX0)
    if not rest:
        return blocks

    q_rest = sum(t.q for t in rest)
    if n * (first.q + q_rest) <= _DENSE_PRODUCTS_MAX:
        # Small models: dense Z blocks and three BLAS products cost less than
        # scipy.sparse's per-call overhead (a third of a 144-row fit's setup).
        Z0 = _dense_z([first], n)
        Zr = _dense_z(rest, n)
        WZr = Zr if weights is None else Zr * weights[:, None]
        blocks.Ar0 = _dense_to_csr(WZr.T @ Z0)
        blocks.Arr = _dense_to_csr(WZr.T @ Zr)
        blocks.AXr = WXY.T @ Zr
    else:
        Zt_rest = sp.vstack([term_transpose_matrix(t) for t in rest], format="csr")
        Zt0 = term_transpose_matrix(first)
        Zt0W = Zt0 if weights is None else Zt0 @ sp.diags(weights)
        Zt_rest_w = Zt_rest if weights is None else Zt_rest @ sp.diags(weights)
        blocks.Ar0 = (Zt_rest @ Zt0W.T).tocsr()
        blocks.Arr = (Zt_rest_w @ Zt_rest.T).tocsr()
        blocks.AXr = np.asarray((Zt_rest @ WXY).T)
    if len(rest) == 1:
        low = np.full(m0, _NO_LEVEL, dtype=np.int64)
        high = np.full(m0, -1, dtype=np.int64)
        np.minimum.at(low, first.refs, rest[0].refs)
        np.maximum.at(high, first.refs, rest[0].refs)
        blocks.parent_range = np.stack([low, high])
    return blocks


def nested_parent(parent_range: np.ndarray | None) -> np.ndarray | None:
    """Each first-term level's rest level when the first term is nested in the rest term, else None."""
    if parent_range is None:
        return None
    low, high = parent_range
    if np.all(low == high):
        return low.astype(np.intp)
    return None
