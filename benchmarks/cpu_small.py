"""Small fits, sklmm against mixedlm in one process, by CPU time.

``python -m benchmarks.cpu_small [--problems sleepstudy,penicillin,...] [--repeat 25]``

On a shared machine the wall-clock harness (``benchmarks.run``) measures the
load as much as the libraries: a library with threads (mixedlm's Rust pool,
BLAS) waits for the cores others hold.  Here both libraries run single-
threaded (``OPENBLAS_NUM_THREADS=1``, ``RAYON_NUM_THREADS=1`` are set before
they load), fits alternate between them in one process, and the best CPU
time (``time.process_time``) of each is kept: the calls sklmm's adapter and
mixedlm's adapter time (``MixedLinearRegressor(...).fit`` with the X and
groups frames; ``mixedlm.lmer(formula, data)``).  Writes
``results/cpu_small_latest.txt``.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

from .problems import REFERENCE_CASES, reference_case  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default=",".join(REFERENCE_CASES))
    parser.add_argument("--repeat", type=int, default=25)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    import mixedlm

    from sklmm import MixedLinearRegressor

    lines = [
        f"# python -m benchmarks.cpu_small  ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        f"# best CPU milliseconds of {args.repeat} alternating fits, one thread each; x mixedlm > 1: sklmm faster",
        "",
        f"{'problem':22s} {'sklmm ms':>9s} {'mixedlm ms':>11s} {'x mixedlm':>10s}",
    ]
    print("\n".join(lines), flush=True)
    for name in args.problems.split(","):
        problem = reference_case(name)
        data = problem.data
        X, y, groups = data[problem.fixed], data[problem.response].to_numpy(), data[problem.groups]
        weights = None if problem.weights is None else data[problem.weights].to_numpy()

        def sklmm_fit():
            MixedLinearRegressor(random_effects=problem.random_effects, reml=problem.reml).fit(X, y, groups=groups, sample_weight=weights)

        def mixedlm_fit():
            mixedlm.lmer(problem.lme4_formula, data, REML=problem.reml, weights=weights)

        sklmm_fit(), mixedlm_fit()
        a, b = [], []
        for _ in range(args.repeat):
            start = time.process_time()
            sklmm_fit()
            a.append(time.process_time() - start)
            start = time.process_time()
            mixedlm_fit()
            b.append(time.process_time() - start)
        line = f"{name:22s} {min(a) * 1e3:9.2f} {min(b) * 1e3:11.2f} {min(b) / min(a):9.2f}x"
        print(line, flush=True)
        lines.append(line)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cpu_small_latest.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
