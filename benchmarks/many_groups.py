"""Many groups: a random-slope model with 200,000 groups of 10 rows (2,000,000 rows, 2x2 blocks).

``python -m benchmarks.many_groups [--sklmm-src DIR ...]``

The per-level kernels decide this fit: every evaluation factorises 200,000
2x2 blocks.  For each sklmm source tree given (default: the installed or
current one; e.g. a commit exported with ``git archive <commit> sklmm | tar
-x -C DIR``), in a fresh process: the CPU time of one objective and of one
objective-and-gradient evaluation at a fixed theta (best of 3), and the whole
``fit`` (wall and CPU seconds, evaluations, objective).  CPU seconds are
reported because on a shared machine they move less than wall seconds.
Writes ``results/many_groups_latest.txt``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

CHILD = r'''
import sys, time, warnings
warnings.simplefilter("ignore")
if sys.argv[1]:
    sys.path.insert(0, sys.argv[1])
import numpy as np, pandas as pd
from sklmm import MixedLinearRegressor
from sklmm._engine.fit import TrainingData, prepare
from sklmm._model.bars import parse_random_effects
rng = np.random.default_rng(7)
m, per = 200_000, 10
n = m * per
g = np.repeat(np.arange(m), per)
t = np.tile(np.arange(per, dtype=float), m)
x1 = rng.standard_normal(n)
b = rng.standard_normal((m, 2)) * [1.0, 0.25]
y = 1 + 0.5 * t + 0.3 * x1 + b[g, 0] + b[g, 1] * t + rng.standard_normal(n)
X = pd.DataFrame({"time": t, "x1": x1})
G = pd.DataFrame({"g": pd.Categorical.from_codes(g.astype(np.int32), categories=np.arange(m))})
data = TrainingData(X.to_numpy(), y, G, None, parse_random_effects("(1 + time | g)"), list(X.columns), True)
P = prepare(data, True).problem
theta = np.array([1.0, 0.1, 0.25])
def best(f, k=3):
    out = []
    for _ in range(k):
        s = time.process_time(); f(); out.append(time.process_time() - s)
    return min(out)
obj, grad = best(lambda: P.objective(theta)), best(lambda: P.objective_and_gradient(theta))
s, c = time.perf_counter(), time.process_time()
model = MixedLinearRegressor(random_effects="(1 + time | g)").fit(X, y, groups=G)
print(obj, grad, time.perf_counter() - s, time.process_time() - c, model.n_iter_, repr(model.objective_))
'''


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sklmm-src", nargs="+", default=[""], help="source trees to compare ('' = the importable sklmm)")
    args = parser.parse_args(argv)
    lines = [
        f"# python -m benchmarks.many_groups  ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "# y ~ 1 + time + x1 + (1 + time | g), 2,000,000 rows, 200,000 groups; one BLAS thread",
        "",
        f"{'sklmm source':40s} {'objective ms':>12s} {'obj+grad ms':>12s} {'fit wall s':>11s} {'fit CPU s':>10s} {'evals':>6s}  objective",
    ]
    print("\n".join(lines), flush=True)
    env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    import os

    for src in args.sklmm_src:
        out = subprocess.run([sys.executable, "-c", CHILD, src], capture_output=True, text=True, check=True, env={**os.environ, **env})
        obj, grad, wall, cpu, evals, objective = out.stdout.split()
        line = f"{src or '(current)':40s} {float(obj) * 1e3:12.1f} {float(grad) * 1e3:12.1f} {float(wall):11.2f} {float(cpu):10.2f} {int(evals):6d}  {objective}"
        print(line, flush=True)
        lines.append(line)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "many_groups_latest.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
