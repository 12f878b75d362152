"""Estimated marginal means of a linear mixed model fitted with a formula (R's emmeans for lmer).

As emmeans 1.8 computes them:

* the reference grid: every combination of the levels of the fixed part's
  factors, with each numeric variable at its mean over the training rows;
* the grid's linear functions ``x(g)`` are rows of the fixed-effects model
  matrix, made by the formula's own design (``est._design.fixed_matrix``);
* the mean of a ``specs`` cell (within a ``by`` cell) is the equally
  weighted average of the grid rows in it (emmeans' default weights);
* standard errors, df and intervals ``mean -/+ t_{df} SE`` use emmeans'
  default df for lmer fits: Kenward-Roger (pbkrtest's ``vcovAdj`` for the
  covariance, ``Lb_ddf`` per row) when the model has at most 3,000
  observations (emmeans' ``pbkrtest.limit``), otherwise asymptotic (normal,
  ``df = inf``: above 3,000 emmeans also leaves out Satterthwaite, its
  ``lmerTest.limit``).  ``ddf="satterthwaite"`` gives emmeans'
  ``lmer.df = "satterthwaite"`` (lmerTest's ``calcSatterth`` per row).
  An ML fit gets Satterthwaite by default: pbkrtest would refit it by REML;
* pairwise comparisons (``pairs``): every difference ``a - b`` of two means
  in the same ``by`` cell, in emmeans' order and labels, with p values
  adjusted within each ``by`` cell: ``"tukey"`` (emmeans' default for
  pairs: the studentized range with as many means as the family has, on
  the contrast's df), ``"bonferroni"``, ``"holm"``, ``"none"``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats

from .ddf import lmm_tests

#: emmeans' ``pbkrtest.limit`` and ``lmerTest.limit``.
DF_LIMIT = 3000
ADJUSTMENTS = ("tukey", "bonferroni", "holm", "none")


class EMMeans:
    """Estimated marginal means (:func:`emmeans`'s result).

    Attributes
    ----------
    means : DataFrame
        One row per ``specs`` cell within each ``by`` cell: the factors'
        levels, then ``emmean``, ``SE``, ``df``, ``lower.CL``, ``upper.CL``.
    linfct : ndarray of shape (n_means, p)
        The linear functions of the fixed effects that give the means.
    ddf : str
        The degrees-of-freedom method used.
    level : float

    Examples
    --------
    >>> import numpy as np, sklmm
    >>> from sklmm.datasets import load_sleepstudy
    >>> data = load_sleepstudy()
    >>> data["Period"] = np.where(data["Days"] < 3, "a_early", np.where(data["Days"] < 6, "b_middle", "c_late"))
    >>> model = sklmm.lmer("Reaction ~ Period + (1 | Subject)", data)
    >>> emm = sklmm.emmeans(model, "Period")  # emmeans: 262 293 330, SE 9.80 9.80 9.54, df 23.3 23.3 21.0
    >>> emm.means.round(2)
         Period  emmean    SE     df  lower.CL  upper.CL
    0   a_early  262.17  9.80  23.32    241.91    282.43
    1  b_middle  293.39  9.80  23.32    273.13    313.65
    2    c_late  329.60  9.54  20.97    309.76    349.44
    >>> emm.pairs()[["contrast", "estimate", "SE", "df", "t.ratio"]].round(3)  # emmeans: t -4.905 -11.326 -6.083
                 contrast  estimate     SE     df  t.ratio
    0  a_early - b_middle   -31.217  6.365  160.0   -4.905
    1    a_early - c_late   -67.433  5.954  160.0  -11.326
    2   b_middle - c_late   -36.216  5.954  160.0   -6.083
    """

    def __init__(self, means, linfct, ddf, level, specs, by, tests):
        self.means = means
        self.linfct = linfct
        self.ddf = ddf
        self.level = level
        self.specs = specs
        self.by = by
        self._tests = tests

    def __repr__(self) -> str:
        return self.means.to_string(index=False) + f"\n\nDegrees-of-freedom method: {self.ddf}\nConfidence level used: {self.level}"

    def _repr_html_(self) -> str:
        return self.means.to_html(index=False)

    def pairs(self, adjust: str = "tukey") -> pd.DataFrame:
        """Pairwise differences of the means within each ``by`` cell (emmeans' ``pairs``).

        Parameters
        ----------
        adjust : {"tukey", "bonferroni", "holm", "none"}, default="tukey"
            p-value adjustment within each ``by`` cell (family).

        Returns
        -------
        DataFrame
            ``contrast`` (``"a - b"``), the ``by`` factors, ``estimate``,
            ``SE``, ``df``, ``t.ratio``, ``p.value``.

        Examples
        --------
        >>> import numpy as np, sklmm
        >>> from sklmm.datasets import load_sleepstudy
        >>> data = load_sleepstudy()
        >>> data["Half"] = np.where(data["Days"] < 5, "first", "second")
        >>> emm = sklmm.emmeans(sklmm.lmer("Reaction ~ Half + (1 | Subject)", data), "Half")
        >>> emm.pairs("bonferroni")["contrast"].tolist()
        ['first - second']
        """
        if adjust not in ADJUSTMENTS:
            raise ValueError(f"adjust={adjust!r}: use one of {ADJUSTMENTS}")
        labels = self.means[self.specs].astype(str).agg(" ".join, axis=1).to_numpy()
        by_keys = self.means[self.by].astype(str).agg("\x00".join, axis=1).to_numpy() if self.by else np.zeros(len(self.means), dtype=str)
        rows, pieces = [], []
        for key in dict.fromkeys(by_keys):
            idx = np.flatnonzero(by_keys == key)
            family = []
            for a, b in itertools.combinations(idx, 2):
                family.append((a, b))
            if not family:
                continue
            L = np.array([self.linfct[a] - self.linfct[b] for a, b in family])
            res = _t_rows(self._tests, L, self.ddf)
            p = _adjust(res["p"], res["t"], res["df"], adjust, n_means=len(idx))
            for (a, b), est, se, df, t, pv in zip(family, res["estimate"], res["se"], res["df"], res["t"], p):
                row = {"contrast": f"{labels[a]} - {labels[b]}"}
                for name in self.by:
                    row[name] = self.means[name].iloc[a]
                row.update({"estimate": est, "SE": se, "df": df, "t.ratio": t, "p.value": pv})
                rows.append(row)
        return pd.DataFrame(rows, columns=["contrast", *self.by, "estimate", "SE", "df", "t.ratio", "p.value"])


def _t_rows(tests, L: np.ndarray, ddf: str) -> dict:
    if ddf == "asymptotic":
        estimate = L @ tests.beta
        se = np.sqrt(np.einsum("ij,jk,ik->i", L, tests.vcov, L))
        t = estimate / se
        df = np.full(len(L), np.inf)
        return {"estimate": estimate, "se": se, "df": df, "t": t, "p": 2 * stats.norm.sf(np.abs(t))}
    return tests.t_test(L, ddf)


def _adjust(p: np.ndarray, t: np.ndarray, df: np.ndarray, method: str, n_means: int) -> np.ndarray:
    m = len(p)
    if method == "none":
        return p
    if method == "bonferroni":
        return np.minimum(1.0, p * m)
    if method == "holm":
        order = np.argsort(p, kind="stable")
        adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
        out = np.empty(m)
        out[order] = adjusted
        return out
    # tukey: P(studentized range of n_means means > sqrt(2) |t|) on the contrast's df
    q = np.sqrt(2.0) * np.abs(t)
    return np.array([stats.studentized_range.sf(qi, n_means, d) for qi, d in zip(q, df)])


def _default_ddf(est) -> str:
    if est.n_obs_ > DF_LIMIT:
        return "asymptotic"
    return "kenward-roger" if est.reml else "satterthwaite"


def emmeans(est, specs, by=None, level: float = 0.95, ddf=None) -> EMMeans:
    """Estimated marginal means of a formula fit, as R's emmeans computes them for lmer.

    Parameters
    ----------
    est : MixedLinearRegressor
        Fitted with a formula whose fixed part has the factors named in
        ``specs`` and ``by``.
    specs : str or list of str
        Factor(s) whose levels' means are wanted.
    by : str or list of str, optional
        Factor(s) within whose levels the means (and comparisons) are taken.
    level : float, default=0.95
        Confidence level of the intervals.
    ddf : {None, "kenward-roger", "satterthwaite", "asymptotic"}
        None: emmeans' default for lmer (Kenward-Roger up to 3,000
        observations, asymptotic above; see the module docstring).

    Returns
    -------
    EMMeans
        ``.means`` (DataFrame) and ``.pairs(adjust="tukey")``.

    Notes
    -----
    tests/test_emmeans.py compares every number with R's emmeans 1.8.4-1
    (tests/data/emmeans).

    Examples
    --------
    >>> import numpy as np, sklmm
    >>> from sklmm.datasets import load_sleepstudy
    >>> data = load_sleepstudy()
    >>> data["Period"] = np.where(data["Days"] < 3, "a_early", np.where(data["Days"] < 6, "b_middle", "c_late"))
    >>> model = sklmm.lmer("Reaction ~ Period + (1 | Subject)", data)
    >>> emm = sklmm.emmeans(model, "Period")  # emmeans: 262 293 330, SE 9.80 9.80 9.54, df 23.3 23.3 21.0
    >>> emm.means.round(2)
         Period  emmean    SE     df  lower.CL  upper.CL
    0   a_early  262.17  9.80  23.32    241.91    282.43
    1  b_middle  293.39  9.80  23.32    273.13    313.65
    2    c_late  329.60  9.54  20.97    309.76    349.44
    >>> emm.pairs()[["contrast", "estimate", "SE", "df", "t.ratio"]].round(3)  # emmeans: t -4.905 -11.326 -6.083
                 contrast  estimate     SE     df  t.ratio
    0  a_early - b_middle   -31.217  6.365  160.0   -4.905
    1    a_early - c_late   -67.433  5.954  160.0  -11.326
    2   b_middle - c_late   -36.216  5.954  160.0   -6.083
    """
    from .ftests import _training_frame

    design = getattr(est, "_design", None)
    if design is None:
        raise ValueError("emmeans needs a model fitted with a formula (its factors define the reference grid)")
    if not 0 < level < 1:
        raise ValueError(f"level={level!r} must be between 0 and 1")
    specs = [specs] if isinstance(specs, str) else list(specs)
    by = [] if by is None else ([by] if isinstance(by, str) else list(by))
    levels = dict(design.factor_levels)
    unknown = [f for f in specs + by if f not in levels]
    if unknown:
        raise ValueError(f"specs/by name {unknown}, which are not factors of the model's fixed part (its factors: {list(levels)})")
    if set(specs) & set(by):
        raise ValueError(f"a factor cannot be in both specs and by: {sorted(set(specs) & set(by))}")
    ddf = _default_ddf(est) if ddf is None else ddf
    if ddf not in ("kenward-roger", "satterthwaite", "asymptotic"):
        raise ValueError(f"ddf={ddf!r}: use None, 'kenward-roger', 'satterthwaite' or 'asymptotic'")

    frame = _training_frame(est)
    columns = set(getattr(design, "variable_names", []))
    expressions = [f for f in levels if columns and f not in columns]
    if expressions:
        raise ValueError(
            f"emmeans builds its grid from data columns; the factor(s) {expressions} are expressions of "
            "columns: make the factor a column of the data and fit again"
        )
    numeric = [v for v in design.variable_names if v not in levels]
    tests = lmm_tests(est)
    fixed_index = list(est.fixed_effects_.index)
    means_of = {}
    for v in numeric:
        if frame is not None and v in frame.columns:
            means_of[v] = float(np.mean(frame[v].to_numpy(dtype=float)))
        elif v in fixed_index:  # the variable is a column of the model matrix: its mean over the training rows
            means_of[v] = float(np.mean(tests.prepared.design[:, fixed_index.index(v)]))
        else:
            raise ValueError(
                f"emmeans needs the mean of the numeric variable {v!r}, which is not a column of the "
                "fixed-effects model matrix (it enters only through a transformation or an interaction); "
                "add it as a term or centre it before the fit"
            )
    # the reference grid: first factor fastest (R's expand.grid)
    factor_names = list(levels)
    combos = list(itertools.product(*[levels[f] for f in reversed(factor_names)]))
    grid = pd.DataFrame([tuple(reversed(c)) for c in combos], columns=factor_names)
    for v in numeric:
        grid[v] = means_of[v]
    # columns the formula needs beyond the fixed part (grouping factors, random slopes,
    # offsets) do not enter the fixed-effects matrix: any value of the right kind will do
    data = getattr(est, "_training_data", None)
    for name in getattr(design, "required_columns", []):
        if name in grid.columns:
            continue
        groups = None if data is None else data.groups
        grid[name] = groups[name].iloc[0] if groups is not None and name in groups.columns else 0.0
    X_grid = np.asarray(design.fixed_matrix(grid), dtype=float)
    names = list(design.fixed_names)
    kept = [names.index(n) for n in est.fixed_effects_.index]
    X_grid = X_grid[:, kept]

    # one mean per (by, specs) cell: specs fastest, then by (first factor fastest in each)
    cells = list(itertools.product(*[levels[f] for f in reversed(by)], *[levels[f] for f in reversed(specs)]))
    rows, linfct = [], []
    for cell in cells:
        by_values = dict(zip(reversed(by), cell[: len(by)]))
        spec_values = dict(zip(reversed(specs), cell[len(by) :]))
        mask = np.ones(len(grid), dtype=bool)
        for f, v in {**by_values, **spec_values}.items():
            mask &= grid[f].astype(str).to_numpy() == str(v)
        linfct.append(X_grid[mask].mean(axis=0))
        rows.append({**{f: spec_values[f] for f in specs}, **{f: by_values[f] for f in by}})
    linfct = np.array(linfct)
    res = _t_rows(tests, linfct, ddf)  # Kenward-Roger: the adjusted covariance, as emmeans
    means = pd.DataFrame(rows, columns=[*specs, *by])
    means["emmean"] = res["estimate"]
    means["SE"] = res["se"]
    means["df"] = res["df"]
    crit = stats.t.ppf(0.5 + level / 2.0, res["df"])
    means["lower.CL"] = res["estimate"] - crit * res["se"]
    means["upper.CL"] = res["estimate"] + crit * res["se"]
    return EMMeans(means, linfct, ddf, level, specs, by, tests)
