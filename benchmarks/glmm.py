"""GLMM benchmark: sklmm against lme4's glmer (Rscript) and mixedlm's glmer, side by side.

Problems: the glmer reference cases of tests/data/glmer (fitted on their
stored model-matrix columns x_*, the same X-form formula for every library)
and binary logit models with a correlated random intercept and slope,
``y ~ x + (1 + x | g)``: 100,000 rows in 5,000 groups, and with ``--large``
500,000 rows in 20,000 groups.

Each library fits in its own subprocess (killed after ``--timeout`` seconds),
first on the problem's first 200 rows (a warm-up, untimed), then on all of it:
only that fit call is timed (not start-up, imports, reading the data).  The
objective is -2 log-likelihood at the fit (lme4's ``-2 * logLik``; for
nAGQ > 1 lme4's and sklmm's scale, without the saturated constant).

Usage (from the repository root)::

    python -m benchmarks.glmm                       # reference cases and the 100k slope model
    python -m benchmarks.glmm --large               # also the 500k model
    python -m benchmarks.glmm --problems cbpp slope_100k --libraries sklmm lme4
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "data" / "glmer"
#: X-form random parts where a slope is a factor's dummy column.
X_FORM = {"contraception_slope": "(1 + x_urbanY | district)"}


def slope_problem(n: int, m: int, seed: int = 0) -> dict:
    """Binary logit, correlated random intercept and slope: sd 1 and 0.5, correlation 0.3."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, m, size=n)
    x = rng.normal(size=n)
    L = np.linalg.cholesky(np.array([[1.0, 0.15], [0.15, 0.25]]))
    b = rng.normal(size=(m, 2)) @ L.T
    eta = -0.5 + 0.8 * x + b[g, 0] + b[g, 1] * x
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    data = pd.DataFrame({"y": y, "x_x": x, "g": np.char.add("g", g.astype(str))})
    return {
        "name": f"slope_{n // 1000}k", "data": data, "response": "y", "fixed": ["x_x"], "groups": ["g"],
        "random_effects": "(1 + x_x | g)", "family": "binomial", "link": "logit", "nAGQ": 1, "weights": None, "offset": None,
    }


def reference_problem(name: str) -> dict:
    spec = json.loads((CASES / name / "spec.json").read_text())
    data = pd.read_csv(CASES / name / "data.csv", dtype={g: str for g in spec["groups"]})
    random = X_FORM.get(name, spec["random_effects"])
    return {"name": name, "data": data, "response": spec["response"], "fixed": spec["fixed"], "groups": spec["groups"],
            "random_effects": random, "family": spec["family"], "link": spec["link"], "nAGQ": int(spec["nAGQ"]),
            "weights": spec.get("weights"), "offset": spec.get("offset")}


def formula(problem: dict) -> str:
    fixed = " + ".join(problem["fixed"]) or "1"
    off = f" + offset({problem['offset']})" if problem["offset"] else ""
    return f"{problem['response']} ~ {fixed}{off} + {problem['random_effects']}"


SKLMM = r'''
import json, sys, time, warnings
import numpy as np, pandas as pd
sys.path.insert(0, {root!r})
import sklmm
from sklearn.base import clone
sklmm.clone = clone
p = json.loads(open({spec!r}).read())
d = pd.read_csv({csv!r}, dtype={{g: str for g in p["groups"]}})
X = d[p["fixed"]]; X.columns = [c[2:] for c in X.columns]
re = p["random_effects"].replace("x_", "")
kw = dict(random_effects=re, nagq=p["nAGQ"])
if p["family"] == "poisson":
    est = sklmm.MixedPoissonRegressor(link=p["link"], **kw)
elif p["weights"]:
    est = sklmm.MixedGLMRegressor(family="binomial", link=p["link"], **kw)
else:
    est = sklmm.MixedLogisticRegression(link=p["link"], **kw)
w = d[p["weights"]].to_numpy(float) if p["weights"] else None
off = d[p["offset"]].to_numpy(float) if p["offset"] else None
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    warm = d.head(min(len(d), 200))  # warm-up fit: lazy imports and BLAS inspection are not timed
    try:
        sklmm.clone(est).fit(X.head(len(warm)), warm[p["response"]], groups=warm[p["groups"]], sample_weight=None if w is None else w[:len(warm)], offset=None if off is None else off[:len(warm)])
    except ValueError:
        pass  # e.g. a factor with one level in the first rows
    t = time.perf_counter()
    est.fit(X, d[p["response"]], groups=d[p["groups"]], sample_weight=w, offset=off)
    seconds = time.perf_counter() - t
print(json.dumps({{"seconds": seconds, "objective": est.objective_}}))
'''

MIXEDLM = r'''
import json, time, warnings
import numpy as np, pandas as pd, mixedlm
p = json.loads(open({spec!r}).read())
d = pd.read_csv({csv!r}, dtype={{g: str for g in p["groups"]}})
fam = {{"binomial": mixedlm.families.Binomial, "poisson": mixedlm.families.Poisson}}[p["family"]]
links = {{"logit": mixedlm.families.LogitLink, "probit": mixedlm.families.ProbitLink, "cloglog": mixedlm.families.CloglogLink,
         "log": mixedlm.families.LogLink, "sqrt": mixedlm.families.SqrtLink}}
family = fam(link=links[p["link"]]())
w = d[p["weights"]].to_numpy(float) if p["weights"] else None
f = p["formula"].replace(" + offset(" + str(p["offset"]) + ")", "") if p["offset"] else p["formula"]
off = d[p["offset"]].to_numpy(float) if p["offset"] else None
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    warm = d.head(min(len(d), 200))
    try:
        mixedlm.glmer(f, warm, family=family, weights=None if w is None else w[:len(warm)], offset=None if off is None else off[:len(warm)], nAGQ=p["nAGQ"])
    except Exception:
        pass
    t = time.perf_counter()
    r = mixedlm.glmer(f, d, family=family, weights=w, offset=off, nAGQ=p["nAGQ"])
    seconds = time.perf_counter() - t
print(json.dumps({{"seconds": seconds, "objective": -2 * float(r.logLik().value)}}))
'''

LME4 = r'''
suppressMessages(library(lme4))
p <- jsonlite::fromJSON({spec!r})
d <- read.csv({csv!r})
for (g in p$groups) d[[g]] <- factor(as.character(d[[g]]))
fam <- get(p$family)(link = p$link)
w <- if (is.null(p$weights)) NULL else d[[p$weights]]
d$.w <- if (is.null(w)) rep(1, nrow(d)) else w
warm <- head(d, min(nrow(d), 200)); warm <- droplevels(warm)
invisible(try(suppressWarnings(glmer(as.formula(p$formula), data = warm, family = fam, weights = .w, nAGQ = p$nAGQ)), silent = TRUE))
t <- proc.time()[["elapsed"]]
fm <- glmer(as.formula(p$formula), data = d, family = fam, weights = .w, nAGQ = p$nAGQ)
s <- proc.time()[["elapsed"]] - t
cat(sprintf('{{"seconds": %.6f, "objective": %.10f}}\n', s, -2 * as.numeric(logLik(fm))))
'''


def run_library(library: str, problem: dict, folder: Path, timeout: float) -> dict:
    spec = folder / f"{problem['name']}.json"
    csv = folder / f"{problem['name']}.csv"
    if library == "sklmm":
        command = [sys.executable, "-c", SKLMM.format(root=str(ROOT), spec=str(spec), csv=str(csv))]
    elif library == "mixedlm":
        command = [sys.executable, "-c", MIXEDLM.format(spec=str(spec), csv=str(csv))]
    else:
        command = ["Rscript", "-e", LME4.format(spec=str(spec), csv=str(csv))]
    start = time.perf_counter()
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env={"OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/usr/local/bin:/bin"} | dict(__import__("os").environ))
    except subprocess.TimeoutExpired:
        return {"status": f"timeout ({timeout:.0f} s)", "seconds": np.inf, "objective": np.nan}
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr.strip().splitlines() or ["?"])[-1][:60]
        return {"status": f"failed: {tail}", "seconds": np.nan, "objective": np.nan, "wall": time.perf_counter() - start}
    result = json.loads(lines[-1])
    result["status"] = "ok"
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="*", default=None)
    parser.add_argument("--libraries", nargs="*", default=["sklmm", "lme4", "mixedlm"])
    parser.add_argument("--large", action="store_true", help="also the 500,000-row slope model")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args(argv)

    names = sorted(p.name for p in CASES.iterdir() if (p / "spec.json").exists())
    problems = [reference_problem(name) for name in names]
    problems.append(slope_problem(100_000, 5_000))
    if args.large:
        problems.append(slope_problem(500_000, 20_000))
    if args.problems:
        problems = [p for p in problems if p["name"] in args.problems]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for problem in problems:
            problem["data"].to_csv(folder / f"{problem['name']}.csv", index=False)
            spec = {k: v for k, v in problem.items() if k != "data"} | {"formula": formula(problem)}
            (folder / f"{problem['name']}.json").write_text(json.dumps(spec))
            row = {"problem": problem["name"], "n": len(problem["data"])}
            for library in args.libraries:
                result = run_library(library, problem, folder, args.timeout)
                row[f"{library}_s"] = result["seconds"]
                row[f"{library}_obj"] = result["objective"]
                row[f"{library}_status"] = result["status"]
                print(f"  {problem['name']:<22} {library:<8} {result['status']:<12} {result['seconds']:9.2f} s  objective {result['objective']:.4f}", flush=True)
            rows.append(row)
    table = pd.DataFrame(rows).set_index("problem")
    print()
    print(format_table(table, args.libraries))


def format_table(table: pd.DataFrame, libraries) -> str:
    cols = ["n"] + [f"{lib}_s" for lib in libraries]
    out = table[cols].copy()
    if "lme4" in libraries and "sklmm" in libraries:
        out["lme4/sklmm"] = table["lme4_s"] / table["sklmm_s"]
        out["obj sklmm-lme4"] = table["sklmm_obj"] - table["lme4_obj"]
    if "mixedlm" in libraries and "sklmm" in libraries:
        out["mixedlm/sklmm"] = table["mixedlm_s"] / table["sklmm_s"]
        out["obj sklmm-mixedlm"] = table["sklmm_obj"] - table["mixedlm_obj"]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        return out.to_string(float_format=lambda v: f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.2f}")


if __name__ == "__main__":
    main()
