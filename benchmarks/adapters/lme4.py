"""lme4 through Rscript: ``lmer(formula, data, REML = ...)`` timed inside R.

The problem's columns are handed over as raw binary files (``readBin``, no
extra R package); ``lme4_fit.R`` reads them, warms lme4 up on sleepstudy,
then times ``lmer`` alone with ``proc.time()`` and prints JSON: the seconds,
``REMLcrit(fit)`` (REML) or ``deviance(fit)`` (ML), ``feval`` (objective
evaluations by the optimiser, lme4's default nloptwrap BOBYQA) and any
convergence messages.  R's start-up and data loading are not timed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import Result
from ..problems import Problem

SCRIPT = Path(__file__).with_name("lme4_fit.R")
_VERSION: list = []


def version() -> str | None:
    if not _VERSION:
        found = None
        if shutil.which("Rscript"):
            try:
                out = subprocess.run(
                    ["Rscript", "-e", "cat(as.character(packageVersion('lme4')), R.version$major, R.version$minor)"],
                    capture_output=True, text=True, timeout=120,
                )
                if out.returncode == 0 and out.stdout.strip():
                    lme4_version, major, minor = out.stdout.split()
                    found = f"{lme4_version} (R {major}.{minor})"
            except (OSError, subprocess.SubprocessError):
                found = None
        _VERSION.append(found)
    return _VERSION[0]


def skip_reason(problem: Problem) -> str | None:
    return None


def warm_up() -> None:
    """Nothing here: the R script warms lme4 up in its own process."""


def fit(problem: Problem, repeat: int = 1, budget: float = float("inf")) -> Result:
    folder = problem.extra.get("folder")
    with tempfile.TemporaryDirectory(prefix="sklmm-bench-") as scratch:
        if folder is None:
            folder = str(problem.save(Path(scratch)))
        spec = json.loads((Path(folder) / "problem.json").read_text())
        columns = [f"{name}={kind}" for name, kind in spec["columns"].items()]
        command = [
            "Rscript", str(SCRIPT), str(folder), str(problem.n), problem.lme4_formula,
            "TRUE" if problem.reml else "FALSE", str(repeat), str(budget), problem.weights or "", *columns,
        ]
        out = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    base = dict(library="lme4", problem=problem.name, n=problem.n)
    if not lines:
        tail = " | ".join(out.stderr.strip().splitlines()[-3:])
        return Result(**base, status="error", message=f"Rscript exit {out.returncode}: {tail}"[:500])
    answer = json.loads(lines[-1])
    if "error" in answer:
        return Result(**base, status="error", message=answer["error"][:500])
    seconds = [float(s) for s in answer["seconds"]]
    return Result(
        **base, seconds=min(seconds), seconds_all=seconds, objective=float(answer["objective"]),
        n_evaluations=int(answer["feval"]), converged=not answer["messages"], message=answer["messages"],
    )
