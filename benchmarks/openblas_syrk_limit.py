"""Does scipy's OpenBLAS survive a whole dsyrk of n rows?  Each size in a subprocess; a crash is a result.

``python -m benchmarks.openblas_syrk_limit [--sizes 16384 22000 23000] [--threads 1 2] [--k 600]``

The OpenBLAS that scipy's wheels bundle overruns its 32 MB packing buffer in
the threaded ``dsyrk`` (``driver/level3/level3_syrk_threaded.c``: each
thread packs ``DIVIDE_RATE * GEMM_Q * div_n`` doubles, ``div_n`` half its share
of the rows) and the process dies of a segmentation fault inside
``dgemm_otcopy``; ``dpotrf`` and ``dpftrf`` call it.  This is why
``sklmm._engine.rfp`` splits those calls into blocks of at most
``rfp.BLOCK`` rows.  Each size runs ``scipy.linalg.blas.dsyrk`` on an n x k
matrix (k above GEMM_Q, the worst case) in a fresh interpreter with the
given BLAS threads (``OPENBLAS_NUM_THREADS``); the table gives its seconds or
the signal that killed it.  Memory: n^2 doubles per run (4.2 GB at 23,000).

Output: ``benchmarks/results/openblas_syrk_limit_latest.txt``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import scipy

RESULTS = Path(__file__).resolve().parent / "results"
CHILD = """
import sys, time, numpy as np
from scipy.linalg import blas
n, k = int(sys.argv[1]), int(sys.argv[2])
a = np.asfortranarray(np.random.default_rng(0).random((n, k)))
t = time.perf_counter()
blas.dsyrk(1.0, a, lower=1)
print(time.perf_counter() - t)
"""


def run(n: int, k: int, threads: int, timeout: float) -> str:
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, str(n), str(k)], env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"no result in {timeout:g} s"
    if done.returncode < 0:
        return f"killed by {signal.Signals(-done.returncode).name}"
    if done.returncode:
        return f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}"
    return f"passes ({float(done.stdout):.1f} s)"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[16_384, 22_000, 23_000])
    parser.add_argument("--threads", nargs="+", type=int, default=[2, 1])
    parser.add_argument("--k", type=int, default=600)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    import scipy.linalg.blas  # noqa: F401  (loads scipy's own OpenBLAS, the one the runs use)
    from threadpoolctl import threadpool_info

    blas = [f"{i['filepath'].split('/')[-1]} {i['version']} ({i['architecture']})" for i in threadpool_info() if i["internal_api"] == "openblas"]
    lines = [f"# python -m benchmarks.openblas_syrk_limit --sizes {' '.join(map(str, args.sizes))} --threads {' '.join(map(str, args.threads))} --k {args.k}"
             f"  ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores)",
             f"# scipy {scipy.__version__}; OpenBLAS libraries (numpy's, scipy's): {'; '.join(blas)}",
             f"# scipy.linalg.blas.dsyrk(1.0, a, lower=1), a of n x {args.k}, in a fresh interpreter per run",
             f"{'n':>8}  {'threads':>7}  result"]
    print("\n".join(lines), flush=True)
    for n in args.sizes:
        for threads in args.threads:
            line = f"{n:>8}  {threads:>7}  {run(n, args.k, threads, args.timeout)}"
            print(line, flush=True)
            lines.append(line)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "openblas_syrk_limit_latest.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
