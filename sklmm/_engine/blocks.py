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

from dataclasses import dataclass

import numpy as np
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

    def __add__(self, other: CrossProducts) -> CrossProducts:
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
        for block in (self.Ar0, self.Arr):
            total += 0 if block is None else block.data.nbytes + block.indices.nbytes + block.indptr.nbytes
        return total


def sum_blocks(parts) -> CrossProducts:
    """The sum of several :class:`CrossProducts` (one node of a tree reduction)."""
    parts = list(parts)
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


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


def form_blocks(terms: list[ReTerm], XY: np.ndarray, weights: np.ndarray | None) -> CrossProducts:
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

    Returns
    -------
    CrossProducts
    """
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
        blocks.Ar0 = sp.csr_matrix(WZr.T @ Z0)
        blocks.Arr = sp.csr_matrix(WZr.T @ Zr)
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
