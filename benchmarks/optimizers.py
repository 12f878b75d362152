"""Which optimiser for theta?  Evaluations, time and optimum on the reference cases.

sklmm's own (L-BFGS-B with the analytic gradient, sklmm._engine.optimize) against
scipy's derivative-free COBYQA, Powell and Nelder-Mead and L-BFGS-B with
finite-difference gradients.  Each L-BFGS-B evaluation includes the gradient.

For every lme4 reference case (tests/data/lme4), REML and ML, minimise sklmm's
profiled objective from lme4's starting value with each candidate and print
the number of objective evaluations, the wall time and the objective minus
lme4's (negative: better than lme4), next to lme4's own evaluation count
(BOBYQA through nloptwrap, ``feval`` in reference.json).

Run:  python benchmarks/optimizers.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import Bounds, minimize

from sklmm._engine.fit import TrainingData, optimize, prepare
from sklmm._model.bars import parse_random_effects
from sklmm._engine.optimize import FINAL_RADIUS

DATA = Path(__file__).parents[1] / "tests" / "data" / "lme4"


def problems():
    for folder in sorted(p for p in DATA.iterdir() if (p / "spec.json").exists()):
        spec = json.loads((folder / "spec.json").read_text())
        ref = json.loads((folder / "reference.json").read_text())
        frame = pd.read_csv(folder / "data.csv", dtype={g: str for g in spec["groups"]})
        X = frame[spec["fixed"]].to_numpy(float)
        y = frame[spec["response"]].to_numpy(float)
        w = frame[spec["weights"]].to_numpy(float) if isinstance(spec["weights"], str) else None
        data = TrainingData(X, y, frame[spec["groups"]], w, parse_random_effects(spec["random_effects"]), spec["fixed"], True)
        for method in ("reml", "ml"):
            yield folder.name, method, prepare(data, method == "reml").problem, ref[method]


def run(name, problem):
    lower = problem.lower_bounds()
    theta0 = problem.initial_theta()
    upper = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    count = [0]

    def f(theta):
        count[0] += 1
        return problem.objective(theta)

    start = time.perf_counter()
    if name == "sklmm (L-BFGS-B, analytic gradient)":
        result = optimize(problem, 10_000)  # the path fit takes
        return result.n_evaluations, time.perf_counter() - start, result.objective
    if name == "COBYQA":
        result = minimize(f, theta0, method="COBYQA", bounds=Bounds(lower, np.inf), options={"final_tr_radius": FINAL_RADIUS})
    elif name == "L-BFGS-B (FD)":
        result = minimize(f, theta0, method="L-BFGS-B", bounds=upper, options={"ftol": 1e-12, "gtol": 1e-8})
    elif name == "Powell":
        result = minimize(f, theta0, method="Powell", bounds=upper, options={"xtol": 1e-8, "ftol": 1e-12})
    elif name == "Nelder-Mead":
        result = minimize(f, theta0, method="Nelder-Mead", bounds=upper, options={"xatol": 1e-8, "fatol": 1e-10, "maxfev": 20000})
    return count[0], time.perf_counter() - start, result.fun


def main():
    methods = ["sklmm (L-BFGS-B, analytic gradient)", "COBYQA", "L-BFGS-B (FD)", "Powell", "Nelder-Mead"]
    rows = []
    for case, method, problem, ref in problems():
        row = {"case": f"{case}/{method}", "lme4 feval": ref["feval"]}
        for name in methods:
            evals, seconds, value = run(name, problem)
            row[f"{name} evals"] = evals
            row[f"{name} ms"] = round(1000 * seconds, 1)
            row[f"{name} vs lme4"] = f"{value - ref['objective']:+.1e}"
        rows.append(row)
    table = pd.DataFrame(rows).set_index("case")
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table)
        print("\nTotals:")
        print(f"  lme4 feval: {table['lme4 feval'].sum()}")
        for name in methods:
            worst = max(float(v) for v in table[f"{name} vs lme4"])
            print(f"  {name:36s} evals {table[f'{name} evals'].sum():5d}  time {table[f'{name} ms'].sum():8.1f} ms  worst objective vs lme4 {worst:+.1e}")


if __name__ == "__main__":
    main()
