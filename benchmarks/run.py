"""Fit every problem with every library, print a table and write CSV.

    python -m benchmarks.run                       # everything, 600 s limit per fit
    python -m benchmarks.run --quick               # shrunk problems, a smoke test
    python -m benchmarks.run --problems sleepstudy crossed_500k --libraries sklmm lme4
    python -m benchmarks.run --problems large --repeat 3 --timeout 300

``--problems`` takes names from :data:`benchmarks.problems.PROBLEMS`, or
``reference`` (the lme4 reference cases) and ``large`` (InstEval and the
simulated problems).  Each library fits in its own subprocess, one at a
time, so the numbers in a row come from the same run; before each, the
runner waits (``--wait-idle``) for other processes to leave the CPU idle and
records how busy it was (``cpu_busy``).  Each time is the best of
``--repeat`` fits (fewer once they have taken ``--budget`` seconds).  Speed-up = peer's seconds / sklmm's seconds (above 1: sklmm is
faster); for a peer that timed out it is a lower bound, shown as ``>x``.

Output: the table on stdout, ``benchmarks/results/run-<time>.csv``, and the
rows merged into ``benchmarks/results/latest.csv`` (the problems measured
replace their old rows whole, so a problem's ratios always come from one run).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from .adapters import DEFAULT_BUDGET, DEFAULT_REPEAT, DEFAULT_TIMEOUT, LIBRARIES, Result, run
from .problems import BY_NAME_ONLY, CACHE, PROBLEMS, QUICK_SCALE, REFERENCE_CASES, ROOT, get_problem

RESULTS = Path(__file__).resolve().parent / "results"
LARGE = ["insteval", "random_slope_400k", "crossed_500k", "random_intercept_2m"]
#: An objective within this of lme4's counts as the same optimum.
SAME_OPTIMUM = 1e-4
#: The targets: minimum speed-up over each peer, and on which problems.
TARGETS = {
    "lme4": (1.0, None),
    "lme4 (random slope, crossed)": (5.0, ["random_slope_400k", "crossed_500k", "insteval"]),
    "statsmodels": (20.0, None),
    "mixedlm": (1.0, None),
}


def machine() -> str:
    """CPU model, cores and memory, for the CSV and the README."""
    model = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB"


def sklmm_revision() -> str:
    """The git commit of the sklmm tree being measured, ``+dirty`` if sklmm/ has local changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "sklmm"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except OSError:
        return ""


def cpu_busy(interval: float = 1.0) -> float:
    """Fraction of all cores busy over ``interval`` seconds (from /proc/stat); NaN if unknown."""
    def sample():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values), idle
    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except OSError:
        return math.nan
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def wait_until_idle(limit: float, threshold: float = 0.2) -> float:
    """Wait (up to ``limit`` seconds) until other processes use under ``threshold`` of the CPU.

    Returns the last busy fraction measured, which goes into the CSV
    (``cpu_busy``): a fit timed while something else ran is slower than it
    should be.
    """
    deadline = time.monotonic() + limit
    busy = cpu_busy()
    while busy > threshold and time.monotonic() < deadline:
        busy = cpu_busy(2.0)
    return busy


def expand(names: list[str]) -> list[str]:
    out = []
    for name in names:
        for part in name.split(","):
            if part == "reference":
                out += REFERENCE_CASES
            elif part == "large":
                out += LARGE
            elif part == "all":
                out += [p for p in PROBLEMS if p not in BY_NAME_ONLY]
            elif part:
                if part not in PROBLEMS:
                    raise SystemExit(f"unknown problem {part!r}; known: reference, large, all, {', '.join(PROBLEMS)}")
                out.append(part)
    return list(dict.fromkeys(out))


# -- the table ------------------------------------------------------------------------


def add_comparisons(rows: pd.DataFrame, timeout: float) -> pd.DataFrame:
    """Objective minus lme4's, and sklmm's speed-up over each peer, within each problem."""
    rows = rows.copy()
    rows["objective_minus_lme4"] = math.nan
    rows["sklmm_speedup"] = math.nan
    rows["speedup_is_lower_bound"] = False
    for problem, block in rows.groupby("problem", sort=False):
        lme4 = block[(block.library == "lme4") & (block.status == "ok")]
        sk = block[(block.library == "sklmm") & (block.status == "ok")]
        if len(lme4):
            rows.loc[block.index, "objective_minus_lme4"] = block.objective - lme4.objective.iloc[0]
        if len(sk):
            base = sk.seconds.iloc[0]
            for i, row in block.iterrows():
                if row.library == "sklmm":
                    continue
                if row.status == "ok":
                    rows.loc[i, "sklmm_speedup"] = row.seconds / base
                elif row.status == "timeout":
                    rows.loc[i, "sklmm_speedup"] = timeout / base
                    rows.loc[i, "speedup_is_lower_bound"] = True
    return rows


def _fmt(value, spec: str, missing: str = "") -> str:
    return missing if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _speedup(row) -> str:
    if math.isnan(row.sklmm_speedup):
        return ""
    return (">" if row.speedup_is_lower_bound else "") + f"{row.sklmm_speedup:.1f}x"


def _seconds(row) -> str:
    if row.status == "ok":
        return f"{row.seconds:.3f}"
    return row.status


def long_table(rows: pd.DataFrame) -> str:
    """One line per problem and library."""
    header = f"{'problem':<22} {'n':>9} {'library':<12} {'seconds':>9} {'objective':>16} {'obj - lme4':>11} {'evals':>6} {'sklmm x':>8}  note"
    lines = [header, "-" * len(header)]
    for problem, block in rows.groupby("problem", sort=False):
        for _, row in block.iterrows():
            note = row.message if row.status != "ok" or row.library == "statsmodels" else ("" if row.converged in (True, None) or pd.isna(row.converged) else f"not converged: {row.message}")
            lines.append(
                f"{problem:<22} {row.n:>9,} {row.library:<12} {_seconds(row):>9} {_fmt(row.objective, '.6f'):>16} "
                f"{_fmt(row.objective_minus_lme4, '+.2e'):>11} {_fmt(row.n_evaluations, '.0f'):>6} {_speedup(row):>8}  {str(note)[:70]}"
            )
        lines.append("")
    return "\n".join(lines)


def summary_table(rows: pd.DataFrame) -> str:
    """One line per problem: seconds per library, sklmm's speed-ups, objectives against lme4's."""
    libs = [lib for lib in LIBRARIES if lib in set(rows.library)]
    header = f"{'problem':<22} {'n':>9}" + "".join(f" {lib:>11}" for lib in libs) + "".join(
        f" {'x ' + lib:>14}" for lib in libs if lib != "sklmm") + "".join(f" {'dobj ' + lib:>17}" for lib in libs if lib != "lme4")
    lines = [header, "-" * len(header)]
    for problem, block in rows.groupby("problem", sort=False):
        by = {row.library: row for _, row in block.iterrows()}
        line = f"{problem:<22} {block.n.iloc[0]:>9,}"
        line += "".join(f" {(_seconds(by[lib]) if lib in by else ''):>11}" for lib in libs)
        line += "".join(f" {(_speedup(by[lib]) if lib in by else ''):>14}" for lib in libs if lib != "sklmm")
        line += "".join(f" {(_fmt(by[lib].objective_minus_lme4, '+.2e') if lib in by else ''):>17}" for lib in libs if lib != "lme4")
        lines.append(line)
    return "\n".join(lines)


def target_report(rows: pd.DataFrame) -> str:
    """Which of the project's targets this run meets, problem by problem."""
    lines = []
    for label, (minimum, only) in TARGETS.items():
        peer = label.split()[0]
        block = rows[(rows.library == peer) & rows.sklmm_speedup.notna()]
        if only is not None:
            block = block[block.problem.isin(only)]
        if block.empty:
            continue
        missed = block[block.sklmm_speedup < minimum]
        verdict = "met" if missed.empty else f"MISSED on {len(missed)} of {len(block)}: " + ", ".join(
            f"{r.problem} ({_speedup(r)})" for _, r in missed.iterrows())
        lines.append(f"sklmm >= {minimum:g}x faster than {label}: {verdict}")
    sk = rows[(rows.library == "sklmm") & rows.objective_minus_lme4.notna()]
    worse = sk[sk.objective_minus_lme4 > SAME_OPTIMUM]
    if len(sk):
        lines.append(f"sklmm objective <= lme4's + {SAME_OPTIMUM:g}: " + ("met" if worse.empty else "MISSED on " + ", ".join(
            f"{r.problem} ({r.objective_minus_lme4:+.2e})" for _, r in worse.iterrows())))
    failed = rows[(rows.library == "sklmm") & (rows.status != "ok")]
    if len(failed):
        lines.append("sklmm failed on: " + ", ".join(f"{r.problem} ({r.status}: {r.message[:80]})" for _, r in failed.iterrows()))
    mix = rows[(rows.library == "mixedlm") & rows.objective_minus_lme4.notna()]
    if len(mix) and len(sk):
        both = sk.set_index("problem").objective.sub(mix.set_index("problem").objective, fill_value=math.nan).dropna()
        lines.append(f"sklmm objective minus mixedlm's: min {both.min():+.2e}, max {both.max():+.2e} over {len(both)} problems")
    return "\n".join(lines)


# -- the run --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=["all"], help="names, or reference / large / all")
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument("--quick", action="store_true", help=f"simulated problems shrunk to {QUICK_SCALE:g} of their size; writes no latest.csv")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="fits per library and problem; the best time is kept")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET,
                        help="stop repeating once a library's fits of a problem have taken this many seconds")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds before a library's subprocess is killed")
    parser.add_argument("--output", type=Path, default=RESULTS, help="folder for the CSV files")
    parser.add_argument("--wait-idle", type=float, default=120.0,
                        help="before each fit, wait up to this many seconds for other processes to leave the CPU idle")
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="limit every library's BLAS/OpenMP threads (default: each library's own default)")
    parser.add_argument("--sklmm-src", type=Path, default=None,
                        help="measure the sklmm package in this folder (e.g. an exported commit) instead of the installed one")
    args = parser.parse_args(argv)

    names = expand(args.problems)
    libraries = [lib for lib in LIBRARIES if lib in args.libraries]
    started = time.strftime("%Y%m%d-%H%M%S")
    revision = f"from {args.sklmm_src}" if args.sklmm_src else f"revision {sklmm_revision()}"
    print(f"machine: {machine()}; python {platform.python_version()}; sklmm {revision}", flush=True)
    print(f"problems: {', '.join(names)}; libraries: {', '.join(libraries)}; best of {args.repeat} fits "
          f"(fewer past {args.budget:g} s); timeout {args.timeout:g} s\n", flush=True)

    results: list[Result] = []
    details: dict[str, str] = {}
    CACHE.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE))
    try:
        for name in names:
            t0 = time.perf_counter()
            problem = get_problem(name, quick=args.quick)
            folder = problem.save(scratch / problem.name)
            levels = " x ".join(f"{g} {k:,}" for g, k in problem.n_levels().items())
            details[problem.name] = f"{problem.random_effects}; {levels}"
            print(f"{problem.name}: {problem.n:,} rows, {levels}, {problem.random_effects} (data {time.perf_counter() - t0:.1f} s; {problem.source})", flush=True)
            for library in libraries:
                busy = wait_until_idle(args.wait_idle)
                result = run(library, problem, folder, timeout=args.timeout, repeat=args.repeat, budget=args.budget, sklmm_src=args.sklmm_src, blas_threads=args.blas_threads)
                result.cpu_busy = busy
                results.append(result)
                print(f"    {library:<12} {result.status:<8} {_fmt(result.seconds, '.3f'):>9} s  objective {_fmt(result.objective, '.6f')}"
                      f"  evals {_fmt(result.n_evaluations, '.0f')}  peak {_fmt(result.peak_mb, '.0f')} MB  cpu busy before {_fmt(result.cpu_busy, '.0%')}  {result.message[:90]}", flush=True)
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    rows = pd.DataFrame([asdict(r) for r in results])
    rows["seconds_all"] = rows.seconds_all.map(lambda s: ";".join(f"{x:.4f}" for x in s))
    rows = add_comparisons(rows, args.timeout)
    rows.insert(0, "run", started)
    rows.insert(3, "model", rows.problem.map(details))
    rows["sklmm_revision"] = f"src {args.sklmm_src}" if args.sklmm_src else sklmm_revision()
    rows["machine"] = machine()
    rows["timeout"] = args.timeout
    rows["blas_threads"] = args.blas_threads if args.blas_threads else "default"
    rows["repeat"] = rows.seconds_all.map(lambda s: len(s.split(";")) if s else 0)

    print("\n" + long_table(rows))
    print(summary_table(rows))
    print("\n" + target_report(rows))

    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"run-{started}{'-quick' if args.quick else ''}.csv"
    rows.to_csv(path, index=False)
    print(f"\nwrote {path}")
    if not args.quick:
        latest = args.output / "latest.csv"
        if latest.exists():
            old = pd.read_csv(latest)
            old = old[~old.problem.isin(set(rows.problem))]  # a problem's rows all come from one run
            rows_out = pd.concat([old, rows], ignore_index=True) if len(old) else rows
            order = {name: i for i, name in enumerate(PROBLEMS)}
            rows_out = rows_out.sort_values(["problem", "library"], key=lambda s: s.map(order) if s.name == "problem" else s.map(LIBRARIES.index), kind="stable")
        else:
            rows_out = rows
        rows_out.to_csv(latest, index=False)
        text = latest.with_suffix(".txt")
        text.write_text(
            f"# python -m benchmarks.run; rows of latest.csv (runs {', '.join(sorted(set(map(str, rows_out.run))))})\n"
            f"# machine: {machine()}\n\n{long_table(rows_out)}\n{summary_table(rows_out)}\n\n{target_report(rows_out)}\n"
        )
        print(f"wrote {latest} and {text.name}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
