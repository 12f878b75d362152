"""Parametric bootstrap: sklmm's ``bootstrap`` against lme4's ``bootMer``, in one run.

``python -m benchmarks.bootstrap [--n-boot 1000] [--problems sleepstudy penicillin]``

Each library refits the model to ``n_boot`` responses simulated from the
fitted model (REML, lme4's reference cases).  Timed: sklmm's
``bootstrap(model, n_boot)`` (one worker; the design's cross products are
formed once and only their y row changes per replicate) and, inside R,
``bootMer(fit, FUN, nsim = n_boot)`` with ``FUN`` returning theta, sigma and
the fixed effects (``proc.time()`` around ``bootMer`` alone: not R's start-up,
not the first fit).  Also sklmm's unbatched path (one ``refit`` from scratch
per replicate, the code before the batched refits) on a tenth of the
replicates, scaled up.  Prints a table and writes it to
``benchmarks/results/bootstrap_latest.txt``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from .problems import reference_case

RESULTS = Path(__file__).resolve().parent / "results"

R_SCRIPT = r"""
args <- commandArgs(trailingOnly = TRUE)
suppressMessages(library(lme4))
d <- read.csv(args[1])
for (g in strsplit(args[4], ",")[[1]]) d[[g]] <- factor(d[[g]])
fit <- lmer(as.formula(args[2]), d, REML = TRUE)
FUN <- function(x) c(getME(x, "theta"), sigma(x), fixef(x))
invisible(bootMer(fit, FUN, nsim = 5, seed = 2))   # warm-up
t0 <- proc.time()
b <- suppressMessages(suppressWarnings(bootMer(fit, FUN, nsim = as.integer(args[3]), seed = 1)))
t1 <- proc.time() - t0
cat(sprintf('{"seconds": %.6f, "cpu": %.6f, "n": %d}\n', t1[["elapsed"]], t1[["user.self"]] + t1[["sys.self"]], nrow(b$t)))
"""


def time_sklmm(problem, n_boot: int) -> tuple[float, float, float]:
    from sklmm import MixedLinearRegressor, bootstrap
    from sklmm._inference import bootstrap as module
    from sklmm._inference.simulate import simulation_model

    data = problem.data
    model = MixedLinearRegressor(random_effects=problem.random_effects, reml=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(data[problem.fixed], data[problem.response].to_numpy(), groups=data[problem.groups])
        bootstrap(model, n_boot=5, random_state=2)  # warm-up
        start, cpu = time.perf_counter(), time.process_time()
        result = bootstrap(model, n_boot=n_boot, random_state=1)
        batched, batched_cpu = time.perf_counter() - start, time.process_time() - cpu
        assert result.n_failed == 0
        # the unbatched path: a full refit (prepare + optimise) per replicate
        train = model._training_data
        sim = simulation_model(train, model.coef_, model.intercept_, model._fitted_terms, model.sigma_)
        k = max(1, n_boot // 10)
        start = time.perf_counter()
        for seed in range(k):
            y = sim.draw(np.random.default_rng(seed))
            module.refit(replace(train, y=y), True, model.theta_, model.max_iter)
        unbatched = (time.perf_counter() - start) * n_boot / k
    return batched, batched_cpu, unbatched


def time_bootmer(problem, n_boot: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="sklmm-boot-") as scratch:
        csv = Path(scratch) / "data.csv"
        columns = [problem.response, *problem.fixed, *problem.groups]
        problem.data[columns].to_csv(csv, index=False)
        script = Path(scratch) / "boot.R"
        script.write_text(R_SCRIPT)
        out = subprocess.run(
            ["Rscript", str(script), str(csv), problem.lme4_formula, str(n_boot), ",".join(problem.groups)],
            capture_output=True, text=True, check=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        return float(result["seconds"]), float(result["cpu"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--problems", nargs="+", default=["sleepstudy", "penicillin"])
    args = parser.parse_args(argv)
    lines = [
        f"# python -m benchmarks.bootstrap --n-boot {args.n_boot}  ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "# seconds for n_boot replicates, one process each (wall and CPU); ratios from this run",
        "",
        f"{'problem':14s} {'n_boot':>6s} {'sklmm':>9s} {'CPU':>8s} {'unbatched':>10s} {'bootMer':>9s} {'CPU':>8s} {'x bootMer':>10s} {'x CPU':>7s} {'x unbatched':>12s}",
    ]
    print("\n".join(lines), flush=True)
    for name in args.problems:
        problem = reference_case(name)
        batched, batched_cpu, unbatched = time_sklmm(problem, args.n_boot)
        lme4, lme4_cpu = time_bootmer(problem, args.n_boot)
        line = (f"{name:14s} {args.n_boot:6d} {batched:9.3f} {batched_cpu:8.3f} {unbatched:10.3f} {lme4:9.3f} {lme4_cpu:8.3f} "
                f"{lme4 / batched:9.1f}x {lme4_cpu / batched_cpu:6.1f}x {unbatched / batched:11.1f}x")
        print(line, flush=True)
        lines.append(line)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bootstrap_latest.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
