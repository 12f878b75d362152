"""The random-effects terms after the first: their blocks of A and of L.

The first term (most levels) has a block-diagonal diagonal block of L; the
terms after it ("the rest") have one that holds whatever fill-in the first
term causes.  Three structures, chosen when the model is built:

:class:`DenseRest`
    Crossed factors fill the block in: A_rr and L_rr are dense q_r x q_r,
    the cross block A_r0 is a :mod:`sklmm._crossblock` object.
:class:`NestedRest`
    One rest term in which the first term is nested (every level of the
    first term lies within one level of the rest term: ``(1 | a/b)``, where
    ``a:b`` is first and ``a`` the rest).  Then nothing fills in: A_rr, the
    Gram correction and L_rr stay block diagonal, one p_r x p_r block per
    rest level, and all work is batched over levels.
:class:`sklmm._engine.packedrest.PackedRest`
    Crossed scalar rest terms beyond ``DENSE_REST_MAX`` random effects: one
    packed triangle, factored and inverted in place (users x items models);
    its Gram products come from the pairs (a PairCross) or, when those do not
    fit in memory, are streamed (a StreamedCross).

Both implement the same operations (``Sets`` and returns as documented);
``_deviance.ProfiledDeviance`` calls only these.  Symbols as in
:mod:`sklmm._deviance`: W0 = M0 M0' per first-term level, Lambda_r the
block-diagonal factor of the rest terms.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.linalg import lapack

from . import smallblocks
from .crossblock import PairCross, _pair_incidences, make_cross
from .packedrest import MEMORY_FRACTION, PackedRest, StreamedCross, stream_workspace_bytes, packed_bytes, physical_memory, scalar_lambda_diagonal

#: A dense rest block larger than this (q_r) would need q_r^2 doubles several
#: times over (A_rr, the factor, the inverse): beyond it the rest terms are held
#: by :class:`sklmm._engine.packedrest.PackedRest` (one packed triangle, in place).
#: It also keeps the dense path's whole dpotrf/dpotri calls below the order
#: (about 22,500) where the threaded OpenBLAS in scipy's wheels crashes
#: (:mod:`sklmm._engine.rfp`); the packed path splits its calls.
DENSE_REST_MAX = 20_000
#: Bytes per (level, pair) incidence that building a PairCross takes at its peak.
PAIR_BYTES = 64
#: A PairCross is built when it and the packed triangle take at most this
#: fraction of memory; beyond it the Gram products are streamed
#: (:class:`sklmm._engine.packedrest.StreamedCross`), at the cost of
#: recomputing the pairs at every evaluation.
PAIR_MEMORY_FRACTION = 0.6
#: StreamedCross: bytes per nonzero of A_r0: A, A' and the weighted copy of A'
#: (12 each: value and int32 index), each entry's level, row, level start and
#: pair offset (28).
STREAMED_BYTES_PER_ENTRY = 64


def _cholesky(a: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a symmetric matrix, in Fortran order (overwrites ``a``).

    LAPACK works in Fortran order; a C-ordered symmetric matrix is its own
    transpose, so ``a.T`` is passed (a view, no copy) and the factor stays in
    Fortran order for the triangular solves and the inverse that follow.
    Raises numpy's LinAlgError if ``a`` is not positive definite.
    """
    target = a.T if a.flags.c_contiguous else np.asfortranarray(a)
    factor, info = lapack.dpotrf(target, lower=1, clean=1, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"matrix is not positive definite (leading minor {info})")
    return factor


def _trsm(L: np.ndarray, rhs: np.ndarray, trans: int) -> np.ndarray:
    """L^-1 rhs (trans=0) or L'^-1 rhs (trans=1) for a lower-triangular L (LAPACK dtrtrs)."""
    x, info = lapack.dtrtrs(L, rhs, lower=1, trans=trans)
    if info != 0:
        raise np.linalg.LinAlgError(f"singular triangular factor (dtrtrs info {info})")
    return x


def make_rest(rest_terms, Ar0: sp.csr_matrix, Arr: sp.spmatrix, AXr: np.ndarray, parent: np.ndarray | None, m0: int, p0: int):
    """The cheaper structure for the rest terms (see the module docstring).

    Parameters
    ----------
    rest_terms : list of ReTerm
        Only their levels, columns and names are read.
    Ar0 : sparse (q_r, q0)
        Z_r' W Z_0.
    Arr : sparse (q_r, q_r)
        Z_r' W Z_r.
    AXr : ndarray (p + 1, q_r)
        [X y]' W Z_r.
    parent : ndarray (m0,) or None
        With one rest term in which the first term is nested: each
        first-term level's rest level (:func:`sklmm._engine.blocks.nested_parent`).
    m0, p0 : int
        Levels and columns of the first term.
    """
    if len(rest_terms) == 1 and parent is not None:
        return NestedRest(rest_terms[0], Ar0, Arr, AXr, parent, m0, p0)
    q_rest = Ar0.shape[0]
    layout = []
    offset = 0
    for term in rest_terms:
        layout.append((offset, term.n_levels, term.n_columns))
        offset += term.q
    if q_rest > DENSE_REST_MAX:
        return _packed_rest(rest_terms, layout, Ar0, Arr, AXr, m0, p0)
    return DenseRest(layout, np.asarray(Arr.toarray()), AXr, make_cross(Ar0, m0, p0))


def _packed_rest(rest_terms, layout, Ar0, Arr, AXr, m0: int, p0: int) -> PackedRest:
    """The packed in-place structure for a rest block beyond DENSE_REST_MAX, or a clear refusal."""
    q_rest = Ar0.shape[0]
    names = ", ".join(t.factor_name for t in rest_terms)
    if any(p != 1 for _, _, p in layout):
        raise ValueError(
            f"the random-effects terms after the one with most levels ({names}) have {q_rest} "
            f"random effects in all, and they are crossed with it, so their block of the Cholesky "
            f"factor is dense ({q_rest}^2 numbers). Beyond {DENSE_REST_MAX} random effects sklmm "
            "holds such a block only for terms with one column each (random intercepts); these "
            "have random slopes. Simplify the model (fewer levels or slopes on these factors), or "
            "make a factor nested in the largest one (its levels within one level of it), which "
            "needs no dense block."
        )
    needed, available = packed_bytes(q_rest), physical_memory()
    if available is not None and needed > MEMORY_FRACTION * available:
        raise ValueError(
            f"the random-effects terms after the one with most levels ({names}) have {q_rest} "
            f"random effects in all, and they are crossed with it, so their block of the Cholesky "
            f"factor is dense: one triangle of it takes {needed / 2**30:.1f} GiB, more than "
            f"{MEMORY_FRACTION:.0%} of this machine's {available / 2**30:.1f} GiB of memory. "
            "Simplify the model (fewer levels on these factors), or make a factor nested in the "
            "largest one (its levels within one level of it), which needs no dense block."
        )
    incidences = _pair_incidences(Ar0, m0, p0)
    pair_bytes = PAIR_BYTES * incidences * p0 * p0
    if available is None or needed + pair_bytes <= PAIR_MEMORY_FRACTION * available:
        return PackedRest(layout, Arr, AXr, PairCross(Ar0, m0, p0))
    # The pairs do not fit (heavy levels of the first term touching thousands of
    # rest levels): stream the Gram products through bounded chunks instead.
    streamed_bytes = STREAMED_BYTES_PER_ENTRY * Ar0.nnz + stream_workspace_bytes()
    if needed + streamed_bytes > MEMORY_FRACTION * available:
        raise ValueError(
            f"the random-effects terms after the one with most levels ({names}) have {q_rest} "
            f"random effects in all, crossed with it through {Ar0.nnz:,} nonzeros: their packed "
            f"triangle ({needed / 2**30:.1f} GiB) and the cross products' workspace "
            f"({streamed_bytes / 2**30:.1f} GiB) take more than {MEMORY_FRACTION:.0%} of this "
            f"machine's {available / 2**30:.1f} GiB of memory. Simplify the model (fewer levels on "
            "these factors), or make a factor nested in the largest one (its levels within one "
            "level of it), which needs no dense block."
        )
    return PackedRest(layout, Arr, AXr, StreamedCross(Ar0, m0, p0))


def _entries(matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and values of a sparse matrix's entries, each position once."""
    if sp.issparse(matrix) and matrix.format == "csr" and matrix.has_canonical_format:
        rows = np.repeat(np.arange(matrix.shape[0], dtype=np.intp), np.diff(matrix.indptr))
        return rows, matrix.indices.astype(np.intp), matrix.data
    coo = sp.coo_matrix(matrix)
    coo.sum_duplicates()
    return coo.row.astype(np.intp), coo.col.astype(np.intp), coo.data


def _apply_lambda(lam: np.ndarray, V: np.ndarray, m: int, p: int, transpose: bool) -> np.ndarray:
    """(I_m (x) lambda) V, or with lambda', for V of shape (m p, k)."""
    block = V.reshape(m, p, -1)
    spec = "ji,ljk->lik" if transpose else "ij,ljk->lik"
    return np.einsum(spec, lam, block).reshape(m * p, -1)


class DenseRest:
    """Crossed rest terms: dense A_rr and L_rr (q_r x q_r)."""

    #: The gradient's inverse leaves the factor intact.
    consumes_factor = False

    def __init__(self, layout, Arr: np.ndarray, AXr: np.ndarray, cross):
        self.layout = layout  # (offset, m_t, p_t) per rest term
        self.q = Arr.shape[0]
        self.Arr = Arr  # Z_r' W Z_r
        self.AXr = AXr  # [X y]' W Z_r, (p + 1, q_r)
        self.cross = cross  # Z_r' W Z_0
        # every rest term scalar: each rest column's term, to spread Lambda_r's diagonal
        scalar = all(p == 1 for _, _, p in layout)
        self._column_term = np.repeat(np.arange(len(layout)), [m for _, m, _ in layout]) if scalar else None

    def _scalar_diagonal(self, lams):
        """Lambda_r's diagonal when every rest term is scalar (Lambda_r diagonal), else None."""
        if self._column_term is None:
            return None
        return scalar_lambda_diagonal(lams, self._column_term)

    def lam(self, lams, V: np.ndarray, transpose: bool = False) -> np.ndarray:
        """Lambda_r V (or Lambda_r' V) for V with q_r rows."""
        d = self._scalar_diagonal(lams)
        if d is not None:
            return V * (d if V.ndim == 1 else d[:, None])
        out = np.empty_like(V)
        for (offset, m, p), lam in zip(self.layout, lams):
            out[offset : offset + m * p] = _apply_lambda(lam, V[offset : offset + m * p], m, p, transpose)
        return out

    def factor(self, lams, W0: np.ndarray, W0AX0: np.ndarray):
        """L_rr and L_Xr (see _deviance's docstring); L_rr is a dense Fortran-ordered array."""
        d = self._scalar_diagonal(lams)
        if d is not None and hasattr(self.cross, "pair_values"):
            B = self._scaled_pair_block(d, W0)
        elif d is not None:  # Lambda_r diagonal: scale rows and columns in place
            B = self.Arr - self.cross.gram(W0)
            B *= d[:, None]
            B *= d[None, :]
        else:
            B = self.Arr - self.cross.gram(W0)
            B = self.lam(lams, self.lam(lams, B, transpose=True).T, transpose=True)
        B.flat[:: self.q + 1] += 1.0
        Lrr = _cholesky(B)
        C = self.lam(lams, self.AXr.T - self.cross.apply(W0AX0), transpose=True)
        LXr = _trsm(Lrr, C, trans=0).T
        return Lrr, LXr

    def _scaled_pair_block(self, d: np.ndarray, W0: np.ndarray) -> np.ndarray:
        """D (A_rr - A_r0 W0 A_0r) D for a diagonal Lambda_r = D and a pair-structured A_r0.

        Only the triangle that :func:`_cholesky` reads (the upper one of a
        C-ordered array, the lower one of its Fortran transpose) gets the Gram
        correction, which is nonzero at the pairs alone: no q_r x q_r Gram
        matrix is formed.
        """
        B = np.multiply(self.Arr, d[:, None])
        B *= d[None, :]
        i, j = self.cross.pair_i, self.cross.pair_j  # i >= j
        if getattr(self, "_pair_flat", None) is None:
            self._pair_flat = j * self.q + i  # position of (j, i) in B, row-major
        flat = B.reshape(-1)
        flat[self._pair_flat] -= self.cross.pair_values(W0) * (d[i] * d[j])
        return B

    def log_diagonal_sum(self, Lrr) -> float:
        return float(np.sum(np.log(np.diag(Lrr))))

    def column_mean_squares(self, t: int, n: int) -> np.ndarray:
        """sum_i w_i z_ic^2 / n for each column c of rest term t."""
        offset, m, p = self.layout[t]
        diagonal = np.diag(self.Arr)[offset : offset + m * p].reshape(m, p)
        return diagonal.sum(axis=0) / n

    def solve_upper(self, Lrr, rhs: np.ndarray) -> np.ndarray:
        """L_rr'^-1 rhs for rhs of shape (q_r, k)."""
        return _trsm(Lrr, rhs, trans=1)

    def solve_lower(self, Lrr, rhs: np.ndarray) -> np.ndarray:
        """L_rr^-1 rhs for rhs of shape (q_r, k)."""
        return _trsm(Lrr, rhs, trans=0)

    def times_A(self, b: np.ndarray) -> np.ndarray:
        """A_rr b for b of shape (q_r,)."""
        return self.Arr @ b

    def inverse_blocks(self, Lrr, lams):
        """Diagonal blocks of M_rr^-1 = L_rr^-T L_rr^-1 per rest term, and the first term's T_l.

        Returns (list of (m_t, p_t, p_t) arrays, T of shape (m0, p0, p0)) with
        T_l = A_r0[:, l]' Lambda_r M_rr^-1 Lambda_r' A_r0[:, l].
        """
        Minv, info = lapack.dpotri(Lrr, lower=1)  # lower triangle of M_rr^-1
        if info != 0:
            raise np.linalg.LinAlgError("dpotri failed")
        if hasattr(self.cross, "quad_from_pairs") and all(p == 1 for _, _, p in self.layout):
            # Scalar rest terms and a pair-structured cross block: N = Lambda_r
            # Minv Lambda_r' is needed only at the pairs (i >= j), all in the
            # lower triangle, so gather them there: no full symmetric copy.
            # Minv is Fortran-ordered: (i, j) sits at i + j q of its memory, the
            # pairs' flat positions (one gather instead of a 2-d fancy index).
            d = self._scalar_diagonal(lams)
            i, j = self.cross.pair_i, self.cross.pair_j
            if getattr(self, "_pair_flat", None) is None:
                self._pair_flat = j * self.q + i
            values = np.take(np.ravel(Minv, order="F"), self._pair_flat)
            T = self.cross.quad_from_pairs(d[i] * values * d[j])
            diagonal = np.diag(Minv)
            blocks = [diagonal[offset : offset + m].reshape(m, 1, 1) for offset, m, _ in self.layout]
            return blocks, T
        diagonal = np.diag(Minv).copy()
        Minv = np.tril(Minv)
        Minv += Minv.T
        Minv.flat[:: self.q + 1] = diagonal
        d = self._scalar_diagonal(lams)
        if d is not None:
            blocks = [diagonal[offset : offset + m].reshape(m, 1, 1) for offset, m, _ in self.layout]
            Minv *= d[:, None]
            Minv *= d[None, :]
            return blocks, self.cross.quad(Minv)
        blocks = []
        for offset, m, p in self.layout:
            block = Minv[offset : offset + m * p, offset : offset + m * p]
            blocks.append(block.reshape(m, p, m, p)[np.arange(m), :, np.arange(m), :])
        N = self.lam(lams, self.lam(lams, Minv).T)
        return blocks, self.cross.quad(N)


class NestedRest:
    """One rest term in which the first term is nested: everything block diagonal per rest level."""

    consumes_factor = False

    def __init__(self, term, Ar0: sp.csr_matrix, Arr: sp.spmatrix, AXr: np.ndarray, parent: np.ndarray, m0: int, p0: int):
        m, p = term.n_levels, term.n_columns
        self.layout = [(0, m, p)]
        self.q = m * p
        self.m, self.p, self.m0, self.p0 = m, p, m0, p0
        # Both terms scalar ((1 | a/b)): every block is 1 x 1, and each
        # operation below is a few vector operations on (m,) and (m0,) arrays.
        self._scalar = p == 1 and p0 == 1
        # A_rr is block diagonal for a single term: (m, p, p); and the p x p0
        # blocks of A_r0 at (parent level, first-term level).  Both read off
        # the matrices' stored entries (duplicates summed), no fancy indexing.
        self.A = np.zeros((m, p, p))
        rows, cols, values = _entries(Arr)
        keep = rows // p == cols // p
        self.A[rows[keep] // p, rows[keep] % p, cols[keep] % p] = values[keep]
        self.AXr = AXr
        self.parent = np.asarray(parent, dtype=np.intp)
        self.Ab = np.zeros((m0, p, p0))
        rows, cols, values = _entries(Ar0)
        level0 = cols // p0
        keep = rows // p == self.parent[level0]
        self.Ab[level0[keep], rows[keep] % p, cols[keep] % p0] = values[keep]

    def _sum_by_parent(self, per_level: np.ndarray) -> np.ndarray:
        """Sum (m0, a, b) arrays over the first-term levels of each rest level: (m, a, b)."""
        a, b = per_level.shape[1:]
        flat = per_level.reshape(self.m0, a * b)
        out = np.empty((self.m, a * b))
        for j in range(a * b):
            out[:, j] = np.bincount(self.parent, weights=flat[:, j], minlength=self.m)
        return out.reshape(self.m, a, b)

    def lam(self, lams, V: np.ndarray, transpose: bool = False) -> np.ndarray:
        return _apply_lambda(lams[0], V, self.m, self.p, transpose)

    def factor(self, lams, W0: np.ndarray, W0AX0: np.ndarray):
        """L_rr as (m, p, p) lower blocks and L_Xr (p+1, q_r)."""
        lam = lams[0]
        if self._scalar:
            return self._scalar_factor(lam[0, 0], W0.reshape(self.m0), W0AX0)
        mm = smallblocks.matmul
        G = self._sum_by_parent(mm(mm(self.Ab, W0), np.swapaxes(self.Ab, 1, 2)))
        B = smallblocks.congruence(lam, self.A - G)
        B.reshape(self.m, self.p * self.p)[:, :: self.p + 1] += 1.0
        Lrr = smallblocks.cholesky(B)
        k = W0AX0.shape[1]
        # A_rX - A_r0 W0 A_0X, block by block
        correction = self._sum_by_parent(mm(self.Ab, W0AX0.reshape(self.m0, self.p0, k)))
        C = self.AXr.T.reshape(self.m, self.p, k) - correction
        C = (lam.T @ C.transpose(1, 0, 2).reshape(self.p, -1)).reshape(self.p, self.m, k).transpose(1, 0, 2)
        LXr = smallblocks.solve_lower(Lrr, C).reshape(self.q, k).T
        return Lrr, LXr

    def _scalar_factor(self, lam: float, W0: np.ndarray, W0AX0: np.ndarray):
        """:meth:`factor` with 1 x 1 blocks: L_rr = sqrt(lam^2 (A - sum Ab^2 W0) + 1)."""
        ab = self.Ab.reshape(self.m0)
        G = np.bincount(self.parent, weights=ab * W0 * ab, minlength=self.m)
        Lrr = np.sqrt(lam * lam * (self.A.reshape(self.m) - G) + 1.0)
        if not Lrr.min(initial=np.inf) > 0.0:  # also catches NaN
            raise np.linalg.LinAlgError("a diagonal block is not positive definite")
        k = W0AX0.shape[1]
        scaled = ab[:, None] * W0AX0  # A_r0 W0 A_0X per first-term level
        C = self.AXr.T.copy()
        for j in range(k):
            C[:, j] -= np.bincount(self.parent, weights=scaled[:, j], minlength=self.m)
        LXr = (lam * C / Lrr[:, None]).T
        return Lrr.reshape(self.m, 1, 1), LXr

    def log_diagonal_sum(self, Lrr) -> float:
        return smallblocks.log_diagonal_sum(Lrr)

    def column_mean_squares(self, t: int, n: int) -> np.ndarray:
        return np.einsum("lcc->c", self.A) / n

    def solve_upper(self, Lrr, rhs: np.ndarray) -> np.ndarray:
        if self._scalar:
            return rhs / Lrr.reshape(self.m, 1)
        k = rhs.shape[1]
        out = smallblocks.solve_lower_transpose(Lrr, rhs.reshape(self.m, self.p, k))
        return out.reshape(self.q, k)

    def solve_lower(self, Lrr, rhs: np.ndarray) -> np.ndarray:
        k = rhs.shape[1]
        return smallblocks.solve_lower(Lrr, rhs.reshape(self.m, self.p, k)).reshape(self.q, k)

    def times_A(self, b: np.ndarray) -> np.ndarray:
        if self._scalar:
            return self.A.reshape(self.m) * b
        return np.einsum("lcd,ld->lc", self.A, b.reshape(self.m, self.p)).ravel()

    def inverse_blocks(self, Lrr, lams):
        if self._scalar:
            inverse = 1.0 / Lrr
            Minv = inverse * inverse  # (m, 1, 1)
            lam = lams[0][0, 0]
            ab = self.Ab.reshape(self.m0)
            T = (ab * (Minv.reshape(self.m) * (lam * lam))[self.parent] * ab).reshape(self.m0, 1, 1)
            return [Minv], T
        mm = smallblocks.matmul
        Linv = smallblocks.inv_lower(Lrr)
        Minv = mm(np.swapaxes(Linv, 1, 2), Linv)  # (m, p, p)
        lam = lams[0]
        N = smallblocks.congruence(lam.T, Minv)  # lam Minv lam'
        Np = N[self.parent]  # each first-term level's parent block
        T = mm(mm(np.swapaxes(self.Ab, 1, 2), Np), self.Ab)
        return [Minv], T

    # the cross block's products, as DenseRest's cross object offers them
    @property
    def cross(self):
        return self

    def apply(self, Y: np.ndarray) -> np.ndarray:
        """A_r0 Y for Y of shape (q0, k)."""
        k = Y.shape[1]
        if self._scalar:
            scaled = self.Ab.reshape(self.m0, 1) * Y
            out = np.empty((self.m, k))
            for j in range(k):
                out[:, j] = np.bincount(self.parent, weights=scaled[:, j], minlength=self.m)
            return out
        per_level = self.Ab @ Y.reshape(self.m0, self.p0, k)
        return self._sum_by_parent(per_level).reshape(self.q, k)

    def apply_T(self, V: np.ndarray) -> np.ndarray:
        """A_r0' V for V of shape (q_r, k)."""
        if self._scalar:
            return self.Ab.reshape(self.m0, 1) * V[self.parent]
        k = V.shape[1]
        blocks = V.reshape(self.m, self.p, k)[self.parent]
        return (np.swapaxes(self.Ab, 1, 2) @ blocks).reshape(self.m0 * self.p0, k)
