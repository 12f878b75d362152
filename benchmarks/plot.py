"""The benchmark figure for the docs, from the CSV files the runs wrote.

    python -m benchmarks.plot          # results/latest.csv + results/scaling_latest.csv
                                       #   -> docs/_static/benchmarks.png

Left: seconds per problem and library (log scale; a hatched bar at the time
limit for a library that timed out).  Right: sklmm's fit time against n at
fixed structure, next to one least-squares pass over the same data and the
cost of building the cross products.  Needs matplotlib (a benchmark and docs
dependency only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
FIGURE = HERE.parent / "docs" / "_static" / "benchmarks.png"
COLORS = {"sklmm": "#1f77b4", "lme4": "#2ca02c", "statsmodels": "#d62728", "mixedlm": "#ff7f0e"}


def plot_problems(ax, rows: pd.DataFrame) -> None:
    libraries = [lib for lib in COLORS if lib in set(rows.library)]
    problems = list(dict.fromkeys(rows.problem))
    height = 0.8 / len(libraries)
    for j, library in enumerate(libraries):
        for i, problem in enumerate(problems):
            row = rows[(rows.problem == problem) & (rows.library == library)]
            if row.empty:
                continue
            row = row.iloc[0]
            y = i + (j - (len(libraries) - 1) / 2) * height
            if row.status == "ok":
                ax.barh(y, row.seconds, height=height, color=COLORS[library], label=library if i == 0 else None)
            elif row.status == "timeout":
                ax.barh(y, row.timeout, height=height, color="white", edgecolor=COLORS[library], hatch="///")
                ax.text(row.timeout, y, " timeout", va="center", fontsize=6, color=COLORS[library])
    # one legend entry per library even if its first problem was skipped
    handles = [plt_patch(COLORS[lib]) for lib in libraries]
    ax.legend(handles, libraries, loc="upper right", fontsize=8)
    labels = []
    for problem in problems:
        n = int(rows[rows.problem == problem].n.iloc[0])
        labels.append(f"{problem}\n(n = {n:,})")
    ax.set_yticks(range(len(problems)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("fit time, seconds (log scale)")
    ax.set_title("Time to fit, per problem (REML)")
    ax.grid(axis="x", which="both", alpha=0.3)


def plt_patch(color):
    from matplotlib.patches import Patch

    return Patch(color=color)


def plot_scaling(ax, scaling: pd.DataFrame) -> None:
    n = scaling.n.to_numpy(float)
    ax.loglog(n, scaling.fit_s, "o-", color=COLORS["sklmm"], label="sklmm fit (total)")
    ax.loglog(n, scaling.lstsq_s, "s--", color="black", label="numpy.linalg.lstsq (floor)")
    if "setup_s" in scaling:
        ax.loglog(n, scaling.setup_s, "^:", color="grey", label="sklmm cross products (one pass)")
    if "evals_total_s" in scaling:
        ax.loglog(n, scaling.evals_total_s, "v:", color="#9467bd", label="sklmm evaluations x cost")
    for x, fit, ratio in zip(n, scaling.fit_s, scaling.fit_over_lstsq):
        ax.annotate(f"{ratio:.1f}x", (x, fit), textcoords="offset points", xytext=(4, 6), fontsize=7)
    ax.set_xlabel("rows n (groups of 20, 10 covariates, (1 | g))")
    ax.set_ylabel("seconds")
    ax.set_title("Scaling with n: fit time and the least-squares floor")
    ax.legend(fontsize=8)
    ax.grid(which="both", alpha=0.3)


def main(argv: list[str] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(prog="python -m benchmarks.plot", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS / "latest.csv")
    parser.add_argument("--scaling", type=Path, default=RESULTS / "scaling_latest.csv")
    parser.add_argument("--output", type=Path, default=FIGURE)
    args = parser.parse_args(argv)

    rows = pd.read_csv(args.results) if args.results.exists() else None
    scaling = pd.read_csv(args.scaling) if args.scaling.exists() else None
    panels = [p for p in (rows, scaling) if p is not None]
    if not panels:
        raise SystemExit(f"no results: run python -m benchmarks.run and python -m benchmarks.scaling first ({args.results})")
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 0.42 * max(12, rows.problem.nunique() * 1.3) if rows is not None else 5))
    axes = np.atleast_1d(axes)
    k = 0
    if rows is not None:
        plot_problems(axes[k], rows)
        k += 1
    if scaling is not None:
        plot_scaling(axes[k], scaling.dropna(subset=["fit_s"]))
    machine = rows.machine.iloc[0] if rows is not None and "machine" in rows else ""
    fig.suptitle(f"sklmm benchmarks ({machine})", fontsize=10)
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=130)
    print(f"wrote {args.output}")
    return args.output


if __name__ == "__main__":
    main(sys.argv[1:])
