"""mixedlm (PyPI, Rust-backed lme4 port): ``mixedlm.lmer(formula, data, REML=...)``.

The timed call is ``lmer`` alone with the lme4 formula and default control
(its default optimiser, L-BFGS-B).  Objective: ``REMLcrit()`` for REML fits,
``deviance`` (-2 log-likelihood) for ML fits; evaluations: ``function_evals``.
"""

from __future__ import annotations

import time

from . import Result, timed_fits
from ..problems import Problem, reference_case


def version() -> str | None:
    try:
        from importlib.metadata import version as dist_version

        return dist_version("mixedlm")
    except Exception:
        return None


def skip_reason(problem: Problem) -> str | None:
    return None


def warm_up() -> None:
    fit(reference_case("sleepstudy"))


def fit(problem: Problem, repeat: int = 1, budget: float = float("inf")) -> Result:
    import mixedlm

    data = problem.data

    def once():
        start = time.perf_counter()
        result = mixedlm.lmer(problem.lme4_formula, data, REML=problem.reml, weights=problem.weights)
        seconds = time.perf_counter() - start
        objective = result.REMLcrit() if problem.reml else result.deviance
        converged = getattr(result, "converged", None)
        message = f"optimizer {getattr(result, 'optimizer', '?')}"
        return seconds, float(objective), getattr(result, "function_evals", None), None if converged is None else bool(converged), message

    return timed_fits("mixedlm", problem, repeat, budget, once)
