"""statsmodels: ``MixedLM.from_formula(...).fit(reml=...)``.

The model is translated from sklmm's ``random_effects``:

=============================  =================================================
``(1 | g)``                    ``groups=g``
``(1 + x | g)``, ``(0 + x | g)``   ``groups=g, re_formula="1 + x"`` / ``"0 + x"``
``(1 + x || g)``               ``groups=g, re_formula="1", vc_formula={"x": "0 + x"}``
``(1 | a/b)``                  ``groups=a, re_formula="1", vc_formula={"b": "0 + C(b)"}``
``(1 | a) + (1 | b)`` crossed  one group holding every row,
                               ``vc_formula={"a": "0 + C(a)", "b": "0 + C(b)"}``
=============================  =================================================

Crossed factors need a dense n x (levels) design in one group, so they are
tried only while that design is small (``MAX_DENSE_CROSSED`` entries); prior
weights are not supported by MixedLM.  The timed call is ``from_formula``
plus ``fit`` (statsmodels' default optimisers).  ``llf`` is the (restricted,
for REML) log-likelihood with the same constants as lme4's, so the objective
is ``-2 llf`` (checked on sleepstudy: 1743.628 REML, 1751.939 ML, as lme4).
Evaluations count calls of ``loglike``.
"""

from __future__ import annotations

import re
import time

from . import Result, timed_fits
from ..problems import Problem, reference_case

#: Largest n x (levels) dense design tried for crossed factors.
MAX_DENSE_CROSSED = 2_000_000

_TERM = re.compile(r"\(\s*([^|()]+?)\s*(\|\|?)\s*([^()|]+?)\s*\)")


def version() -> str | None:
    try:
        from importlib.metadata import version as dist_version

        import statsmodels  # noqa: F401

        return dist_version("statsmodels")
    except Exception:
        return None


def translate(problem: Problem) -> tuple[dict | None, str | None]:
    """(keyword arguments of MixedLM.from_formula, None) or (None, why not)."""
    if problem.weights is not None:
        return None, "MixedLM has no prior weights"
    terms = _TERM.findall(problem.random_effects)
    if not terms:
        return None, f"cannot read {problem.random_effects!r}"
    parsed = []
    for columns, bar, factor in terms:
        tokens = [t.strip() for t in columns.split("+")]
        intercept = "0" not in tokens
        slopes = [t for t in tokens if t not in ("0", "1")]
        parsed.append((intercept, slopes, bar, factor.strip()))

    if len(parsed) == 1:
        intercept, slopes, bar, factor = parsed[0]
        if "/" in factor:
            outer, inner = [f.strip() for f in factor.split("/")]
            if slopes or ":" in factor:
                return None, "nested random slopes not translated"
            return dict(groups=outer, re_formula="1", vc_formula={inner: f"0 + C({inner})"}), None
        if ":" in factor:
            return None, "interaction grouping factor not translated"
        if bar == "||" and slopes:
            return dict(groups=factor, re_formula="1" if intercept else "0", vc_formula={s: f"0 + {s}" for s in slopes}), None
        re_formula = " + ".join((["1"] if intercept else ["0"]) + slopes)
        return dict(groups=factor, re_formula=re_formula), None

    if any(slopes or not intercept or "/" in f or ":" in f for intercept, slopes, _, f in parsed):
        return None, "several terms with slopes or nesting not translated"
    factors = [f for _, _, _, f in parsed]
    levels = sum(problem.data[f].nunique() for f in factors)
    size = problem.n * levels
    if size > MAX_DENSE_CROSSED:
        return None, f"crossed factors need a dense {problem.n:,} x {levels:,} design in one group ({size * 8 / 2**30:.1f} GiB)"
    return dict(groups="_all", re_formula="0", vc_formula={f: f"0 + C({f})" for f in factors}), None


def skip_reason(problem: Problem) -> str | None:
    return translate(problem)[1]


def warm_up() -> None:
    fit(reference_case("sleepstudy"))


def fit(problem: Problem, repeat: int = 1, budget: float = float("inf")) -> Result:
    import warnings

    from statsmodels.regression.mixed_linear_model import MixedLM

    kwargs, reason = translate(problem)
    if kwargs is None:
        raise ValueError(reason)
    data = problem.data
    if kwargs["groups"] == "_all":
        data = data.assign(_all=0)
    formula = f"{problem.response} ~ 1" + "".join(f" + {c}" for c in problem.fixed)

    def once():
        count = [0]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            model = MixedLM.from_formula(formula, data, **kwargs)
            loglike = model.loglike

            def counted(*args, **kw):
                count[0] += 1
                return loglike(*args, **kw)

            model.loglike = counted
            result = model.fit(reml=problem.reml)
            seconds = time.perf_counter() - start
        notes = sorted({str(w.message).splitlines()[0][:80] for w in caught})
        return seconds, -2.0 * result.llf, count[0] or None, bool(result.converged), "; ".join(notes)

    return timed_fits("statsmodels", problem, repeat, budget, once)
