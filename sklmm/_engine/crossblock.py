"""The cross block A_r0 = Z_r' W Z_0 between the first term and the rest.

Every evaluation of the objective needs ``A_r0 blockdiag(W0) A_r0'`` (a
q_r x q_r matrix, with W0 one p0 x p0 block per level of the first term that
depends on theta) and products of A_r0 with small dense matrices.  Two
representations, chosen by cost when the model is built:

:class:`DenseCross`
    A_r0 held dense; every operation is a BLAS call.  For small or dense
    blocks (the reference cases, few levels in the first term).
:class:`PairCross`
    For large sparse blocks (crossed factors with many levels: users x items,
    students x lecturers).  A_r0 is CSR, and the Gram product is one sparse
    matrix-vector product with a matrix S, built once, whose rows are the
    distinct pairs (i, j), i >= j, of rest rows that share a first-term level:
    ``gram(W0)[i, j] = S[(i, j), :] @ vec(W0)``.  Its cost is the number of
    (pair, level) incidences, sum over levels of k_l^2, which does not depend
    on n.

Both expose the same methods; every array they return is new.
"""

from __future__ import annotations

import copy

import numpy as np
import scipy.sparse as sp

#: Hold A_r0 dense when it has at most this many entries ...
DENSE_MAX_ENTRIES = 4_000_000


class DenseCross:
    """A_r0 as a dense (q_r, m0, p0) array."""

    def __init__(self, Ar0: sp.spmatrix, m0: int, p0: int):
        self.q_rest = Ar0.shape[0]
        self.m0, self.p0 = m0, p0
        self.A = np.asarray(Ar0.toarray()).reshape(self.q_rest, m0, p0)

    def gram(self, W0: np.ndarray) -> np.ndarray:
        """A_r0 blockdiag(W0) A_r0', dense q_r x q_r."""
        A2 = self.A.reshape(self.q_rest, -1)
        if self.p0 == 1:  # W0 diagonal: scale the columns
            return (A2 * W0.reshape(1, -1)) @ A2.T
        AW = np.einsum("ilc,lcd->ild", self.A, W0).reshape(self.q_rest, -1)
        return AW @ A2.T

    def apply(self, Y: np.ndarray) -> np.ndarray:
        """A_r0 @ Y for Y of shape (q0, k)."""
        return self.A.reshape(self.q_rest, -1) @ Y

    def apply_T(self, V: np.ndarray) -> np.ndarray:
        """A_r0' @ V for V of shape (q_r, k)."""
        return self.A.reshape(self.q_rest, -1).T @ V

    def quad(self, N: np.ndarray) -> np.ndarray:
        """Per first-term level l: A_r0[:, l]' N A_r0[:, l], shape (m0, p0, p0)."""
        A2 = self.A.reshape(self.q_rest, -1)
        NA = N @ A2
        if self.p0 == 1:
            return np.einsum("il,il->l", A2, NA).reshape(self.m0, 1, 1)
        return np.einsum("ilc,ild->lcd", self.A, NA.reshape(self.q_rest, self.m0, self.p0))


class PairCross:
    """A_r0 as CSR plus the pair matrix S for its weighted Gram products."""

    def __init__(self, Ar0: sp.spmatrix, m0: int, p0: int):
        self.q_rest = Ar0.shape[0]
        self.m0, self.p0 = m0, p0
        self.A = sp.csr_matrix(Ar0)
        self.AT = self.A.T.tocsr()
        coo = self.A.tocoo()
        level, column = np.divmod(coo.col.astype(np.int64), p0)
        # One "entry" per (level, rest row) with its p0 values.
        key = level * self.q_rest + coo.row
        entries, inverse = _distinct(key, m0 * self.q_rest)
        values = np.bincount(inverse * p0 + column, weights=coo.data, minlength=len(entries) * p0).reshape(-1, p0)
        entry_level = entries // self.q_rest
        entry_row = entries % self.q_rest  # sorted by level, then row
        # All pairs (a, b), b <= a, of entries within one level.
        per_level = np.bincount(entry_level, minlength=m0)
        starts = np.concatenate([[0], np.cumsum(per_level)[:-1]])
        all_entries = np.arange(len(entries))
        counts, second = pairs_within_levels(all_entries, starts[entry_level])
        first = np.repeat(all_entries, counts)
        rows_i = np.repeat(entry_row, counts)
        pair_key = rows_i * self.q_rest + entry_row[second]
        del rows_i
        pairs, pair_id = _distinct(pair_key, self.q_rest * self.q_rest)
        del pair_key
        self.pair_i = (pairs // self.q_rest).astype(np.intp)
        self.pair_j = (pairs % self.q_rest).astype(np.intp)
        # S[(i, j), (l, c, d)] = (a_il[c] a_jl[d] + a_jl[c] a_il[d]) / 2
        if p0 == 1:
            prod = np.repeat(values[:, 0], counts) * values[second, 0]
        else:
            vi, vj = values[first], values[second]
            prod = 0.5 * (vi[:, :, None] * vj[:, None, :] + vj[:, :, None] * vi[:, None, :])
        # The incidences come level by level (entries are sorted by level), so
        # S' is written in CSR form directly: row (l, c, d) holds level l's
        # incidences, in their order; S is its transpose (CSC), no sorting.
        n_first = len(first)
        counts = per_level * (per_level + 1) // 2  # incidences per level
        if p0 == 1:
            data, indices = prod, pair_id
            indptr = np.concatenate([[0], np.cumsum(counts)])
            self._ST_position = None
        else:
            # within level l, row (l, c, d) repeats the level's pair ids with the
            # (c, d) products: incidence t of level l, product cd, goes to
            # level_start[l] * k + cd * counts[l] + (t - level_start[l])
            level_start = np.concatenate([[0], np.cumsum(counts)])
            k = p0 * p0
            lev = entry_level[first]
            within = np.arange(n_first) - level_start[lev]
            self._ST_position = (level_start[lev] * k + within)[:, None] + np.arange(k)[None, :] * counts[lev][:, None]
            data = np.empty(n_first * k)
            data[self._ST_position] = prod.reshape(n_first, k)
            indices = np.empty(n_first * k, dtype=pair_id.dtype)
            indices[self._ST_position] = pair_id[:, None]
            indptr = np.concatenate([[0], np.cumsum(np.repeat(counts, k))])
        self.ST = sp.csr_matrix((data, indices, indptr), shape=(m0 * p0 * p0, len(pairs)))
        self.S = self.ST.T  # CSC
        # How the arrays above follow from A_r0's entries (see reweighted):
        # each entry's slot among the values, the pairs, and A's transpose order.
        self._value_slot = inverse * p0 + column  # in A's CSR order (tocoo keeps it)
        self._first, self._second = first, second
        self._n_entries = len(entries)
        self._AT_order = _transpose_order(self.A)
        # Off-diagonal pairs count twice in symmetric sums.
        self.pair_weight = np.where(self.pair_i == self.pair_j, 1.0, 2.0)
        self.n_incidences = len(first)

    def pair_values(self, W0: np.ndarray) -> np.ndarray:
        """The Gram product at the pairs: ``gram(W0)[pair_i, pair_j]``."""
        return self.S @ W0.ravel()

    def reweighted(self, data: np.ndarray) -> PairCross:
        """The same structure for A_r0 with new entries ``data`` (in ``A.data``'s order).

        PIRLS reweights the same pattern at every step
        (:mod:`sklmm._engine.reweight`): only the values of A, A' and S are
        recomputed, in one vectorised pass over the incidences.
        """
        p0 = self.p0
        new = copy.copy(self)
        new.A = _with_data(self.A, data)
        new.AT = _with_data(self.AT, data[self._AT_order])
        values = np.zeros(self._n_entries * p0)
        values[self._value_slot] = data
        values = values.reshape(-1, p0)
        vi, vj = values[self._first], values[self._second]
        if p0 == 1:
            ST_data = vi[:, 0] * vj[:, 0]
        else:
            prod = 0.5 * (vi[:, :, None] * vj[:, None, :] + vj[:, :, None] * vi[:, None, :])
            ST_data = np.empty(prod.size)
            ST_data[self._ST_position] = prod.reshape(len(vi), -1)
        new.ST = _with_data(self.ST, ST_data)
        new.S = new.ST.T  # CSC view
        return new

    def gram(self, W0: np.ndarray) -> np.ndarray:
        values = self.S @ W0.ravel()
        G = np.zeros((self.q_rest, self.q_rest))
        G[self.pair_i, self.pair_j] = values
        G[self.pair_j, self.pair_i] = values
        return G

    def apply(self, Y: np.ndarray) -> np.ndarray:
        return np.asarray(self.A @ Y)

    def apply_T(self, V: np.ndarray) -> np.ndarray:
        return np.asarray(self.AT @ V)

    def quad(self, N: np.ndarray) -> np.ndarray:
        return self.quad_from_pairs(N[self.pair_i, self.pair_j])

    def quad_from_pairs(self, values: np.ndarray) -> np.ndarray:
        """``quad`` given N only at the pairs: ``values[k] = N[pair_i[k], pair_j[k]]``."""
        return np.asarray(self.ST @ (self.pair_weight * values)).reshape(self.m0, self.p0, self.p0)


def pairs_within_levels(entries: np.ndarray, first_of_level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (a, b), b <= a, of entries that share a first-term level, for the entries a given.

    Entries are numbered level by level; entry a pairs with the entries from
    its level's first, ``first_of_level[a]``, to itself.

    Parameters
    ----------
    entries : ndarray of int, ascending
        The entries a whose pairs are wanted (all of them, or a chunk).
    first_of_level : ndarray of int
        For each of those entries, the first entry of its level.

    Returns
    -------
    counts : ndarray
        Pairs per entry (``entries - first_of_level + 1``).
    second : ndarray
        b of every pair, entry by entry: ``np.repeat(entries, counts)`` gives a.

    Examples
    --------
    >>> import numpy as np
    >>> counts, second = pairs_within_levels(np.arange(5), np.array([0, 0, 0, 3, 3]))
    >>> counts.tolist(), second.tolist()
    ([1, 2, 3, 1, 2], [0, 0, 1, 0, 1, 2, 3, 3, 4])
    """
    counts = entries - first_of_level + 1
    start = np.cumsum(counts) - counts  # where entry a's pairs begin
    second = np.arange(int(start[-1] + counts[-1]) if len(counts) else 0) + np.repeat(first_of_level - start, counts)
    return counts, second


#: Distinct pair keys are found with a lookup table of this many entries at most
#: (4 bytes each), else by sorting.
_TABLE_MAX = 16_000_000


def _distinct(keys: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_inverse=True)`` for integer keys in ``[0, bound)``.

    The inverse may come as int32 (scipy's own index type, so that sparse
    matrices built from it need no conversion).

    With a modest bound, a lookup table (one pass, no sort: InstEval's 1.8
    million pair incidences in 10 ms instead of 200 ms); else sorting.
    """
    if bound > _TABLE_MAX:
        return np.unique(keys, return_inverse=True)
    seen = np.zeros(bound, dtype=bool)
    seen[keys] = True
    distinct = np.flatnonzero(seen)
    table = np.empty(bound, dtype=np.int32 if len(distinct) < 2**31 else np.int64)
    table[distinct] = np.arange(len(distinct), dtype=table.dtype)
    return distinct, table[keys]


def _with_data(M: sp.csr_matrix, data: np.ndarray) -> sp.csr_matrix:
    """M's pattern (shared, not copied) with new values, without scipy's format checks."""
    new = copy.copy(M)
    new.data = data
    return new


def _transpose_order(M: sp.csr_matrix) -> np.ndarray:
    """k with ``M.T.tocsr().data == M.data[k]`` (M's pattern only)."""
    probe = sp.csr_matrix((np.arange(1.0, M.nnz + 1.0), M.indices, M.indptr), shape=M.shape).T.tocsr()
    return np.rint(probe.data).astype(np.intp) - 1


def make_cross(Ar0: sp.spmatrix, m0: int, p0: int):
    """The cheaper representation of A_r0 for this model."""
    q_rest, q0 = Ar0.shape
    if q_rest * q0 <= DENSE_MAX_ENTRIES:
        # Dense Gram costs q_r^2 q0 multiply-adds in BLAS; pairs cost their
        # incidences in sparse code, roughly 20x slower per operation.
        if q_rest * q_rest * q0 <= 1_000_000:  # dense whatever the incidences
            return DenseCross(Ar0, m0, p0)
        # Stored entries per level bound the rest rows per level from above,
        # so this bound often decides without counting (InstEval: 30 ms).
        per_level = np.bincount(sp.coo_matrix(Ar0).col // p0, minlength=m0).astype(np.int64)
        if q_rest * q_rest * q0 > 20 * int(np.sum(per_level * (per_level + 1) // 2)) * p0 * p0 + 1_000_000:
            return PairCross(Ar0, m0, p0)
        incidences = _pair_incidences(Ar0, m0, p0)
        if q_rest * q_rest * q0 <= 20 * incidences * p0 * p0 + 1_000_000:
            return DenseCross(Ar0, m0, p0)
    return PairCross(Ar0, m0, p0)


def _pair_incidences(Ar0: sp.spmatrix, m0: int, p0: int) -> int:
    """sum over first-term levels of k_l (k_l + 1) / 2, k_l = rest rows the level touches."""
    coo = sp.coo_matrix(Ar0)
    coo.sum_duplicates()  # one entry per (row, column)
    if p0 == 1:
        per_level = np.bincount(coo.col, minlength=m0)
    else:
        level = coo.col // p0
        keys, _ = _distinct(level.astype(np.int64) * Ar0.shape[0] + coo.row, m0 * Ar0.shape[0])
        per_level = np.bincount(keys // Ar0.shape[0], minlength=m0)
    return int(np.sum(per_level * (per_level + 1) // 2))
