"""The summary of a fitted model, laid out as lme4's ``print(summary(lmer))``.

:func:`summarize` collects the pieces into a :class:`ModelSummary`: the
criterion (REML criterion, or AIC, BIC, logLik, deviance and residual df
for ML), quantiles of the scaled (Pearson) residuals, the random-effects
table (variances, standard deviations, correlations), the numbers of
observations and of levels per grouping factor, the fixed-effects table
(estimate, standard error, t value) and the correlation of the fixed
effects.  Each piece is a DataFrame or Series; ``str()`` prints them as
lme4 does (numbers formatted by R's rules, :mod:`sklmm._rformat`) and
``_repr_html_`` shows them in a notebook.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .rformat import abbreviate, format_real, print_matrix, print_named, r_round, zapsmall

#: lme4's ``digits`` for the summary: ``max(3, getOption("digits") - 3)``.
DIGITS = 4
#: lme4's ``lme4.summary.cor.max``: the fixed-effect correlations are shown up to this many fixed effects.
COR_MAX = 12


def _weights_label(est) -> str:
    """The name lme4 prints after ``Weights:``: the column given as lmer/glmer's ``weights=``."""
    label = getattr(est, "_weights_label", None) if getattr(est, "_formula_text", None) else None
    return label or "sample_weight"


def formula(est) -> str:
    """The model in lme4's formula notation; the response is called ``y``.

    Examples
    --------
    >>> from sklmm import MixedLinearRegressor
    >>> from sklmm.datasets import load_sleepstudy
    >>> X, y, groups = load_sleepstudy(return_X_y_groups=True)
    >>> model = MixedLinearRegressor(random_effects="(1 + Days | Subject)").fit(X, y, groups=groups)
    >>> formula(model)
    'y ~ 1 + Days + (1 + Days | Subject)'
    """
    if getattr(est, "_formula_text", None):
        return est._formula_text
    if getattr(est, "formula", None) is not None:
        return "y " + est.formula.strip()
    fixed = ["1" if est.fit_intercept else "0", *est._slope_names(est.n_features_in_)]
    parts = [" + ".join(fixed)]
    if est.random_effects is not None:
        parts.append(est.random_effects.strip())
    elif est._fitted_terms:
        parts.append(" + ".join(f"(1 | {name})" for name in est.group_names_))
    return "y ~ " + " + ".join(parts)


@dataclass
class ModelSummary:
    """A fitted model's summary, as lme4's ``summary(lmer)``.

    ``str(summary)`` is lme4's printed summary; the attributes hold the
    same tables unrounded.

    Attributes
    ----------
    method_title : str
        ``"Linear mixed model fit by REML"`` or ``"... by maximum likelihood"``.
    formula : str
        The model in lme4's notation (the response is called ``y``).
    criterion : Series
        REML fits: ``REML`` (the REML criterion).  ML fits: ``AIC``,
        ``BIC``, ``logLik``, ``deviance``, ``df.resid``.
    scaled_residuals : Series or None
        ``Min``, ``1Q``, ``Median``, ``3Q``, ``Max`` of the Pearson
        residuals divided by sigma (None after unpickling: they need the
        training data).
    random_effects : DataFrame
        One row per random effect and a last ``Residual`` row: ``term``
        (the random-effects term's position, in theta's order), ``group``,
        ``name``, ``variance``, ``std_dev``, then the correlations with the
        term's earlier columns (``corr_1``, ``corr_2``, ...; NaN where none).
    n_obs : int
    n_groups : Series
        Levels per grouping factor, in the model's term order.
    fixed_effects : DataFrame
        ``Estimate``, ``Std. Error``, ``t value`` (``ddf=None``: lme4's
        table); with ``ddf``, lmerTest's ``Estimate``, ``Std. Error``,
        ``df``, ``t value``, ``Pr(>|t|)`` (Kenward-Roger: adjusted standard
        errors).
    ddf : str or None
        The degrees-of-freedom method of the t tests (``"satterthwaite"``,
        ``"kenward-roger"``) or None.
    fixed_effects_correlation : DataFrame
        Correlation of the fixed-effect estimates.
    messages : list of str
        Notes printed at the end (singular fit, convergence, dropped columns).

    Examples
    --------
    >>> from sklmm import MixedLinearRegressor
    >>> from sklmm.datasets import load_penicillin
    >>> X, y, groups = load_penicillin(return_X_y_groups=True)
    >>> model = MixedLinearRegressor(random_effects="(1 | plate) + (1 | sample)").fit(X, y, groups=groups)
    >>> summary = model.summary()
    >>> summary.n_groups.to_dict()
    {'plate': 24, 'sample': 6}
    >>> summary.random_effects[["group", "name", "variance", "std_dev"]].round(4)
          group         name  variance  std_dev
    0     plate  (Intercept)    0.7169   0.8467
    1    sample  (Intercept)    3.7309   1.9316
    2  Residual          NaN    0.3024   0.5499
    """

    method_title: str
    formula: str
    criterion: pd.Series
    scaled_residuals: pd.Series | None
    random_effects: pd.DataFrame
    n_obs: int
    n_groups: pd.Series
    fixed_effects: pd.DataFrame
    fixed_effects_correlation: pd.DataFrame
    weighted: bool = False
    #: what the Weights line names: the column of lmer/glmer(weights="w"), else sample_weight
    weights_label: str = "sample_weight"
    messages: list = field(default_factory=list)
    ddf: str | None = None
    class_name: str = "MixedLinearRegressor"

    # -- text, as lme4 prints it -------------------------------------------------

    def __str__(self) -> str:
        return "\n".join(self._lines()) + "\n"

    def __repr__(self) -> str:
        return str(self)

    def _header_lines(self) -> list[str]:
        """The title and formula lines (a GLMM's add its family)."""
        return [f"{self.method_title} ['{self.class_name}']", f"Formula: {self.formula}"]

    def _lines(self) -> list[str]:
        lines = self._header_lines()
        if self.weighted:
            lines.append(f"Weights: {self.weights_label}")
        lines.append("")
        lines.extend(self._criterion_lines())
        lines.append("")
        if self.scaled_residuals is not None:
            lines.append("Scaled residuals: ")
            values = format_real(zapsmall(self.scaled_residuals.to_numpy(), DIGITS + 1), DIGITS)
            lines.extend(print_named(values, list(self.scaled_residuals.index)))
            lines.append("")
        lines.append("Random effects:")
        lines.extend(self._random_effects_lines())
        lines.append(self._groups_line())
        if len(self.fixed_effects):
            lines.append("")
            lines.append("Fixed effects:")
            lines.extend(self._fixed_effects_lines())
            lines.extend(self._correlation_lines())
        lines.extend(self.messages)
        return lines

    def _criterion_lines(self) -> list[str]:
        rounded = r_round(self.criterion.to_numpy(), 1)
        if list(self.criterion.index) == ["REML"]:
            return [f"REML criterion at convergence: {format_real([rounded[0]], 7)[0].strip()}"]
        values = format_real(rounded, 7)
        values[-1] = format_real([rounded[-1]], 7)[0]  # df.resid formatted on its own
        return print_named(values, list(self.criterion.index))

    def _random_effects_lines(self) -> list[str]:
        table = self.random_effects
        groups = [g if first else "" for g, first in zip(table["group"], self._first_rows())]
        names = ["" if pd.isna(n) else str(n) for n in table["name"]]
        variance = format_real(table["variance"].to_numpy(), DIGITS)
        std_dev = format_real(table["std_dev"].to_numpy(), DIGITS)
        columns = [groups, names, variance, std_dev]
        header = ["Groups", "Name", "Variance", "Std.Dev."]
        corr_columns = [c for c in table.columns if c.startswith("corr_")]
        if corr_columns:
            corr_cells = self._correlation_cells(corr_columns)
            for j in range(len(corr_columns)):
                columns.append([row[j] for row in corr_cells])
                header.append("Corr" if j == 0 else "")
        cells = [list(row) for row in zip(*columns)]
        return print_matrix(cells, [""] * len(cells), header, right=False)

    def _first_rows(self) -> list[bool]:
        """Whether each row of the random-effects table starts a term (or is the Residual row)."""
        table = self.random_effects
        starts = []
        for i in range(len(table)):
            starts.append(i == 0 or table["term"].iloc[i] != table["term"].iloc[i - 1])
        return starts

    def _correlation_cells(self, corr_columns) -> list[list[str]]:
        """lme4's ``formatVC`` correlations: per term, ``format(round(R, 2), nsmall = 2)`` of its whole matrix."""
        table = self.random_effects
        cells = [[""] * len(corr_columns) for _ in range(len(table))]
        for term in table["term"].dropna().unique():
            rows = np.flatnonzero(table["term"].to_numpy() == term)
            p = len(rows)
            if p < 2:
                continue
            R = np.eye(p)
            for a in range(p):
                for b in range(a):
                    R[a, b] = R[b, a] = table[f"corr_{b + 1}"].iloc[rows[a]]
            text = np.array(format_real(r_round(R.ravel(order="F"), 2), 7, nsmall=2)).reshape(p, p, order="F")
            for a in range(1, p):
                for b in range(a):
                    cells[rows[a]][b] = text[a, b]
        return cells

    def _groups_line(self) -> str:
        head = f"Number of obs: {self.n_obs}, groups: "
        if not len(self.n_groups):
            return f"Number of obs: {self.n_obs}"
        tail = "; ".join(f"{name}, {count}" for name, count in self.n_groups.items())
        if len(head) + 1 + len(tail) > 80:
            return head + "\n" + tail
        return head + " " + tail

    def _fixed_effects_lines(self) -> list[str]:
        """R's ``printCoefmat(coefs, digits = 4)``: lme4's table, or lmerTest's with df, p values and stars.

        With five columns R formats Estimate, Std. Error and df together
        (``cs.ind = 1:3``), the t value to 3 decimals, and the p values by
        ``format.pval(digits = 3)``.
        """
        table = self.fixed_effects
        with_p = "Pr(>|t|)" in table.columns
        cs_columns = ["Estimate", "Std. Error", "df"] if with_p else ["Estimate", "Std. Error"]
        coef_se = table[cs_columns].to_numpy(dtype=float)
        acs = np.abs(coef_se)
        nonzero = acs[np.isfinite(acs) & (acs != 0)]
        if len(nonzero):
            digmin = 1 + np.floor(np.log10([nonzero.min(), nonzero.max()]))
        else:
            digmin = np.array([1.0, 1.0])
        decimals = int(max(1, np.max(DIGITS - digmin)))
        flat = coef_se.ravel(order="F")
        formatted = format_real(r_round(flat, decimals), DIGITS)
        # a nonzero value shown as 0 is shown with digits - 1 significant digits instead
        for i, (value, text) in enumerate(zip(flat, formatted)):
            if np.isfinite(value) and (value == 0) != (float(text) == 0):
                formatted[i] = format_real([value], DIGITS - 1)[0]
        cs = np.array(formatted, dtype=object).reshape(coef_se.shape, order="F")
        t_text = format_real(r_round(table["t value"].to_numpy(), 3), DIGITS)
        if not with_p:
            cells = [[cs[i, 0], cs[i, 1], t_text[i]] for i in range(len(table))]
            return print_matrix(cells, list(table.index), ["Estimate", "Std. Error", "t value"], right=True)
        p = table["Pr(>|t|)"].to_numpy(dtype=float)
        p_text = format_pval(p, 3)
        cells = [[*cs[i], t_text[i], p_text[i]] for i in range(len(table))]
        header = [*cs_columns, "t value", "Pr(>|t|)"]
        finite = p[np.isfinite(p)]
        stars = bool(len(finite)) and bool(np.any(finite < 0.1))
        if stars:
            symbols = [_signif_symbol(v) for v in p]
            width = max(len(s) for s in symbols)
            for row, symbol in zip(cells, symbols):
                row.append(symbol.ljust(width))
            header.append("")
        lines = print_matrix(cells, list(table.index), header, right=True)
        if stars:
            lines += ["---", "Signif. codes:  0 ‘***’ 0.001 ‘**’ 0.01 ‘*’ 0.05 ‘.’ 0.1 ‘ ’ 1"]
        return lines

    def _correlation_lines(self) -> list[str]:
        corr = self.fixed_effects_correlation
        p = corr.shape[0]
        if p <= 1:
            return []
        if p > COR_MAX:
            return [
                "",
                f"Correlation matrix not shown by default, as p = {p} > {COR_MAX}.",
                "Use summary.fixed_effects_correlation if you need it.",
            ]
        names = list(corr.index)
        rows = abbreviate(names, 11)
        cols = abbreviate(names, 6)
        text = np.array(format_real(r_round(corr.to_numpy().ravel(order="F"), 3), 7, nsmall=3)).reshape(p, p, order="F")
        cells = [[text[i, j] if i > j else "" for j in range(p - 1)] for i in range(1, p)]
        return ["", "Correlation of Fixed Effects:", *print_matrix(cells, rows[1:], cols[: p - 1], right=False)]

    # -- notebook --------------------------------------------------------------------

    def _repr_html_(self) -> str:
        def table(frame, **kwargs):
            return frame.to_html(na_rep="", float_format=lambda v: f"{v:.6g}", **kwargs)

        random = self.random_effects.drop(columns=["term"])
        parts = [
            f"<p><b>{html.escape(self.method_title)}</b> [{self.class_name}]<br>Formula: <code>{html.escape(self.formula)}</code></p>",
            "<p>" + ", ".join(f"{html.escape(str(k))}: {v:.6g}" for k, v in self.criterion.items()) + "</p>",
        ]
        if self.scaled_residuals is not None:
            parts += ["<p>Scaled residuals:</p>", table(self.scaled_residuals.to_frame().T, index=False)]
        parts += ["<p>Random effects:</p>", table(random, index=False)]
        groups = "; ".join(f"{html.escape(str(k))}, {v}" for k, v in self.n_groups.items())
        parts.append(f"<p>Number of obs: {self.n_obs}" + (f", groups: {groups}" if groups else "") + "</p>")
        if len(self.fixed_effects):
            parts += ["<p>Fixed effects:</p>", table(self.fixed_effects)]
        if self.fixed_effects_correlation.shape[0] > 1:
            parts += ["<p>Correlation of fixed effects:</p>", table(self.fixed_effects_correlation)]
        parts += [f"<p>{html.escape(m)}</p>" for m in self.messages]
        return "<div>" + "".join(parts) + "</div>"


def format_pval(pv, digits: int) -> list[str]:
    """R's ``format.pval(pv, digits, eps = .Machine$double.eps)``."""
    eps = np.finfo(float).eps
    pv = np.asarray(pv, dtype=float)
    out = ["NA"] * len(pv)
    ok = np.flatnonzero(np.isfinite(pv))
    small = [i for i in ok if pv[i] < eps]
    rest = [i for i in ok if pv[i] >= eps]
    if rest:
        values = pv[rest]
        with np.errstate(divide="ignore"):
            expo = np.floor(np.log10(np.where(values > 0, values, 1e-50)))
        fixp = (expo >= -3) | ((expo == -4) & (digits > 1))  # R 4's rule
        for group in (fixp, ~fixp):
            idx = [rest[k] for k in np.flatnonzero(group)]
            if idx:
                for i, text in zip(idx, format_real(pv[idx], digits)):
                    out[i] = text
    if small:
        d = max(1, digits - 2)
        if rest:
            nc = max(len(out[i]) for i in rest)
            if d > 1 and d + 6 > nc:
                d = max(1, nc - 7)
            sep = "" if d == 1 and nc <= 6 else " "
        else:
            sep = "" if d == 1 else " "
        text = "<" + sep + format_real([eps], d)[0]
        for i in small:
            out[i] = text
    return out


def _signif_symbol(p: float) -> str:
    """R's ``symnum`` of a p value with cutpoints 0, 0.001, 0.01, 0.05, 0.1, 1."""
    if not np.isfinite(p):
        return ""
    for cut, symbol in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p <= cut:
            return symbol
    return " "


def fitted_and_residuals(est, data) -> tuple[np.ndarray, np.ndarray]:
    """Fitted values (conditional on the random effects) and Pearson residuals ``sqrt(w) (y - fitted)``
    (for a GLMM: the fitted means and ``(y - mu) sqrt(w / V(mu))``).

    Over the rows the fit used (rows with weight 0 are left out), from the
    training data ``data`` (a :class:`sklmm._fit.TrainingData`).
    """
    X, y, groups, weights, source, offset = data.X, data.y, data.groups, data.weights, data.slope_source, data.offset
    if weights is not None:
        rows = weights > 0
        X, y, weights, source = X[rows], y[rows], weights[rows], source[rows]
        offset = None if offset is None else offset[rows]
        groups = None if groups is None else groups.loc[rows].reset_index(drop=True)
    if getattr(est, "family_", None) is not None:
        # A GLMM: fitted means on the response scale, Pearson residuals (y - mu) sqrt(w / V(mu)).
        from .._model.families import make_family

        family = make_family(est.family_, est.link_)
        mu = family.link.linkinv(est._predict_arrays(X, source, groups, offset))
        w = np.ones_like(y) if weights is None else weights
        return mu, (y - mu) * np.sqrt(w / family.variance(mu))
    fitted = est._predict_arrays(X, source, groups, None)  # y here is the response minus any offset
    residuals = y - fitted
    if offset is not None:
        fitted = fitted + offset
    if weights is not None:
        residuals = residuals * np.sqrt(weights)
    return fitted, residuals


def _scaled_residuals(est) -> pd.Series | None:
    """Quantiles (R's type 7) of the Pearson residuals divided by sigma, as lme4's summary."""
    data = getattr(est, "_training_data", None)
    if data is None or not est.sigma_ > 0:
        return None
    _, residuals = fitted_and_residuals(est, data)
    quantiles = np.quantile(residuals / est.sigma_, [0.0, 0.25, 0.5, 0.75, 1.0])
    return pd.Series(quantiles, index=["Min", "1Q", "Median", "3Q", "Max"])


def _random_effects_table(est) -> pd.DataFrame:
    max_p = max([len(t.columns) for t in est._fitted_terms] + [1])
    rows = []
    sigma2 = est.sigma_**2
    for index, term in enumerate(est._fitted_terms):
        cov = sigma2 * (term.lam @ term.lam.T)
        sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = cov / np.outer(sd, sd)
        for i, name in enumerate(term.columns):
            row = {"term": index, "group": term.factor_name, "name": name, "variance": cov[i, i], "std_dev": sd[i]}
            for j in range(1, max_p):
                row[f"corr_{j}"] = corr[i, j - 1] if j - 1 < i else np.nan
            rows.append(row)
    residual = {"term": len(est._fitted_terms), "group": "Residual", "name": None, "variance": sigma2, "std_dev": est.sigma_}
    rows.append(residual)
    columns = ["term", "group", "name", "variance", "std_dev"] + [f"corr_{j}" for j in range(1, max_p)]
    return pd.DataFrame(rows, columns=columns)


def _messages(est) -> list[str]:
    messages = []
    intercept, names_in = est._fixed_input_names()
    dropped = [name for name in (["(Intercept)"] if intercept else []) + names_in if name not in est.fixed_effects_.index]
    if dropped:
        messages.insert(0, f"fit warnings:\nfixed-effect model matrix is rank deficient so dropping {len(dropped)} column{'s' if len(dropped) > 1 else ''} / coefficient{'s' if len(dropped) > 1 else ''}")
    if est.singular_ or not est.converged_:
        status = "0 (OK)" if est.converged_ else "1 (did not converge)"
        messages.append(f"optimizer (L-BFGS-B) convergence code: {status}")
        if est.singular_:
            messages.append("boundary (singular) fit: see sklmm.SingularFitWarning")
        messages.append("")
    return messages


def _tested_fixed_effects(est, ddf: str) -> pd.DataFrame:
    """lmerTest's coefficient table: Estimate, Std. Error, df, t value, Pr(>|t|).

    A model without random effects (weighted least squares) gets the exact
    t tests, on n - p degrees of freedom, for either method.
    """
    from scipy import stats

    names = list(est.fixed_effects_.index)
    if est._fitted_terms:
        from .._inference.ddf import lmm_tests

        res = lmm_tests(est).t_test(np.eye(len(names)), ddf)
        estimate, se, df, t, p = res["estimate"], res["se"], res["df"], res["t"], res["p"]
    else:
        estimate = est.fixed_effects_["estimate"].to_numpy()
        se = est.fixed_effects_["std_error"].to_numpy()
        t = est.fixed_effects_["t_value"].to_numpy()
        df = np.full(len(names), float(est.n_obs_ - len(names)))
        p = 2.0 * stats.t.sf(np.abs(t), df)
    return pd.DataFrame({"Estimate": estimate, "Std. Error": se, "df": df, "t value": t, "Pr(>|t|)": p}, index=est.fixed_effects_.index)


def summarize(est, ddf="satterthwaite") -> ModelSummary:
    """Collect the summary of a fitted :class:`~sklmm.MixedLinearRegressor`.

    ``ddf=None`` gives lme4's summary (the doctest below); ``"satterthwaite"``
    or ``"kenward-roger"`` lmerTest's, whose fixed-effects table adds df and
    p values.

    Examples
    --------
    >>> from sklmm import MixedLinearRegressor
    >>> from sklmm.datasets import load_sleepstudy
    >>> X, y, groups = load_sleepstudy(return_X_y_groups=True)
    >>> model = MixedLinearRegressor(random_effects="(1 + Days | Subject)").fit(X, y, groups=groups)
    >>> print(model.summary(ddf=None))  # doctest: +NORMALIZE_WHITESPACE +ELLIPSIS
    Linear mixed model fit by REML ['MixedLinearRegressor']
    Formula: y ~ 1 + Days + (1 + Days | Subject)
    <BLANKLINE>
    REML criterion at convergence: 1743.6
    <BLANKLINE>
    Scaled residuals:
        Min      1Q  Median      3Q     Max
    -3.9536 -0.4634  0.0231  0.4634  5.1793
    <BLANKLINE>
    Random effects:
     Groups   Name        Variance Std.Dev. Corr
     Subject  (Intercept) 612...   24.74...
              Days         35.07    5.922   0.07
     Residual             654.94   25.592
    Number of obs: 180, groups:  Subject, 18
    <BLANKLINE>
    Fixed effects:
                Estimate Std. Error t value
    (Intercept)  251.405      6.825  36.838
    Days          10.467      1.546   6.771
    <BLANKLINE>
    Correlation of Fixed Effects:
         (Intr)
    Days -0.138
    <BLANKLINE>
    """
    from .._inference.ddf import check_ddf

    ddf = check_ddf(ddf, allow_none=True)
    if ddf is not None and est._fitted_terms and getattr(est, "_training_data", None) is None:
        cached = est.__dict__.get("_ddf_cache")
        key = "satterthwaite" if ddf == "satterthwaite" else "kenward-roger"
        if cached is None or cached[0] is not est.theta_ or key not in cached[1]:
            import warnings

            why = (
                "which a fit on Dask collections does not bring to the client"
                if getattr(est, "_fitted_on_dask", False)
                else "which is not saved when a model is pickled (unless the summary was computed before)"
            )
            warnings.warn(
                f"the {ddf} degrees of freedom need the data the model was fitted to, {why}: showing "
                "lme4's table without df and p values. Fit the model in memory on its data for them, "
                "or pass ddf=None.",
                UserWarning,
                stacklevel=3,
            )
            ddf = None
    reml = bool(est.reml)
    if ddf is None:
        fixed = est.fixed_effects_.rename(columns={"estimate": "Estimate", "std_error": "Std. Error", "t_value": "t value"})
    else:
        fixed = _tested_fixed_effects(est, ddf)
    cov = est.fixed_effects_cov_.to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(np.diag(cov))
        correlation = cov / np.outer(sd, sd)
    correlation = pd.DataFrame(correlation, index=est.fixed_effects_cov_.index, columns=est.fixed_effects_cov_.columns)
    if reml:
        criterion = pd.Series({"REML": est.objective_})
        title = "Linear mixed model fit by REML"
    else:
        n_params = len(est.fixed_effects_) + len(est.theta_) + 1
        criterion = pd.Series(
            {"AIC": est.aic_, "BIC": est.bic_, "logLik": est.log_likelihood_, "deviance": est.objective_, "df.resid": float(est.n_obs_ - n_params)}
        )
        title = "Linear mixed model fit by maximum likelihood "
    if ddf is not None:
        title += f". t-tests use {'Satterthwaite' if ddf == 'satterthwaite' else 'Kenward-Roger'}'s method"
    n_groups = {}
    for term in est._fitted_terms:
        n_groups.setdefault(term.factor_name, len(term.levels))
    data = getattr(est, "_training_data", None)
    return ModelSummary(
        method_title=title,
        formula=formula(est),
        criterion=criterion,
        scaled_residuals=_scaled_residuals(est),
        random_effects=_random_effects_table(est),
        n_obs=int(est.n_obs_),
        n_groups=pd.Series(n_groups, dtype=int),
        fixed_effects=fixed,
        fixed_effects_correlation=correlation,
        weighted=data is not None and data.weights is not None,
        weights_label=_weights_label(est),
        messages=_messages(est),
        ddf=ddf,
    )



# -- generalised linear mixed models (lme4's summary(glmer)) ------------------------------

#: R's ``symnum`` cut points and symbols for significance stars.
_STARS = ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, "."), (1.0, " "))
_SIGNIF_LEGEND = "Signif. codes:  0 \u2018***\u2019 0.001 \u2018**\u2019 0.01 \u2018*\u2019 0.05 \u2018.\u2019 0.1 \u2018 \u2019 1"


def format_pval(pv, digits: int = 3) -> list[str]:
    """R's ``format.pval(pv, digits)`` (as ``printCoefmat`` calls it, eps = machine epsilon).

    Examples
    --------
    >>> format_pval([1.468e-09, 0.0010677, 0.00047448, 0.00018181])
    ['1.47e-09', '0.001068', '0.000474', '0.000182']
    """
    pv = np.asarray(pv, dtype=float)
    eps = np.finfo(float).eps
    out = [""] * len(pv)
    small = pv < eps
    rest = np.flatnonzero(~small)
    if len(rest):
        values = pv[rest]
        expo = np.floor(np.log10(np.where(values > 0, values, 1e-50)))
        fixp = (expo >= -3) | ((expo == -4) & (digits > 1))
        for mask in (fixp, ~fixp):
            if mask.any():
                for i, text in zip(rest[mask], format_real(values[mask], digits)):
                    out[i] = text.strip()
    if small.any():
        d = max(1, digits - 2)
        if len(rest):
            nc = max(len(out[i]) for i in rest)
            if d > 1 and d + 6 > nc:
                d = max(1, nc - 7)
            sep = "" if d == 1 and nc <= 6 else " "
        else:
            sep = "" if d == 1 else " "
        for i in np.flatnonzero(small):
            out[i] = "<" + sep + format_real([eps], d)[0].strip()
    return out


def _stars(p: float) -> str:
    for cut, symbol in _STARS:
        if p <= cut:
            return symbol
    return " "


@dataclass
class GlmmSummary(ModelSummary):
    """A fitted GLMM's summary, as lme4's ``summary(glmer)``.

    As :class:`ModelSummary`, with ``family`` (e.g. ``"binomial  ( logit )"``),
    the criterion ``AIC``, ``BIC``, ``logLik``, ``deviance`` (-2 logLik, as
    lme4), ``df.resid``, Pearson residuals, no residual row in the random
    effects, and a fixed-effects table with ``z value`` and ``Pr(>|z|)``.

    Examples
    --------
    >>> from sklmm import MixedGLMRegressor
    >>> from sklmm.datasets import load_cbpp
    >>> X, y, groups = load_cbpp(return_X_y_groups=True)
    >>> size = load_cbpp()["size"]
    >>> model = MixedGLMRegressor(family="binomial", random_effects="(1 | herd)").fit(X, y, groups=groups, sample_weight=size)
    >>> print(model.summary())  # doctest: +NORMALIZE_WHITESPACE
    Generalized linear mixed model fit by maximum likelihood (Laplace
      Approximation) ['MixedGLMRegressor']
     Family: binomial  ( logit )
    Formula: y ~ 1 + period2 + period3 + period4 + (1 | herd)
    Weights: sample_weight
    <BLANKLINE>
         AIC      BIC   logLik deviance df.resid
       194.1    204.2    -92.0    184.1       51
    <BLANKLINE>
    Scaled residuals:
        Min      1Q  Median      3Q     Max
    -2.3818 -0.7888 -0.2024  0.5146  2.8796
    <BLANKLINE>
    Random effects:
     Groups Name        Variance Std.Dev.
     herd   (Intercept) 0.4125   0.6423
    Number of obs: 56, groups:  herd, 15
    <BLANKLINE>
    Fixed effects:
                Estimate Std. Error z value Pr(>|z|)
    (Intercept)  -1.3985     0.2321  -6.025 1.69e-09 ***
    period2      -0.9923     0.3066  -3.236 0.001210 **
    period3      -1.1287     0.3266  -3.456 0.000549 ***
    period4      -1.5803     0.4274  -3.698 0.000218 ***
    ---
    Signif. codes:  0 ‘***’ 0.001 ‘**’ 0.01 ‘*’ 0.05 ‘.’ 0.1 ‘ ’ 1
    <BLANKLINE>
    Correlation of Fixed Effects:
            (Intr) perid2 perid3
    period2 -0.364
    period3 -0.341  0.278
    period4 -0.261  0.212  0.197
    <BLANKLINE>
    """

    family: str = ""

    def _header_lines(self) -> list[str]:
        import textwrap

        title = textwrap.wrap(f"{self.method_title} ['{self.class_name}']", width=71)
        return ["\n  ".join(title), f" Family: {self.family}", f"Formula: {self.formula}"]

    def _fixed_effects_lines(self) -> list[str]:
        """``printCoefmat`` with z values, p values and significance stars."""
        table = self.fixed_effects.rename(columns={"z value": "t value"})
        base = ModelSummary._fixed_effects_lines(
            ModelSummary(**{**{f: getattr(self, f) for f in ModelSummary.__dataclass_fields__}, "fixed_effects": table})
        )
        header = base[0].replace("t value", "z value")
        p = self.fixed_effects["Pr(>|z|)"].to_numpy()
        p_text = format_pval(p, 3)
        width = max(len("Pr(>|z|)"), *(len(t) for t in p_text))
        stars = [_stars(v) for v in p]
        show = bool(np.any(p < 0.1))
        lines = [header + " " + "Pr(>|z|)".rjust(width) + ("    " if show else "")]
        for line, text, star in zip(base[1:], p_text, stars):
            lines.append(line + " " + text.rjust(width) + (" " + star.ljust(3) if show else ""))
        if show:
            lines.extend(["---", _SIGNIF_LEGEND])
        return lines


def summarize_glmm(est) -> GlmmSummary:
    """Collect the summary of a fitted GLMM estimator (lme4's ``summary(glmer)``)."""
    fit = est._fit_result
    fixed = est.fixed_effects_.rename(columns={"estimate": "Estimate", "std_error": "Std. Error", "z_value": "z value", "p_value": "Pr(>|z|)"})
    cov = est.fixed_effects_cov_.to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(np.diag(cov))
        correlation = cov / np.outer(sd, sd)
    correlation = pd.DataFrame(correlation, index=est.fixed_effects_cov_.index, columns=est.fixed_effects_cov_.columns)
    n_params = len(est.fixed_effects_) + len(est.theta_)
    criterion = pd.Series(
        {"AIC": est.aic_, "BIC": est.bic_, "logLik": est.log_likelihood_, "deviance": est.objective_, "df.resid": float(est.n_obs_ - n_params)}
    )
    approximation = "Laplace Approximation" if fit.nagq <= 1 else f"Adaptive Gauss-Hermite Quadrature, nAGQ = {fit.nagq}"
    if not est._fitted_terms:
        title = "Generalized linear model fit by maximum likelihood"
    else:
        title = f"Generalized linear mixed model fit by maximum likelihood ({approximation})"
    n_groups = {}
    for term in est._fitted_terms:
        n_groups.setdefault(term.factor_name, len(term.levels))
    data = getattr(est, "_training_data", None)
    table = _random_effects_table(est)
    table = table[table["group"] != "Residual"].reset_index(drop=True)
    summary = GlmmSummary(
        method_title=title,
        formula=formula(est),
        criterion=criterion,
        scaled_residuals=_pearson_quantiles(est, data),
        random_effects=table,
        n_obs=int(est.n_obs_),
        n_groups=pd.Series(n_groups, dtype=int),
        fixed_effects=fixed,
        fixed_effects_correlation=correlation,
        # a cbind() response's totals are prior weights, but lme4 prints a weights line only for weights=
        weighted=data is not None and data.weights is not None
        and (getattr(data, "trials", None) is None or not np.array_equal(data.weights, data.trials)),
        weights_label=_weights_label(est),
        messages=_messages(est),
        class_name=type(est).__name__,
        family=f"{est.family_}  ( {est.link_} )",
    )
    return summary


def _pearson_quantiles(est, data) -> pd.Series | None:
    """Quantiles of the Pearson residuals ``(y - mu) sqrt(w / V(mu))``, as lme4's summary."""
    if data is None:
        return None
    _, residuals = fitted_and_residuals(est, data)
    # lme4 keeps rows of weight 0 (a cbind() total of 0) in the fit, with Pearson residual 0
    residuals = np.concatenate([residuals, np.zeros(len(data.y) - len(residuals))])
    return pd.Series(np.quantile(residuals, [0.0, 0.25, 0.5, 0.75, 1.0]), index=["Min", "1Q", "Median", "3Q", "Max"])
