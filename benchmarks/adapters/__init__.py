"""One adapter per library, behind one interface, and the subprocess that runs it.

Each adapter module (``sklmm``, ``lme4``, ``statsmodels``, ``mixedlm``) has

``version() -> str | None``
    The library's version; ``None`` when it is not installed.
``skip_reason(problem) -> str | None``
    Why the library cannot fit this problem (a model it does not support, or
    one it could only fit by a dense design too large to try), else ``None``.
``warm_up() -> None``
    A small fit first, so that imports and lazy initialisation are not timed.
``fit(problem, repeat=1, budget=inf) -> Result``
    Fits up to ``repeat`` times in this process (stopping early once the
    fits have taken ``budget`` seconds) and times the fit alone, not data
    loading: ``seconds`` is the best time, ``objective`` on lme4's scale
    (REML criterion for REML fits, deviance = -2 log-likelihood for ML).

:func:`run` calls an adapter in a fresh ``python -m benchmarks.adapters._worker``
process with a time limit, so that a hang or a memory blow-up costs one row
of the table and not the run; a process that overruns is killed with its
children (Rscript included).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..problems import ROOT, Problem

#: Libraries in the order the table shows them; sklmm first, the peers after.
LIBRARIES = ("sklmm", "lme4", "statsmodels", "mixedlm")
PEERS = LIBRARIES[1:]

#: Seconds before a library's subprocess is killed (data loading and warm-up included).
DEFAULT_TIMEOUT = 600.0
#: Fits per library and problem (the best time is kept) ...
DEFAULT_REPEAT = 5
#: ... unless the fits so far have taken this many seconds.
DEFAULT_BUDGET = 30.0


@dataclass
class Result:
    """One library on one problem.

    ``status`` is ``ok``, ``skipped`` (the library cannot fit the model;
    ``message`` says why), ``timeout`` or ``error``.
    """

    library: str
    problem: str
    n: int
    status: str = "ok"
    seconds: float | None = None
    seconds_all: list[float] = field(default_factory=list)
    objective: float | None = None
    n_evaluations: int | None = None
    converged: bool | None = None
    peak_mb: float | None = None
    cpu_busy: float | None = None  # share of the CPU other processes used just before the fit
    version: str = ""
    message: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def adapter(library: str):
    """The adapter module of ``library``."""
    if library not in LIBRARIES:
        raise KeyError(f"unknown library {library!r}; known: {', '.join(LIBRARIES)}")
    return importlib.import_module(f".{library}", __name__)


def timed_fits(library: str, problem: Problem, repeat: int, budget: float, fit_once) -> Result:
    """Call ``fit_once()`` up to ``repeat`` times, stopping once the calls have taken ``budget`` seconds.

    ``fit_once`` returns (seconds, objective, n_evaluations, converged, message).
    """
    seconds, last = [], None
    while len(seconds) < max(1, repeat) and (not seconds or sum(seconds) < budget):
        last = fit_once()
        seconds.append(float(last[0]))
    _, objective, n_evaluations, converged, message = last
    return Result(
        library=library, problem=problem.name, n=problem.n, seconds=min(seconds), seconds_all=seconds,
        objective=None if objective is None else float(objective),
        n_evaluations=None if n_evaluations is None else int(n_evaluations),
        converged=converged, message=message or "",
    )


def run(library: str, problem: Problem, folder: Path, *, timeout: float = DEFAULT_TIMEOUT, repeat: int = DEFAULT_REPEAT,
        budget: float = DEFAULT_BUDGET, sklmm_src: Path | None = None, blas_threads: int | None = None) -> Result:
    """Fit ``problem`` (saved in ``folder`` by ``problem.save``) with ``library`` in a subprocess.

    Returns a skipped result without starting a process when the library is
    missing or cannot fit the model.  ``sklmm_src``: a folder holding another
    ``sklmm`` package to measure instead of the installed one.  ``blas_threads``:
    limit the BLAS/OpenMP threads of the subprocess (``OPENBLAS_NUM_THREADS``
    and friends; R's reference BLAS is single-threaded anyway).
    """
    module = adapter(library)
    base = dict(library=library, problem=problem.name, n=problem.n)
    version = module.version()
    if version is None:
        return Result(**base, status="skipped", message="not installed")
    reason = module.skip_reason(problem)
    if reason:
        return Result(**base, status="skipped", version=version, message=reason)

    command = [sys.executable, "-m", "benchmarks.adapters._worker", library, str(folder), str(repeat), str(budget)]
    started = time.perf_counter()
    env = dict(os.environ)
    if sklmm_src is not None:
        env["SKLMM_BENCH_SRC"] = str(Path(sklmm_src).resolve())
    if blas_threads is not None:
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
            env[name] = str(blas_threads)
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return Result(**base, status="timeout", version=version, message=f"killed after {timeout:g} s (wall {time.perf_counter() - started:.0f} s)")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        tail = " | ".join(line for line in err.strip().splitlines()[-3:])
        reason = f"exit code {process.returncode}" + (" (killed: out of memory?)" if process.returncode in (-9, 137) else "")
        return Result(**base, status="error", version=version, message=f"{reason}: {tail}"[:500])
    result = Result(**json.loads(lines[-1]))
    result.version = version
    return result
