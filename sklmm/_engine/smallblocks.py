"""Batched kernels for stacks of small p x p blocks, one block per level.

The first random-effects term's diagonal block of L is block diagonal: one
p x p block per level (p = 1 for a random intercept, 2 for ``(1 + x | g)``,
3 with two slopes).  numpy's batched ``linalg.cholesky`` / ``solve`` /
``inv`` pay a generic dispatch (type checks, a LAPACK call per block) that
dominates small fits and, over 200,000 levels, half of a large one.  For
p <= 3 these kernels write the closed forms out as whole-array operations on
the (m,) vectors of block elements: no Python loop over levels, no LAPACK
call, a few vector operations per element of the block.  Larger blocks go
to numpy.

Every function takes and returns stacks of shape (m, p, p) (a block per
level) or right-hand sides of shape (m, p) / (m, p, k); lower-triangular
inputs are read below and on the diagonal only.

Examples
--------
>>> import numpy as np
>>> B = np.array([[[4.0, 2.0], [2.0, 5.0]]])
>>> L = cholesky(B)
>>> L[0].tolist()
[[2.0, 0.0], [1.0, 2.0]]
>>> solve_lower_transpose(L, np.array([[4.0, 2.0]])).tolist()   # L' x = b
[[1.5, 1.0]]
"""

from __future__ import annotations

import numpy as np

#: Blocks up to this size use the closed forms; larger ones numpy.linalg.
CLOSED_FORM_MAX = 3


def cholesky(B: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of each symmetric block of ``B`` (m, p, p).

    Raises
    ------
    numpy.linalg.LinAlgError
        If a block is not positive definite (or not finite).
    """
    p = B.shape[-1]
    if p > CLOSED_FORM_MAX:
        return np.linalg.cholesky(B)
    L = np.zeros_like(B)
    if p == 1:
        d = B[:, 0, 0]
        _check_pivot(d)
        np.sqrt(d, out=L[:, 0, 0])
        return L
    # column 0
    d0 = B[:, 0, 0]
    _check_pivot(d0)
    l00 = np.sqrt(d0)
    L[:, 0, 0] = l00
    r0 = 1.0 / l00
    l10 = B[:, 1, 0] * r0
    L[:, 1, 0] = l10
    d1 = B[:, 1, 1] - l10 * l10
    _check_pivot(d1)
    l11 = np.sqrt(d1)
    L[:, 1, 1] = l11
    if p == 2:
        return L
    l20 = B[:, 2, 0] * r0
    L[:, 2, 0] = l20
    l21 = (B[:, 2, 1] - l20 * l10) / l11
    L[:, 2, 1] = l21
    d2 = B[:, 2, 2] - l20 * l20 - l21 * l21
    _check_pivot(d2)
    np.sqrt(d2, out=L[:, 2, 2])
    return L


def _check_pivot(d: np.ndarray) -> None:
    if not d.min(initial=np.inf) > 0.0:  # also catches NaN
        raise np.linalg.LinAlgError("a diagonal block is not positive definite")


def inv_lower(L: np.ndarray) -> np.ndarray:
    """Inverse of each lower-triangular block of ``L`` (m, p, p); lower triangular."""
    p = L.shape[-1]
    if p > CLOSED_FORM_MAX:
        return np.linalg.inv(L)
    out = np.zeros_like(L)
    i0 = 1.0 / L[:, 0, 0]
    out[:, 0, 0] = i0
    if p == 1:
        return out
    i1 = 1.0 / L[:, 1, 1]
    out[:, 1, 1] = i1
    x10 = -L[:, 1, 0] * i0 * i1
    out[:, 1, 0] = x10
    if p == 2:
        return out
    i2 = 1.0 / L[:, 2, 2]
    out[:, 2, 2] = i2
    out[:, 2, 1] = -L[:, 2, 1] * i1 * i2
    out[:, 2, 0] = -(L[:, 2, 0] * i0 + L[:, 2, 1] * x10) * i2
    return out


def solve_lower(L: np.ndarray, R: np.ndarray) -> np.ndarray:
    """``L_l^-1 R_l`` per level; R of shape (m, p) or (m, p, k)."""
    p = L.shape[-1]
    if p > CLOSED_FORM_MAX:
        if R.ndim == 2:
            return np.linalg.solve(L, R[:, :, None])[:, :, 0]
        return np.linalg.solve(L, R)
    d = L[:, 0, 0] if R.ndim == 2 else L[:, 0, 0, None]
    out = np.empty_like(R)
    x0 = R[:, 0] / d
    out[:, 0] = x0
    if p == 1:
        return out
    col = (lambda i, j: L[:, i, j]) if R.ndim == 2 else (lambda i, j: L[:, i, j, None])
    x1 = (R[:, 1] - col(1, 0) * x0) / col(1, 1)
    out[:, 1] = x1
    if p == 2:
        return out
    out[:, 2] = (R[:, 2] - col(2, 0) * x0 - col(2, 1) * x1) / col(2, 2)
    return out


def solve_lower_transpose(L: np.ndarray, R: np.ndarray) -> np.ndarray:
    """``L_l^-T R_l`` per level (back substitution with L'); R of shape (m, p) or (m, p, k)."""
    p = L.shape[-1]
    if p > CLOSED_FORM_MAX:
        Lt = np.swapaxes(L, 1, 2)
        if R.ndim == 2:
            return np.linalg.solve(Lt, R[:, :, None])[:, :, 0]
        return np.linalg.solve(Lt, R)
    col = (lambda i, j: L[:, i, j]) if R.ndim == 2 else (lambda i, j: L[:, i, j, None])
    out = np.empty_like(R)
    if p == 1:
        out[:, 0] = R[:, 0] / col(0, 0)
        return out
    if p == 2:
        x1 = R[:, 1] / col(1, 1)
        out[:, 1] = x1
        out[:, 0] = (R[:, 0] - col(1, 0) * x1) / col(0, 0)
        return out
    x2 = R[:, 2] / col(2, 2)
    out[:, 2] = x2
    x1 = (R[:, 1] - col(2, 1) * x2) / col(1, 1)
    out[:, 1] = x1
    out[:, 0] = (R[:, 0] - col(1, 0) * x1 - col(2, 0) * x2) / col(0, 0)
    return out


def log_diagonal_sum(L: np.ndarray) -> float:
    """sum over levels and the diagonal of log L_l[i, i]."""
    if L.shape[-1] == 1:
        return float(np.log(L.ravel()).sum())
    return float(np.log(np.diagonal(L, axis1=1, axis2=2)).sum())


#: Below this many levels a batched ``matmul`` (one C loop) beats writing the
#: product out element by element (a numpy call per element of the block).
ELEMENTWISE_MIN_LEVELS = 2000


def matmul(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``A_l @ B_l`` per level for stacks (m, a, b) and (m, b, c).

    numpy's stacked ``matmul`` loops over tiny matrices slowly when there
    are many; then the product is written out per element (a b c vector
    operations on (m,) arrays).
    """
    m, a, b = A.shape
    c = B.shape[2]
    if m < ELEMENTWISE_MIN_LEVELS or max(a, b, c) > CLOSED_FORM_MAX:
        return A @ B
    out = np.empty((m, a, c))
    for i in range(a):
        for k in range(c):
            acc = A[:, i, 0] * B[:, 0, k]
            for j in range(1, b):
                acc += A[:, i, j] * B[:, j, k]
            out[:, i, k] = acc
    return out


def congruence(lam: np.ndarray, A: np.ndarray) -> np.ndarray:
    """``lam' A_l lam`` per level for one small dense ``lam`` (p, p) and A (m, p, p).

    One matrix product: with blocks flattened row by row,
    vec(lam' A lam) = vec(A) kron(lam, lam).
    """
    m, p, _ = A.shape
    kron = (lam[:, None, :, None] * lam[None, :, None, :]).reshape(p * p, p * p)
    return (A.reshape(m, p * p) @ kron).reshape(m, p, p)
