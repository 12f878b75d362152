"""Cholesky factor and inverse of a matrix in rectangular full packed (RFP) storage, by blocks.

LAPACK's ``dpftrf`` and ``dpftri`` (TRANSR='N', UPLO='L', n even, k = n/2,
leading dimension n + 1) reduce to calls on the k x k pieces of the buffer:
``dpotrf``, ``dtrsm``, ``dsyrk``, ``dtrtri``, ``dtrmm`` and ``dlauum``.  This
module makes the same calls in the same order, except that every call whose
threaded OpenBLAS code packs a whole thread's share of the output into one
buffer (``dsyrk``, and ``dpotrf`` and ``dlauum``, which call it) is split
into calls of at most ``BLOCK`` (16,384) rows and columns: a symmetric rank-k update
by a ``dsyrk`` on each diagonal block and a ``dgemm`` beside it, a Cholesky
factor and a triangular product by LAPACK's own blocked algorithms
(right-looking ``dpotrf``, ``dlauum``) with ``BLOCK``-wide blocks.

Why: the OpenBLAS that scipy's wheels bundle (0.3.30 with scipy 1.17, 32 MB buffers)
overruns that buffer in its threaded ``dsyrk`` once the output passes about
22,500 rows with two threads, and the process dies of a segmentation fault
inside ``dgemm_otcopy`` (measured here, ``benchmarks/openblas_syrk_limit.py``:
``dsyrk`` of 22,000 rows passes, 23,000 crashes; ``dpotrf`` of 25,000
crashes; one thread passes; OpenBLAS issues #1413, #2562).  RFP's halves reach that size at 45,000 rest levels
(ml-latest's 53,883 items).  ``dgemm``, ``dtrsm``, ``dtrmm`` and ``dtrtri``
bound their packing by the kernel's block sizes and are called whole.

The work is the same as LAPACK's (n^3/3 for the factor, 2 n^3/3 for the
inverse); below ``BLOCK`` rows every call is LAPACK's own.  All calls go
through scipy's pointers to BLAS and LAPACK (``scipy.linalg.cython_blas`` and
``cython_lapack``) with pointers into the one buffer, so nothing is copied.
"""

from __future__ import annotations

import ctypes

import numpy as np
from scipy.linalg import cython_blas, cython_lapack

#: Largest row or column count of a dsyrk, dpotrf or dlauum call (OpenBLAS's
#: threaded dsyrk crashes past about 22,500 with two threads, the worst case: with
#: more threads each thread's share is smaller; see the module docstring).  Halves up
#: to this size (rest blocks up to 32,768 levels) are factored by LAPACK's calls whole.
BLOCK = 16_384


def _routine(module, name: str, *argtypes):
    """``name`` called directly through scipy's own pointer to it (Fortran conventions: every argument by reference)."""
    capsule = module.__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return ctypes.CFUNCTYPE(None, *argtypes)(get_pointer(capsule, get_name(capsule)))


_C, _I, _P = ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_void_p
_DPOTRF = _routine(cython_lapack, "dpotrf", _C, _I, _P, _I, _I)
_DLAUUM = _routine(cython_lapack, "dlauum", _C, _I, _P, _I, _I)
_DTRTRI = _routine(cython_lapack, "dtrtri", _C, _C, _I, _P, _I, _I)
_DSYRK = _routine(cython_blas, "dsyrk", _C, _C, _I, _I, _P, _P, _I, _P, _P, _I)
_DGEMM = _routine(cython_blas, "dgemm", _C, _C, _I, _I, _I, _P, _P, _I, _P, _I, _P, _P, _I)
_DTRSM = _routine(cython_blas, "dtrsm", _C, _C, _C, _C, _I, _I, _P, _P, _I, _P, _I)
_DTRMM = _routine(cython_blas, "dtrmm", _C, _C, _C, _C, _I, _I, _P, _P, _I, _P, _I)

_SCALARS = {value: np.array([value]) for value in (1.0, -1.0)}


def _i(value: int):
    return ctypes.byref(ctypes.c_int(int(value)))


def _s(value: float) -> int:
    return _SCALARS[value].ctypes.data


class _Matrix:
    """A column-major matrix inside a flat float64 buffer: base address and leading dimension."""

    def __init__(self, address: int, ld: int):
        self.address, self.ld = address, ld

    def at(self, i: int, j: int) -> int:
        """Address of element (i, j)."""
        return self.address + 8 * (int(i) + int(j) * self.ld)


def syrk(uplo: str, trans: str, n: int, k: int, alpha: float, a: _Matrix, beta: float, c: _Matrix, block: int) -> None:
    """C = alpha A A' + beta C (trans 'N', A n x k) or alpha A'A + beta C ('T', A k x n), triangle ``uplo`` of C.

    Past ``block`` rows: dsyrk on each diagonal block of C, dgemm on the
    rectangle of the triangle beside it.
    """
    u, t = uplo.encode(), trans.encode()
    if n <= block:
        _DSYRK(u, t, _i(n), _i(k), _s(alpha), a.at(0, 0), _i(a.ld), _s(beta), c.at(0, 0), _i(c.ld))
        return
    for s in range(0, n, block):
        b = min(block, n - s)
        rows_a = (s, 0) if trans == "N" else (0, s)  # A's rows (or columns) of this block
        _DSYRK(u, t, _i(b), _i(k), _s(alpha), a.at(*rows_a), _i(a.ld), _s(beta), c.at(s, s), _i(c.ld))
        if uplo == "L" and s + b < n:  # C[s+b:, s:s+b]
            m = n - s - b
            if trans == "N":
                _DGEMM(b"N", b"T", _i(m), _i(b), _i(k), _s(alpha), a.at(s + b, 0), _i(a.ld), a.at(s, 0), _i(a.ld), _s(beta), c.at(s + b, s), _i(c.ld))
            else:
                _DGEMM(b"T", b"N", _i(m), _i(b), _i(k), _s(alpha), a.at(0, s + b), _i(a.ld), a.at(0, s), _i(a.ld), _s(beta), c.at(s + b, s), _i(c.ld))
        elif uplo == "U" and s > 0:  # C[:s, s:s+b]
            if trans == "N":
                _DGEMM(b"N", b"T", _i(s), _i(b), _i(k), _s(alpha), a.at(0, 0), _i(a.ld), a.at(s, 0), _i(a.ld), _s(beta), c.at(0, s), _i(c.ld))
            else:
                _DGEMM(b"T", b"N", _i(s), _i(b), _i(k), _s(alpha), a.at(0, 0), _i(a.ld), a.at(0, s), _i(a.ld), _s(beta), c.at(0, s), _i(c.ld))


def potrf(uplo: str, n: int, a: _Matrix, block: int) -> int:
    """Cholesky factor in place of the ``uplo`` triangle (L L' for 'L', U'U for 'U'); LAPACK's info.

    Past ``block`` rows: right-looking by ``block``-wide panels (dpotrf of the
    diagonal block, dtrsm of the panel, :func:`syrk` of the trailing matrix).
    """
    info = ctypes.c_int(0)
    u = uplo.encode()
    if n <= block:
        _DPOTRF(u, _i(n), a.at(0, 0), _i(a.ld), ctypes.byref(info))
        return info.value
    for j in range(0, n, block):
        b = min(block, n - j)
        _DPOTRF(u, _i(b), a.at(j, j), _i(a.ld), ctypes.byref(info))
        if info.value != 0:
            return info.value + j
        m = n - j - b
        if m == 0:
            break
        if uplo == "L":  # A[j+b:, j:j+b] = A[j+b:, j:j+b] L_jj^-T, then the trailing lower triangle
            _DTRSM(b"R", b"L", b"T", b"N", _i(m), _i(b), _s(1.0), a.at(j, j), _i(a.ld), a.at(j + b, j), _i(a.ld))
            syrk("L", "N", m, b, -1.0, _Matrix(a.at(j + b, j), a.ld), 1.0, _Matrix(a.at(j + b, j + b), a.ld), block)
        else:  # A[j:j+b, j+b:] = U_jj^-T A[j:j+b, j+b:], then the trailing upper triangle
            _DTRSM(b"L", b"U", b"T", b"N", _i(b), _i(m), _s(1.0), a.at(j, j), _i(a.ld), a.at(j, j + b), _i(a.ld))
            syrk("U", "T", m, b, -1.0, _Matrix(a.at(j, j + b), a.ld), 1.0, _Matrix(a.at(j + b, j + b), a.ld), block)
    return 0


def lauum(uplo: str, n: int, a: _Matrix, block: int) -> None:
    """L'L ('L') or U U' ('U') in place of the triangular factor; past ``block`` rows LAPACK's dlauum algorithm by blocks."""
    info = ctypes.c_int(0)
    u = uplo.encode()
    if n <= block:
        _DLAUUM(u, _i(n), a.at(0, 0), _i(a.ld), ctypes.byref(info))
        return
    for i in range(0, n, block):
        b = min(block, n - i)
        rest = n - i - b
        if uplo == "L":
            _DTRMM(b"L", b"L", b"T", b"N", _i(b), _i(i), _s(1.0), a.at(i, i), _i(a.ld), a.at(i, 0), _i(a.ld))
            _DLAUUM(u, _i(b), a.at(i, i), _i(a.ld), ctypes.byref(info))
            if rest:
                _DGEMM(b"T", b"N", _i(b), _i(i), _i(rest), _s(1.0), a.at(i + b, i), _i(a.ld), a.at(i + b, 0), _i(a.ld), _s(1.0), a.at(i, 0), _i(a.ld))
                _DSYRK(b"L", b"T", _i(b), _i(rest), _s(1.0), a.at(i + b, i), _i(a.ld), _s(1.0), a.at(i, i), _i(a.ld))
        else:
            _DTRMM(b"R", b"U", b"T", b"N", _i(i), _i(b), _s(1.0), a.at(i, i), _i(a.ld), a.at(0, i), _i(a.ld))
            _DLAUUM(u, _i(b), a.at(i, i), _i(a.ld), ctypes.byref(info))
            if rest:
                _DGEMM(b"N", b"T", _i(i), _i(b), _i(rest), _s(1.0), a.at(0, i + b), _i(a.ld), a.at(i, i + b), _i(a.ld), _s(1.0), a.at(0, i), _i(a.ld))
                _DSYRK(b"U", b"N", _i(b), _i(rest), _s(1.0), a.at(i, i + b), _i(a.ld), _s(1.0), a.at(i, i), _i(a.ld))


def buffer_address(buffer: np.ndarray) -> int:
    """The address of an RFP buffer's first number, after checking that LAPACK may write it in place."""
    if not (buffer.dtype == np.float64 and buffer.flags.c_contiguous and buffer.flags.writeable):
        raise ValueError("an RFP buffer must be a writeable contiguous float64 array")
    return buffer.ctypes.data


def _pieces(buffer: np.ndarray, n: int) -> tuple[int, _Matrix, _Matrix, _Matrix]:
    if n % 2 or buffer.size != (n + 1) * (n // 2):
        raise ValueError(f"an RFP buffer of order {n} (even) holds {(n + 1) * (n // 2)} numbers, not {buffer.size}")
    k, ld, base = n // 2, n + 1, buffer_address(buffer)
    # the leading k x k block (lower), the trailing one (held as its upper triangle), the rectangle below
    return k, _Matrix(base + 8, ld), _Matrix(base, ld), _Matrix(base + 8 * (k + 1), ld)


def cholesky(buffer: np.ndarray, n: int, block: int = BLOCK) -> int:
    """Lower Cholesky factor in place of the RFP buffer (LAPACK's dpftrf, TRANSR='N', UPLO='L'); its info.

    Examples
    --------
    A 4 x 4 matrix in RFP storage (LAPACK's dtrttf), factored and inverted
    in blocks of one row (every call split), against the dense inverse:

    >>> import numpy as np
    >>> from scipy.linalg import lapack
    >>> from sklmm._engine import rfp
    >>> M = np.array([[4.0, 2, 0, 0], [2, 5, 1, 0], [0, 1, 3, 1], [0, 0, 1, 2]])
    >>> buffer = np.asarray(lapack.dtrttf(np.asfortranarray(M), transr="N", uplo="L")[0]).ravel(order="F")
    >>> rfp.cholesky(buffer, 4, block=1), rfp.inverse(buffer, 4, block=1)
    (0, 0)
    >>> inverse = lapack.dtfttr(4, buffer, transr="N", uplo="L")[0]
    >>> bool(np.allclose(np.tril(inverse), np.tril(np.linalg.inv(M))))
    True
    """
    k, a11, a22, a21 = _pieces(buffer, n)
    info = potrf("L", k, a11, block)
    if info:
        return info
    _DTRSM(b"R", b"L", b"T", b"N", _i(k), _i(k), _s(1.0), a11.at(0, 0), _i(a11.ld), a21.at(0, 0), _i(a21.ld))
    syrk("U", "N", k, k, -1.0, a21, 1.0, a22, block)
    info = potrf("U", k, a22, block)
    return info + k if info else 0


def inverse(buffer: np.ndarray, n: int, block: int = BLOCK) -> int:
    """The inverse (its lower triangle, RFP) in place of the Cholesky factor (LAPACK's dpftri); its info."""
    k, a11, a22, a21 = _pieces(buffer, n)
    info = ctypes.c_int(0)
    # dtftri: the triangular factor's inverse
    _DTRTRI(b"L", b"N", _i(k), a11.at(0, 0), _i(a11.ld), ctypes.byref(info))
    if info.value:
        return info.value
    _DTRMM(b"R", b"L", b"N", b"N", _i(k), _i(k), _s(-1.0), a11.at(0, 0), _i(a11.ld), a21.at(0, 0), _i(a21.ld))
    _DTRTRI(b"U", b"N", _i(k), a22.at(0, 0), _i(a22.ld), ctypes.byref(info))
    if info.value:
        return info.value + k
    _DTRMM(b"L", b"U", b"T", b"N", _i(k), _i(k), _s(1.0), a22.at(0, 0), _i(a22.ld), a21.at(0, 0), _i(a21.ld))
    # dpftri: inv(L)' inv(L)
    lauum("L", k, a11, block)
    syrk("L", "T", k, k, 1.0, a21, 1.0, a11, block)
    _DTRMM(b"L", b"U", b"N", b"N", _i(k), _i(k), _s(1.0), a22.at(0, 0), _i(a22.ld), a21.at(0, 0), _i(a21.ld))
    lauum("U", k, a22, block)
    return 0
