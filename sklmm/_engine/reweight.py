"""PIRLS's weighted linear problems: one sparsity pattern, new weights at every step.

Each PIRLS step is the penalised least-squares problem of a linear mixed
model with prior weights w (the working weights) and response z (the working
response): the cross products ``[Z X z]' W [Z X z]`` of
:mod:`sklmm._engine.blocks`.  Only w and z change between steps; which
entries of each block are non-zero, and how the blocks are held (dense,
nested block diagonal; :mod:`sklmm._engine.rest`), do not.  So
:class:`WeightedBlocks` works all of that out once per fit, and each step is

* the blocks of the random-effects columns alone (``A00``, ``A_r0``,
  ``A_rr``): one ``bincount`` each, of w times fixed products of term columns
  into precomputed positions;
* the blocks with ``[X z]`` (``A_X0``, ``A_Xr``, ``A_XX``): a sparse product
  with the fixed ``Z'`` and one dense product;
* the rest terms' structure refilled from the new values by gathers
  precomputed from the pattern (no sparse indexing, no structure analysis).

Every step is a vectorised pass over the rows; nothing loops over rows or
levels.  The result is a :class:`~sklmm._engine.deviance.ProfiledDeviance`
(the linear model's, unchanged) whose factorisation, solves and log
determinants PIRLS uses.  The pair-structured cross block of large crossed
models, whose matrix holds products of the blocks' entries rather than the
entries themselves, is refilled by :meth:`PairCross.reweighted`: its
products are recomputed at the pairs found once, in the same pass.
"""

from __future__ import annotations

import copy

import numpy as np
import scipy.sparse as sp

from .._model.terms import ReTerm
from .blocks import CrossProducts, nested_parent
from .crossblock import DenseCross, PairCross
from .deviance import ProfiledDeviance
from .rest import DenseRest, NestedRest, make_rest


def _pattern(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]):
    """The CSR pattern of the entries (rows, cols) and each entry's position in its ``data``.

    Returns (indices, indptr, position) with ``position`` of the shape of
    ``rows``: the pattern holds exactly the entries named (sorted, each once).
    """
    key = rows.astype(np.int64) * shape[1] + cols
    unique, position = np.unique(key.ravel(), return_inverse=True)
    r, c = np.divmod(unique, shape[1])
    indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=shape[0]))])
    return c.astype(np.int32), indptr.astype(np.int32), position.reshape(rows.shape)


class WeightedBlocks:
    """Build the weighted linear problem of a PIRLS step quickly, for any weights.

    Parameters
    ----------
    terms : list of ReTerm
        The model's random-effects terms (at least one), lme4's order.

    Notes
    -----
    Fixed for the fit (depend on the terms only): ``Z_0'`` and ``Z_r'`` as
    CSR matrices; per row, the products of term columns that each entry of
    ``A00``, ``A_r0`` and ``A_rr`` sums and the entry's position; the rest
    terms' structure and, for each of its arrays, which block entry each
    element is.  :meth:`problem` fills them for given weights.
    """

    def __init__(self, terms: list[ReTerm]):
        self.terms = terms
        first, rest = terms[0], terms[1:]
        n = len(first.refs)
        self.n = n
        self.m0, self.p0 = first.n_levels, first.n_columns
        m0, p0 = self.m0, self.p0
        # Z_0' (q0 x n), CSC (a column per row: the product with an n-row matrix
        # reads the rows in order and adds into the small result; measured 2x
        # faster than CSR at 100,000 rows in 5,000 levels).  A_X0 = Z_0' W [X z]
        # and A_00 = Z_0' W Z_0 (row l p0 + c, column d) are one product each.
        self.z0 = first.z_values()
        self.Zt0 = _transpose(first, self.z0)
        self.rest = None
        if not rest:
            return
        # Rest terms stacked: row offset_t + level * p_t + c of Z_r'.
        offsets = np.cumsum([0] + [t.q for t in rest])
        self.q_rest = int(offsets[-1])
        zr_rows, zr_vals = [], []
        for t, off in zip(rest, offsets):
            zt = t.z_values()
            for c in range(t.n_columns):
                zr_rows.append(off + t.refs * t.n_columns + c)
                zr_vals.append(zt[:, c])
        zr_rows = np.column_stack(zr_rows)  # (n, K): each row's positions in Z_r'
        zr_vals = np.column_stack(zr_vals)
        K = zr_rows.shape[1]
        self.Ztr = sp.csc_matrix((zr_vals.ravel(), zr_rows.ravel(), np.arange(0, n * K + 1, K)), shape=(self.q_rest, n))
        # A_r0: every (rest column, first-term column) product of each row.
        r0_rows = np.repeat(zr_rows, p0, axis=1)
        r0_cols = np.tile(first.refs[:, None] * p0 + np.arange(p0), (1, K))
        self.r0_values = np.repeat(zr_vals, p0, axis=1) * np.tile(self.z0, (1, K))
        self.r0_indices, self.r0_indptr, self.r0_position = _pattern(r0_rows, r0_cols, (self.q_rest, m0 * p0))
        self.r0_nnz = len(self.r0_indices)
        # A_rr: every pair of rest columns of each row (both triangles).
        rr_rows = np.repeat(zr_rows, K, axis=1)
        rr_cols = np.tile(zr_rows, (1, K))
        self.rr_values = np.repeat(zr_vals, K, axis=1) * np.tile(zr_vals, (1, K))
        self.rr_indices, self.rr_indptr, self.rr_position = _pattern(rr_rows, rr_cols, (self.q_rest, self.q_rest))
        self.rr_nnz = len(self.rr_indices)
        self.parent = None
        if len(rest) == 1:
            low = np.full(m0, np.iinfo(np.int64).max, dtype=np.int64)
            high = np.full(m0, -1, dtype=np.int64)
            np.minimum.at(low, first.refs, rest[0].refs)
            np.maximum.at(high, first.refs, rest[0].refs)
            self.parent = nested_parent(np.stack([low, high]))
        # The rest structure, chosen from the pattern as the linear model chooses
        # it, built once with each block entry's position (+1) as its value: an
        # element of its arrays holding k + 1 is block entry k (0: structurally zero).
        probe = self._make_rest(np.arange(1.0, self.r0_nnz + 1.0), np.arange(1.0, self.rr_nnz + 1.0), np.zeros((1, self.q_rest)))
        self.gathers = _rest_gathers(probe)

    def _make_rest(self, r0_data, rr_data, AXr):
        Ar0 = sp.csr_matrix((r0_data, self.r0_indices, self.r0_indptr), shape=(self.q_rest, self.m0 * self.p0))
        Arr = sp.csr_matrix((rr_data, self.rr_indices, self.rr_indptr), shape=(self.q_rest, self.q_rest))
        return make_rest(self.terms[1:], Ar0, Arr, AXr, self.parent, self.m0, self.p0)

    def problem(self, XY: np.ndarray, w: np.ndarray) -> ProfiledDeviance:
        """The weighted linear problem (ML) with prior weights ``w`` and columns ``XY = [X z]``.

        ``ldW`` (the log prior weights) is left at 0: the GLMM objective does
        not use it.
        """
        n, p = XY.shape[0], XY.shape[1] - 1
        m0, p0 = self.m0, self.p0
        if p0 == 1 and self.terms[0].z is None:
            WXY = XY * w[:, None]
            AX0 = np.asarray(self.Zt0 @ WXY).T.reshape(p + 1, m0, p0)
            A00 = np.bincount(self.terms[0].refs, weights=w, minlength=m0).reshape(m0, 1, 1)
        else:
            # [W X  W z  W Z_0-columns] side by side: A_X0 and A_00 in one product with Z_0'.
            both = np.empty((n, p + 1 + p0))
            np.multiply(XY, w[:, None], out=both[:, : p + 1])
            np.multiply(self.z0, w[:, None], out=both[:, p + 1 :])
            products = np.asarray(self.Zt0 @ both)
            AX0 = products[:, : p + 1].T.reshape(p + 1, m0, p0)
            A00 = products[:, p + 1 :].reshape(m0, p0, p0)
            A00 = (A00 + np.swapaxes(A00, 1, 2)) / 2.0
            WXY = both[:, : p + 1]
        AXX = XY.T @ WXY
        AXX = (AXX + AXX.T) / 2.0
        blocks = CrossProducts(n, 0.0, AXX, A00, AX0)
        rest = None
        if self.rest_terms:
            r0 = np.bincount(self.r0_position.ravel(), weights=(self.r0_values * w[:, None]).ravel(), minlength=self.r0_nnz)
            rr = np.bincount(self.rr_position.ravel(), weights=(self.rr_values * w[:, None]).ravel(), minlength=self.rr_nnz)
            AXr = np.asarray(self.Ztr @ WXY).T
            rest = _refill(self.gathers, r0, rr, AXr) if self.gathers is not None else self._make_rest(r0, rr, AXr)
        return ProfiledDeviance.from_blocks(self.terms, blocks, reml=False, rest=rest)

    @property
    def rest_terms(self) -> bool:
        return len(self.terms) > 1


def _transpose(term: ReTerm, z: np.ndarray) -> sp.csc_matrix:
    n, p = z.shape
    indices = (term.refs[:, None] * p + np.arange(p)).ravel()
    return sp.csc_matrix((z.ravel(), indices, np.arange(0, n * p + 1, p)), shape=(term.q, n))


def _index(probe_values: np.ndarray) -> np.ndarray:
    """Block-entry index of each element of a probe array; -1 for a structural zero."""
    return np.rint(np.asarray(probe_values)).astype(np.intp) - 1


def _rest_gathers(probe):
    """For each array of the rest structure that holds block entries as they are: (which block, index).

    ``None`` when the structure holds values that are not entries (the pair
    cross block's products): it is then rebuilt at every step.
    """
    if isinstance(probe, NestedRest):
        return (probe, {"A": ("rr", _index(probe.A)), "Ab": ("r0", _index(probe.Ab))}, None)
    if isinstance(probe, DenseRest) and isinstance(probe.cross, DenseCross):
        return (probe, {"Arr": ("rr", _index(probe.Arr))}, {"A": ("r0", _index(probe.cross.A))})
    if isinstance(probe, DenseRest) and isinstance(probe.cross, PairCross):
        return (probe, {"Arr": ("rr", _index(probe.Arr))}, _index(probe.cross.A.data))
    return None


def _refill(gathers, r0: np.ndarray, rr: np.ndarray, AXr: np.ndarray):
    """A copy of the probe structure holding the blocks' new values."""
    probe, own, cross = gathers
    source = {"r0": np.append(r0, 0.0), "rr": np.append(rr, 0.0)}
    rest = copy.copy(probe)
    for name, (block, index) in own.items():
        setattr(rest, name, source[block][index])
    rest.AXr = AXr
    if isinstance(cross, np.ndarray):  # pair structure: recomputed from its entries
        rest.cross = probe.cross.reweighted(source["r0"][cross])
    elif cross is not None:
        rest.cross = copy.copy(probe.cross)
        for name, (block, index) in cross.items():
            setattr(rest.cross, name, source[block][index])
    return rest
