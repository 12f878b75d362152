"""Crossed rest blocks too large to hold dense twice: the factor in packed storage.

A users x items model puts the item factor (the rest term) into a block of
L that fills in completely: its Cholesky factor is dense q_r x q_r whatever
the ordering (the item co-rating graph is an expander; CHOLMOD's supernodal
factorisation with a fill-reducing ordering was measured 7-12x slower than
dense LAPACK, ``benchmarks/crossed_rest_factor.py``).  :class:`DenseRest`
holds A_rr, the matrix being factored and, for the gradient, the inverse,
each q_r^2 doubles: 21.6 GB at 30,000 items.  :class:`PackedRest` holds one
triangle once:

* A_rr stays sparse; the matrix to factor,
  ``B = Lambda_r' (A_rr - A_r0 W0 A_0r) Lambda_r + I``, is nonzero only at
  A_rr's pattern and the pairs of rest columns that share a first-term level
  (:class:`sklmm._engine.crossblock.PairCross`), so it is scattered into a
  zeroed buffer at positions computed once;
* the buffer is in LAPACK's rectangular full packed format (RFP: the lower
  triangle in an (n + 1) x n/2 array, n(n + 1)/2 doubles, half of dense),
  factored in place by ``dpftrf`` and solved with by ``dtfsm``, all level-3
  BLAS: measured as fast as ``dpotrf`` on the full matrix;
* the gradient's inverse (``dpftri``) overwrites the factor: the factor is
  then marked consumed and any later use raises instead of reading the
  inverse as a factor.

So a 30,000-item model needs 3.6 GB for its rest block, and ml-latest's
53,883 items 11.6 GB.

The pairs themselves can outgrow memory: ml-latest's heavy users (the top
1% rate over 1,100 items each) make 1.3e10 (user, item pair) incidences.
Then :class:`StreamedCross` keeps only A_r0 (and its transpose) and streams
both Gram products through bounded chunks at every evaluation:

* the correction ``A_r0 W0 A_0r`` by blocks of rest rows, one sparse product
  each (scipy's, which sums over the first-term levels) written densely into
  the packed triangle's slices;
* the gradient's ``T_l = A_r0[:, l]' N A_r0[:, l]`` by chunks of A_r0's
  entries, each entry's pairs within its level gathered from the packed
  inverse.  Only scalar rest terms (random intercepts, or any
single-column terms) take this path; the first term may have any number of
columns.

RFP layout used (TRANSR='N', UPLO='L', n even, k = n/2; LAPACK's dtrttf):
the array is (n + 1) x k, column major; lower entry (r, c), r >= c, lives at

* ``c (n + 1) + r + 1``        for c < k,
* ``(r - k)(n + 1) + (c - k)`` for c >= k.

An odd q_r is padded with one identity row and column (log det and solves
unchanged).
"""

from __future__ import annotations

import ctypes
import os

import numpy as np
import scipy.sparse as sp
from scipy.linalg import cython_lapack

from . import rfp
from .crossblock import pairs_within_levels

#: The packed block may take at most this fraction of the machine's memory.
MEMORY_FRACTION = 0.6
#: StreamedCross's default chunk bounds: dense entries of one block of the Gram
#: correction (128 MB; with the sparse product and its dense copy, 0.5 GB),
#: and (level, pair) incidences gathered at once for T (0.4 GB of temporaries).
STREAM_BLOCK_ENTRIES = 1 << 24
STREAM_CHUNK_INCIDENCES = 1 << 23


def stream_workspace_bytes() -> int:
    """Peak temporaries of a StreamedCross evaluation at the current chunk bounds."""
    return max(STREAM_BLOCK_ENTRIES * 8 * 4, STREAM_CHUNK_INCIDENCES * 8 * 6)
#: First-term levels touching at least this many rest rows are gathered as
#: dense tiles (their pairs would cost more to enumerate).
HEAVY_LEVEL = 128
#: Rows of a heavy level's tile (its leading square is masked).
HEAVY_TILE_ROWS = 256


def rfp_position(r: np.ndarray, c: np.ndarray, n: int) -> np.ndarray:
    """Flat position of lower entries (r, c), r >= c, in an n x n RFP array (n even)."""
    r = np.asarray(r, dtype=np.int64)
    c = np.asarray(c, dtype=np.int64)
    k = n // 2
    return np.where(c < k, c * (n + 1) + r + 1, (r - k) * (n + 1) + (c - k))


def scalar_lambda_diagonal(lams, column_term: np.ndarray) -> np.ndarray:
    """Lambda_r's diagonal for scalar rest terms: each rest column's lambda_t (``column_term``: its term)."""
    return np.array([lam[0, 0] for lam in lams])[column_term]


def physical_memory() -> int | None:
    """Bytes of physical memory, or None where the platform does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def packed_bytes(q: int) -> int:
    """Bytes of the packed buffer for q rest random effects."""
    n = q + (q % 2)
    return (n + 1) * (n // 2) * 8


_CHAR, _INT, _DOUBLE = ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_void_p
# (scipy's Python wrappers of the RFP routines check the buffer's length n (n + 1) / 2 in 32-bit
# arithmetic, which overflows past n = 46,340: ml-latest's 53,883 items; LAPACK itself needs no such product)
_DTFSM = rfp._routine(cython_lapack, "dtfsm", _CHAR, _CHAR, _CHAR, _CHAR, _CHAR, _INT, _INT, _DOUBLE, _DOUBLE, _DOUBLE, _INT)


def rfp_solve(buffer: np.ndarray, n: int, rhs: np.ndarray, trans: str) -> np.ndarray:
    """L^-1 rhs (trans 'N') or L'^-1 rhs ('T') for the lower factor L in the RFP buffer; rhs (n, k), overwritten."""
    b = np.asfortranarray(rhs, dtype=np.float64)
    if b.shape[0] != n:
        raise ValueError(f"rhs has {b.shape[0]} rows, the factor {n}")
    alpha = np.ones(1)
    _DTFSM(b"N", b"L", b"L", trans.encode(), b"N", ctypes.byref(ctypes.c_int(n)), ctypes.byref(ctypes.c_int(b.shape[1])),
           alpha.ctypes.data, rfp.buffer_address(buffer), b.ctypes.data, ctypes.byref(ctypes.c_int(n)))
    return b


def rfp_array(buffer: np.ndarray, n: int) -> np.ndarray:
    """The flat RFP buffer as its (n + 1) x n/2 column-major array (a view)."""
    return buffer.reshape(n // 2, n + 1).T


class PackedFactor:
    """L_rr (or, once consumed, M_rr^-1) in RFP storage: ``data`` is the flat buffer."""

    def __init__(self, data: np.ndarray, q: int, n: int):
        self.data = data
        self.q, self.n = q, n
        self.consumed = False

    def check(self) -> None:
        if self.consumed:
            raise RuntimeError(
                "this factor's storage now holds the inverse (PackedRest.inverse_blocks "
                "overwrites it); factor again"
            )


class PackedRest:
    """Scalar crossed rest terms with a packed, in-place factor (see the module docstring).

    Implements the operations of :class:`sklmm._engine.rest.DenseRest`
    (``_deviance.ProfiledDeviance`` calls only these).

    Parameters
    ----------
    layout : list of (offset, m_t, 1)
        Each rest term's first column and levels.
    Arr : sparse (q_r, q_r)
        Z_r' W Z_r (kept sparse: for one rest term it is diagonal).
    AXr : ndarray (p + 1, q_r)
    cross : PairCross
    """

    #: The gradient's inverse overwrites the factor (the caller must not reuse it).
    consumes_factor = True

    def __init__(self, layout, Arr: sp.spmatrix, AXr: np.ndarray, cross):
        self.layout = layout
        self.q = Arr.shape[0]
        self.n = self.q + (self.q % 2)  # RFP wants n even: pad one identity row
        self.Arr = sp.csr_matrix(Arr)
        self.AXr = AXr
        self.cross = cross
        self._column_term = np.repeat(np.arange(len(layout)), [m for _, m, _ in layout])
        lower = sp.tril(self.Arr).tocoo()
        self._arr_i, self._arr_j, self._arr_values = lower.row.astype(np.intp), lower.col.astype(np.intp), lower.data
        self._arr_position = rfp_position(self._arr_i, self._arr_j, self.n)
        self._streamed = isinstance(cross, StreamedCross)
        self._pair_position = None if self._streamed else rfp_position(cross.pair_i, cross.pair_j, self.n)
        diagonal = np.arange(self.n)
        self._diagonal_position = rfp_position(diagonal, diagonal, self.n)

    def lam(self, lams, V: np.ndarray, transpose: bool = False) -> np.ndarray:
        """Lambda_r V (Lambda_r is diagonal here, so also Lambda_r' V)."""
        d = scalar_lambda_diagonal(lams, self._column_term)
        return V * (d if V.ndim == 1 else d[:, None])

    def factor(self, lams, W0: np.ndarray, W0AX0: np.ndarray):
        """L_rr (a :class:`PackedFactor`) and L_Xr."""
        d = scalar_lambda_diagonal(lams, self._column_term)
        buffer = np.zeros((self.n + 1) * (self.n // 2))
        # B = D (A_rr - A_r0 W0 A_0r) D + I at its nonzeros (lower triangle)
        # (each position list is free of repeats, so fancy indexing adds correctly)
        buffer[self._arr_position] = self._arr_values * (d[self._arr_i] * d[self._arr_j])
        if self._streamed:
            self.cross.subtract_packed_gram(buffer, self.n, W0, d)
        else:
            i, j = self.cross.pair_i, self.cross.pair_j
            buffer[self._pair_position] -= self.cross.pair_values(W0) * (d[i] * d[j])
        buffer[self._diagonal_position] += 1.0
        info = rfp.cholesky(buffer, self.n)
        factor = buffer
        if info != 0:
            raise np.linalg.LinAlgError(f"matrix is not positive definite (leading minor {info})")
        Lrr = PackedFactor(factor, self.q, self.n)
        C = self.lam(lams, self.AXr.T - self.cross.apply(W0AX0))
        LXr = self.solve_lower(Lrr, C).T
        return Lrr, LXr

    def _solve(self, Lrr: PackedFactor, rhs: np.ndarray, trans: str) -> np.ndarray:
        Lrr.check()
        k = rhs.shape[1]
        b = np.zeros((self.n, k), order="F")
        b[: self.q] = rhs
        x = rfp_solve(Lrr.data, self.n, b, trans)
        return x[: self.q]

    def solve_lower(self, Lrr: PackedFactor, rhs: np.ndarray) -> np.ndarray:
        """L_rr^-1 rhs for rhs of shape (q_r, k)."""
        return self._solve(Lrr, rhs, "N")

    def solve_upper(self, Lrr: PackedFactor, rhs: np.ndarray) -> np.ndarray:
        """L_rr'^-1 rhs for rhs of shape (q_r, k)."""
        return self._solve(Lrr, rhs, "T")

    def log_diagonal_sum(self, Lrr: PackedFactor) -> float:
        Lrr.check()
        return float(np.sum(np.log(Lrr.data[self._diagonal_position[: self.q]])))

    def column_mean_squares(self, t: int, n: int) -> np.ndarray:
        offset, m, p = self.layout[t]
        return np.array([self.Arr.diagonal()[offset : offset + m].sum() / n])

    def times_A(self, b: np.ndarray) -> np.ndarray:
        return self.Arr @ b

    def inverse_blocks(self, Lrr: PackedFactor, lams):
        """As :meth:`DenseRest.inverse_blocks`; the inverse overwrites ``Lrr`` (then consumed)."""
        Lrr.check()
        info = rfp.inverse(Lrr.data, self.n)
        inverse = Lrr.data
        Lrr.consumed = True
        if info != 0:
            raise np.linalg.LinAlgError("dpftri failed")
        d = scalar_lambda_diagonal(lams, self._column_term)
        if self._streamed:
            T = self.cross.packed_quad(inverse, self.n, d)
        else:
            i, j = self.cross.pair_i, self.cross.pair_j
            T = self.cross.quad_from_pairs(d[i] * inverse[self._pair_position] * d[j])
        diagonal = inverse[self._diagonal_position[: self.q]]
        blocks = [diagonal[offset : offset + m].reshape(m, 1, 1) for offset, m, _ in self.layout]
        return blocks, T


class StreamedCross:
    """A_r0 for :class:`PackedRest` when its pairs are too many to hold: Gram products streamed.

    Holds A_r0 and its transpose only (O(nnz)); every evaluation recomputes

    * ``D (A_r0 W0 A_0r) D`` block of rest rows by block (a sparse product
      each, so scipy sums over the first-term levels) and subtracts it from the
      packed triangle's slices (:meth:`subtract_packed_gram`);
    * ``T_l = A_r0[:, l]' N A_r0[:, l]`` for ``N = D M_rr^-1 D`` by chunks of
      A_r0's entries, gathering N at each entry's pairs within its level from
      the packed inverse (:meth:`packed_quad`).

    Work per evaluation is of the order of the pair incidences (sum over
    first-term levels of k_l^2), memory of the chunk bounds.

    Parameters
    ----------
    Ar0 : sparse (q_r, q0)
        Z_r' W Z_0; its columns are first-term (level, column) pairs.
    m0, p0 : int
        Levels and columns of the first term.
    block_entries : int, optional
        Dense entries (rows x q_r) in one block of the Gram correction
        (default ``STREAM_BLOCK_ENTRIES``).
    chunk_incidences : int, optional
        (level, pair) incidences gathered in one chunk of T (default
        ``STREAM_CHUNK_INCIDENCES``).
    """

    def __init__(self, Ar0: sp.spmatrix, m0: int, p0: int, block_entries: int | None = None, chunk_incidences: int | None = None):
        block_entries = STREAM_BLOCK_ENTRIES if block_entries is None else block_entries
        chunk_incidences = STREAM_CHUNK_INCIDENCES if chunk_incidences is None else chunk_incidences
        self.q_rest = Ar0.shape[0]
        self.m0, self.p0 = m0, p0
        self.A = sp.csr_matrix(Ar0, copy=True)
        self.A.sum_duplicates()  # canonical: one entry per position, indices sorted
        self.AT = self.A.T.tocsr()
        self.AT.sum_duplicates()
        self.block_rows = max(1, block_entries // max(self.q_rest, 1))
        self.chunk_incidences = max(1, chunk_incidences)
        # One "entry" per (level, rest row) with its p0 values, sorted by level, then row.
        if p0 == 1:
            self._entry_level = np.repeat(np.arange(m0, dtype=np.int32), np.diff(self.AT.indptr))
            self._entry_row = self.AT.indices.astype(np.intp)
            self._values = self.AT.data.reshape(-1, 1)
            level_start = self.AT.indptr[:-1].astype(np.int64)
        else:
            coo = self.AT.tocoo()
            level, column = np.divmod(coo.row.astype(np.int64), p0)
            entries, inverse = np.unique(level * self.q_rest + coo.col, return_inverse=True)
            self._values = np.bincount(inverse * p0 + column, weights=coo.data, minlength=len(entries) * p0).reshape(-1, p0)
            self._entry_level = (entries // self.q_rest).astype(np.int32)
            self._entry_row = (entries % self.q_rest).astype(np.intp)
            level_start = np.searchsorted(self._entry_level, np.arange(m0)).astype(np.int64)
        # entry a pairs with the entries of its level from the first to itself
        self._first_of_level = level_start[self._entry_level]
        self._level_start = np.append(level_start, len(self._entry_level))
        per_level = np.diff(self._level_start)
        self.n_incidences = int(np.sum(per_level * (per_level + 1) // 2))
        heavy = per_level >= HEAVY_LEVEL
        self._heavy_levels = np.flatnonzero(heavy)
        self._light_entries = np.flatnonzero(~heavy[self._entry_level])
        self._light_pairs_end = np.cumsum(self._light_entries - self._first_of_level[self._light_entries] + 1)

    def apply(self, Y: np.ndarray) -> np.ndarray:
        """A_r0 @ Y for Y of shape (q0, k)."""
        return np.asarray(self.A @ Y)

    def apply_T(self, V: np.ndarray) -> np.ndarray:
        """A_r0' @ V for V of shape (q_r, k)."""
        return np.asarray(self.AT @ V)

    def _weighted_transpose(self, W0: np.ndarray) -> sp.csr_matrix:
        """blockdiag(W0) A_0r, sparse (q0, q_r)."""
        if self.p0 == 1:
            scaled = self.AT.copy()
            scaled.data *= np.repeat(W0.reshape(-1), np.diff(self.AT.indptr))
            return scaled
        W = sp.bsr_matrix((W0, np.arange(self.m0), np.arange(self.m0 + 1)), shape=(self.AT.shape[0],) * 2)
        return sp.csr_matrix(W @ self.AT)

    def subtract_packed_gram(self, buffer: np.ndarray, n: int, W0: np.ndarray, d: np.ndarray) -> None:
        """``buffer -= D A_r0 W0 A_0r D`` on the lower triangle held in RFP ``buffer`` (n x n)."""
        arr = rfp_array(buffer, n)
        k = n // 2
        WAT = self._weighted_transpose(W0)
        for j0 in range(0, self.q_rest, self.block_rows):
            j1 = min(self.q_rest, j0 + self.block_rows)
            # rows j0..j1-1 of the Gram, densely; only columns c <= row are kept
            G = (self.A[j0:j1] @ WAT).toarray()[:, :j1]
            G *= d[j0:j1, None]
            G *= d[None, :j1]
            square = G[:, j0:]
            square[np.triu_indices(j1 - j0, 1)] = 0.0
            # (r, c) with c < k sits at arr[r + 1, c]; with c >= k at arr[c - k, r - k]
            # (the zeros above the diagonal land on entries of the other half: unchanged)
            ck = min(k, j1)
            arr[j0 + 1 : j1 + 1, :ck] -= G[:, :ck]
            if j1 > k:
                r0 = max(j0, k)
                arr[: j1 - k, r0 - k : j1 - k] -= G[r0 - j0 :, k:j1].T

    def packed_quad(self, inverse: np.ndarray, n: int, d: np.ndarray) -> np.ndarray:
        """``T_l = A_r0[:, l]' D M^-1 D A_r0[:, l]`` from M^-1's lower triangle in RFP ``inverse``.

        Light levels (fewer than ``HEAVY_LEVEL`` rest rows) by chunks of their
        entries' pairs, gathered at computed positions; each heavy level by
        tiles of its submatrix of M^-1, gathered as 2-d slices of the packed
        array (rows of it are contiguous in memory) and reduced with BLAS.
        """
        p0 = self.p0
        T = np.zeros((self.m0, p0 * p0))
        self._light_quad(T, inverse, n, d)
        self._heavy_quad(T, inverse, n, d)
        return T.reshape(self.m0, p0, p0)

    def _light_quad(self, T: np.ndarray, inverse: np.ndarray, n: int, d: np.ndarray) -> None:
        p0 = self.p0
        entries, pairs_end = self._light_entries, self._light_pairs_end
        e0 = 0
        while e0 < len(entries):
            done = pairs_end[e0 - 1] if e0 else 0
            e1 = max(e0 + 1, int(np.searchsorted(pairs_end, done + self.chunk_incidences, side="right")))
            chunk = entries[e0:e1]
            counts, second = pairs_within_levels(chunk, self._first_of_level[chunk])
            i = np.repeat(self._entry_row[chunk], counts)
            j = self._entry_row[second]
            value = inverse[rfp_position(i, j, n)] * d[i] * d[j]
            value[i != j] *= 2.0  # (a, b) and (b, a) both
            level = np.repeat(self._entry_level[chunk], counts)
            lo = int(self._entry_level[chunk[0]])
            width = int(self._entry_level[chunk[-1]]) - lo + 1
            if p0 == 1:
                value *= np.repeat(self._values[chunk, 0], counts) * self._values[second, 0]
                T[lo : lo + width, 0] += np.bincount(level - lo, weights=value, minlength=width)
            else:
                va, vb = np.repeat(self._values[chunk], counts, axis=0), self._values[second]
                for c in range(p0):
                    for e in range(p0):
                        sym = 0.5 * (va[:, c] * vb[:, e] + vb[:, c] * va[:, e])
                        T[lo : lo + width, c * p0 + e] += np.bincount(level - lo, weights=value * sym, minlength=width)
            e0 = e1

    def _heavy_quad(self, T: np.ndarray, inverse: np.ndarray, n: int, d: np.ndarray) -> None:
        """T_l for each heavy level l: V' N V over its rest rows, N from the packed lower triangle.

        With the RFP array ``arr`` ((n + 1) x n/2, column major) and its
        C-ordered transpose ``arrT``: M^-1[r, c] (r >= c) is ``arrT[c, r + 1]``
        for c < n/2 and ``arrT[r - n/2, c - n/2]`` for c >= n/2.  With the
        level's rows sorted, their pairs (a <= b) with row a below n/2 form
        an upper triangle of ``arrT[rows_a, rows + 1]``; those with both rows
        at or above n/2 a lower triangle of ``arrT[rows - n/2, rows - n/2]``.
        Q = sum over pairs a <= b of N_ab V_a V_b', and T_l = Q + Q' - the
        diagonal's part.
        """
        k = n // 2
        for level in self._heavy_levels:
            a0, a1 = self._level_start[level], self._level_start[level + 1]
            rows = self._entry_row[a0:a1]
            V = self._values[a0:a1] * d[rows][:, None]  # (m, p0)
            m = len(rows)
            m1 = int(np.searchsorted(rows, k))  # rows below n/2 come first
            Q = np.zeros((self.p0, self.p0))
            step = max(1, min(HEAVY_TILE_ROWS, self.chunk_incidences // m))
            # pairs whose smaller row is below n/2: tiles of rows a, columns b >= a;
            # only each tile's leading square holds invalid entries (below its diagonal)
            for t0 in range(0, m1, step):
                t1 = min(m1, t0 + step)
                # N[rows[b], rows[a]] at arrT[rows[a], rows[b] + 1], valid for b >= a
                tile = np.take(inverse, rows[t0:t1, None] * (n + 1) + (rows[None, t0:] + 1))
                Q += V[t0:t1].T @ (np.triu(tile[:, : t1 - t0]) @ V[t0:t1] + tile[:, t1 - t0 :] @ V[t1:])
            # pairs with both rows at or above n/2: tiles of rows b, columns a <= b
            upper = rows[m1:] - k
            V2 = V[m1:]
            for t0 in range(0, len(upper), step):
                t1 = min(len(upper), t0 + step)
                # N[rows[b], rows[a]] at arrT[rows[b] - k, rows[a] - k], valid for a <= b
                tile = np.take(inverse, upper[t0:t1, None] * (n + 1) + upper[None, :t1])
                Q += (tile[:, :t0] @ V2[:t0] + np.tril(tile[:, t0:t1]) @ V2[t0:t1]).T @ V2[t0:t1]
            diagonal = inverse[rfp_position(rows, rows, n)]
            Q = Q + Q.T - (V * diagonal[:, None]).T @ V
            T[level] += Q.reshape(-1)
