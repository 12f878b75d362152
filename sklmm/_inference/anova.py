"""Likelihood-ratio tests between nested fitted models, as lme4's ``anova(m0, m1, ...)``.

The models are ordered by their number of parameters (``npar``: fixed
effects, theta and sigma, as lme4's ``logLik`` df).  Each row has the
model's AIC, BIC, log-likelihood and deviance (-2 logLik); from the second
row on, the likelihood-ratio statistic against the row above,
``Chisq = 2 max(0, logLik_i - logLik_{i-1})``, its degrees of freedom
``Df = npar_i - npar_{i-1}`` and ``Pr(>Chisq)`` from the chi-square
distribution (NaN when Df is 0, as lme4).

REML criteria of models with different fixed effects are not comparable, so
with ``refit=True`` (lme4's default) every REML fit is refitted by maximum
likelihood first and the table says so: its ``note`` (printed above the
table and kept in ``table.attrs["note"]``) reads "refitting model(s) with ML
(instead of REML)", lme4's message.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.stats import chi2

from .._engine.fit import fit_lmm

REFIT_NOTE = "refitting model(s) with ML (instead of REML)"


class AnovaTable(pd.DataFrame):
    """A DataFrame that prints lme4's heading (the models' formulas) and note above the table.

    ``attrs["heading"]`` holds the heading lines and ``attrs["note"]`` the
    note (``None`` when no model was refitted).

    Examples
    --------
    >>> from sklmm import MixedLinearRegressor, anova
    >>> from sklmm.datasets import load_sleepstudy
    >>> X, y, groups = load_sleepstudy(return_X_y_groups=True)
    >>> m0 = MixedLinearRegressor(random_effects="(1 | Subject)", reml=False).fit(X, y, groups=groups)
    >>> m1 = MixedLinearRegressor(random_effects="(1 + Days | Subject)", reml=False).fit(X, y, groups=groups)
    >>> print(anova(m0, m1).round(2))
    Models:
    m0: y ~ 1 + Days + (1 | Subject)
    m1: y ~ 1 + Days + (1 + Days | Subject)
        npar      AIC      BIC  logLik  deviance  Chisq   Df  Pr(>Chisq)
    m0     4  1802.08  1814.85 -897.04   1794.08    NaN  NaN         NaN
    m1     6  1763.94  1783.10 -875.97   1751.94  42.14  2.0         0.0
    """

    @property
    def _constructor(self):
        return AnovaTable

    def _preamble(self) -> list[str]:
        lines = []
        if self.attrs.get("note"):
            lines.append(self.attrs["note"])
        lines.extend(self.attrs.get("heading", []))
        return lines

    def __repr__(self) -> str:
        # the whole table (a few rows, eight columns), never truncated to the terminal's width
        return "\n".join([*self._preamble(), self.to_string()])

    def _repr_html_(self) -> str:
        html = super()._repr_html_()
        if html is None:
            return None
        from html import escape

        lines = "<br>".join(escape(line) for line in self._preamble())
        return f"<p>{lines}</p>{html}" if lines else html


def _n_params(est) -> int:
    """lme4's logLik df: fixed effects, theta, and sigma for the linear model (binomial and Poisson GLMMs have none)."""
    return len(est.fixed_effects_) + len(est.theta_) + (0 if _is_glmm(est) else 1)


def _is_glmm(est) -> bool:
    return getattr(est, "family_", None) is not None


def _reml(est) -> bool:
    return bool(getattr(est, "reml", False))


def _ml_criteria(est) -> tuple[float, int, int]:
    """(ML log-likelihood, npar, n_obs), refitting a REML fit by ML."""
    data = est._require_training_data("anova's ML refit of a REML fit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_lmm(data, reml=False, max_evaluations=est.max_iter)
    return float(fit.log_likelihood), fit.n_params, fit.n_obs


def anova(*models, refit: bool = True, names=None, type=3, ddf="satterthwaite") -> AnovaTable:
    """F tests of one model's terms (lmerTest's ``anova(fit)``), or likelihood-ratio tests of nested models (lme4's ``anova``).

    With one model: lmerTest 3.1-3's F table, one row per model term (a
    factor's columns tested together; on an X-form fit every column is its
    own term), columns ``Sum Sq``, ``Mean Sq``, ``NumDF``, ``DenDF``,
    ``F value``, ``Pr(>F)``; ``Sum Sq`` and ``Mean Sq`` are lmerTest's
    (the unscaled F times sigma^2).  The hypotheses of each ``type`` are
    described in :mod:`sklmm._inference.ftests`.

    With several models: the likelihood-ratio table described below.

    Parameters
    ----------
    *models : MixedLinearRegressor, or GLMM estimators
        One fitted linear mixed model (F tests of its terms), or two or more
        models fitted to the same observations, typically nested (each a
        special case of the next).  Generalised models
        (:class:`MixedLogisticRegression`, :class:`MixedGLMRegressor`) are
        compared by their -2 logLik as fitted (lme4's ``anova`` of glmer fits).
    refit : bool, default=True
        Refit REML fits by maximum likelihood first, as lme4 does (the
        table's note says so).  ``False`` compares the criteria as fitted;
        that is meaningful only between REML fits with the same fixed
        effects.
    names : list of str, optional
        Row labels, one per model in argument order; default ``m0, m1, ...``.
    type : {1, 2, 3}, default=3
        One model only: the hypotheses (sequential, type II, type III), as
        lmerTest's ``type``; ``"I"``, ``"II"``, ``"III"`` are accepted.
    ddf : {"satterthwaite", "kenward-roger"}, default="satterthwaite"
        One model only: the denominator degrees of freedom.  Kenward-Roger
        needs a REML fit; its F is pbkrtest's scaled F.

    Returns
    -------
    AnovaTable
        A DataFrame with columns ``npar``, ``AIC``, ``BIC``, ``logLik``,
        ``deviance``, ``Chisq``, ``Df``, ``Pr(>Chisq)``, one row per model in
        increasing ``npar``.

    Examples
    --------
    >>> from sklmm import MixedLinearRegressor, anova
    >>> from sklmm.datasets import load_sleepstudy
    >>> X, y, groups = load_sleepstudy(return_X_y_groups=True)
    >>> m0 = MixedLinearRegressor(random_effects="(1 | Subject)").fit(X, y, groups=groups)
    >>> m1 = MixedLinearRegressor(random_effects="(1 + Days | Subject)").fit(X, y, groups=groups)
    >>> table = anova(m0, m1)
    >>> table.attrs["note"]
    'refitting model(s) with ML (instead of REML)'
    >>> round(float(table.loc["m1", "Chisq"]), 3), int(table.loc["m1", "Df"])
    (42.139, 2)

    One model: F tests of its terms (lmerTest: Sum Sq 30030.9, F 45.853, DenDF 17.000)

    >>> print(anova(m1)[["NumDF", "DenDF", "F value"]].round(3))
    Type III Analysis of Variance Table with Satterthwaite's method
          NumDF  DenDF  F value
    Days      1   17.0   45.853
    """
    if len(models) == 1:
        from .ftests import single_model_anova

        if not hasattr(models[0], "reml"):
            raise TypeError(
                f"anova with one model gives lmerTest's F tests, which are for linear mixed models; "
                f"{models[0].__class__.__name__} is a generalised model: compare nested fits with "
                "anova(m0, m1) (likelihood-ratio tests), or read the Wald z tests in fixed_effects_"
            )

        return single_model_anova(models[0], type=type, ddf=ddf)
    if len(models) < 2:
        raise ValueError("anova needs one fitted model (F tests of its terms) or several (likelihood-ratio tests)")
    names = [f"m{i}" for i in range(len(models))] if names is None else [str(name) for name in names]
    if len(names) != len(models) or len(set(names)) != len(names):
        raise ValueError(f"names={names!r}: give one distinct name per model")
    n_obs = {int(m.n_obs_) for m in models}
    if len(n_obs) > 1:
        raise ValueError(f"models were not all fitted to the same size of dataset (numbers of observations: {sorted(n_obs)})")
    if len({_is_glmm(m) for m in models}) > 1:
        raise ValueError("anova compares models of one kind: linear mixed models, or generalised ones of the same family")
    if len({getattr(m, "family_", None) for m in models}) > 1:
        raise ValueError(f"the models have different families {sorted({m.family_ for m in models})}; their likelihoods are not comparable")
    if len({getattr(m, "_fit_result", None) and m._fit_result.nagq > 1 for m in models}) > 1:
        raise ValueError(
            "some models were fitted with nagq > 1 and some with the Laplace approximation; their -2 logLik are on "
            "different scales (lme4's AGQ deviance omits the saturated-model constant): fit all with the same nagq"
        )
    any_reml = any(_reml(m) for m in models)
    rows = []
    for name, model in zip(names, models):
        npar = _n_params(model)
        if refit and _reml(model):
            loglik, npar, n = _ml_criteria(model)
        else:
            loglik, n = float(model.log_likelihood_), int(model.n_obs_)
        rows.append((name, npar, loglik, n))
    if not refit and any(_reml(m) for m in models) and not all(_reml(m) for m in models):
        warnings.warn("some models were fit with REML and some with ML: their criteria are not comparable", UserWarning, stacklevel=2)
    order = sorted(range(len(rows)), key=lambda i: rows[i][1])  # stable: ties keep argument order
    rows = [rows[i] for i in order]
    npar = np.array([r[1] for r in rows], dtype=int)
    loglik = np.array([r[2] for r in rows], dtype=float)
    n = rows[0][3]
    chisq = np.concatenate([[np.nan], 2.0 * np.maximum(0.0, np.diff(loglik))])
    df = np.concatenate([[np.nan], np.diff(npar).astype(float)])
    with np.errstate(invalid="ignore"):
        p_value = np.where(df == 0, np.nan, chi2.sf(chisq, np.where(df == 0, 1.0, df)))
    table = AnovaTable(
        {
            "npar": npar,
            "AIC": -2.0 * loglik + 2.0 * npar,
            "BIC": -2.0 * loglik + np.log(n) * npar,
            "logLik": loglik,
            "deviance": -2.0 * loglik,
            "Chisq": chisq,
            "Df": df,
            "Pr(>Chisq)": p_value,
        },
        index=pd.Index([r[0] for r in rows], dtype=object),
    )
    from .._report.summary import formula

    by_name = dict(zip(names, models))
    table.attrs["heading"] = ["Models:", *(f"{r[0]}: {formula(by_name[r[0]])}" for r in rows)]
    table.attrs["note"] = REFIT_NOTE if refit and any_reml else None
    return table
