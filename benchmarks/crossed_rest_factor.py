"""Factorising the dense-filled rest block of a users x items model: sparse or dense?

``python -m benchmarks.crossed_rest_factor [--scales 0.1 0.2 0.3]``

For ``crossed_600k_60k_30k`` shrunk by each scale (users, items and rows
alike), forms the rest block that one evaluation factorises, the item x item
matrix ``B = lambda_i^2 (A_ii - A_iu W0 A_ui) + I`` at sd(user) = 0.8,
sd(item) = 0.5 (the simulation's values), and times

* dense: LAPACK ``dpotrf`` (what sklmm's ``DenseRest`` does), and
* sparse supernodal: CHOLMOD with its fill-reducing ordering (AMD/METIS), via
  ``sksparse-minimal`` (binary wheel; ``pip install sksparse-minimal``), the
  analysis included (that package re-analyses on every factorisation).

It prints the nonzeros of B and the times, and the dense time extrapolated
to the full 30,000 items (n^3).  Writes ``results/crossed_rest_factor_latest.txt``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from .problems import crossed_600k_60k_30k

RESULTS = Path(__file__).resolve().parent / "results"


def rest_block(scale: float) -> sp.csc_matrix:
    problem = crossed_600k_60k_30k(scale)
    user = problem.data["user"].cat.codes.to_numpy()
    item = problem.data["item"].cat.codes.to_numpy()
    n, users, items = len(user), user.max() + 1, item.max() + 1
    Zu = sp.csr_matrix((np.ones(n), (np.arange(n), user)), shape=(n, users))
    Zi = sp.csr_matrix((np.ones(n), (np.arange(n), item)), shape=(n, items))
    A_iu = (Zi.T @ Zu).tocsr()
    lam_u, lam_i = 0.8, 0.5
    W0 = lam_u**2 / (lam_u**2 * np.asarray(Zu.sum(axis=0)).ravel() + 1.0)
    gram = A_iu @ sp.diags(W0) @ A_iu.T
    B = (sp.diags(np.asarray(Zi.sum(axis=0)).ravel()) - gram) * lam_i**2 + sp.eye(items)
    B = sp.csc_matrix(B)
    B.sum_duplicates()
    return B


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", type=float, default=[0.1, 0.2, 0.3])
    args = parser.parse_args(argv)
    try:
        import sksparse_minimal
    except ImportError:
        sksparse_minimal = None
    lines = [
        f"# python -m benchmarks.crossed_rest_factor  ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "# rest block of crossed_600k_60k_30k shrunk by `scale`; seconds per factorisation",
        "",
        f"{'scale':>5s} {'items':>7s} {'nnz(B)':>11s} {'density':>8s} {'dense dpotrf':>13s} {'CHOLMOD':>9s} {'CHOLMOD/dense':>14s} {'dense at 30k (n^3)':>19s}",
    ]
    print("\n".join(lines), flush=True)
    for scale in args.scales:
        B = rest_block(scale)
        q = B.shape[0]
        dense = np.asfortranarray(B.toarray())
        start = time.perf_counter()
        _, info = lapack.dpotrf(dense, lower=1, overwrite_a=1)
        t_dense = time.perf_counter() - start
        assert info == 0
        del dense
        t_sparse = float("nan")
        if sksparse_minimal is not None:
            start = time.perf_counter()
            sksparse_minimal.SparseCholesky(B)
            t_sparse = time.perf_counter() - start
        line = (f"{scale:5.2f} {q:7d} {B.nnz:11,d} {B.nnz / q / q:8.4f} {t_dense:13.2f} {t_sparse:9.2f} "
                f"{t_sparse / t_dense:13.1f}x {t_dense * (30_000 / q) ** 3:19.0f}")
        print(line, flush=True)
        lines.append(line)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "crossed_rest_factor_latest.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
