"""sklmm: ``MixedLinearRegressor(random_effects=..., reml=...).fit(X, y, groups=G)``.

The timed call is ``fit`` alone, given the fixed-effect columns as a
DataFrame and the grouping columns as a DataFrame of categoricals (as lme4's
time includes building its model frame from a data.frame).
"""

from __future__ import annotations

import time

from . import Result, timed_fits
from ..problems import Problem, reference_case


def version() -> str | None:
    try:
        from importlib.metadata import version as dist_version

        import sklmm  # noqa: F401

        return dist_version("sklmm")
    except Exception:
        return None


def skip_reason(problem: Problem) -> str | None:
    return None


def warm_up() -> None:
    fit(reference_case("sleepstudy"))


def fit(problem: Problem, repeat: int = 1, budget: float = float("inf")) -> Result:
    from sklmm import MixedLinearRegressor

    data = problem.data
    X = data[problem.fixed]
    y = data[problem.response].to_numpy()
    groups = data[problem.groups]
    weights = None if problem.weights is None else data[problem.weights].to_numpy()

    def once():
        model = MixedLinearRegressor(random_effects=problem.random_effects, reml=problem.reml)
        start = time.perf_counter()
        model.fit(X, y, groups=groups, sample_weight=weights)
        seconds = time.perf_counter() - start
        return seconds, model.objective_, model.n_iter_, bool(getattr(model, "converged_", True)), ""

    return timed_fits("sklmm", problem, repeat, budget, once)
