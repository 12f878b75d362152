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
53,883 items 11.6 GB.  Only scalar rest terms (random intercepts, or any
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

import os

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

#: The packed block may take at most this fraction of the machine's memory.
MEMORY_FRACTION = 0.6


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
        self._pair_position = rfp_position(cross.pair_i, cross.pair_j, self.n)
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
        i, j = self.cross.pair_i, self.cross.pair_j
        buffer[self._pair_position] -= self.cross.pair_values(W0) * (d[i] * d[j])
        buffer[self._diagonal_position] += 1.0
        factor, info = lapack.dpftrf(self.n, buffer, transr="N", uplo="L", overwrite_a=1)
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
        x = lapack.dtfsm(1.0, Lrr.data, b, transr="N", side="L", uplo="L", trans=trans, diag="N", overwrite_b=1)
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
        inverse, info = lapack.dpftri(self.n, Lrr.data, transr="N", uplo="L", overwrite_a=1)
        Lrr.consumed = True
        if info != 0:
            raise np.linalg.LinAlgError("dpftri failed")
        d = scalar_lambda_diagonal(lams, self._column_term)
        i, j = self.cross.pair_i, self.cross.pair_j
        T = self.cross.quad_from_pairs(d[i] * inverse[self._pair_position] * d[j])
        diagonal = inverse[self._diagonal_position[: self.q]]
        blocks = [diagonal[offset : offset + m].reshape(m, 1, 1) for offset, m, _ in self.layout]
        return blocks, T
