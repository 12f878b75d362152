"""F tests of the fixed-effects terms of one model (lmerTest's ``anova(fit, type, ddf)``) and of a contrast matrix.

The hypotheses are lmerTest 3.1-3's:

* type 1 (sequential): the rows of ``t(L)``, L the unit lower-triangular
  factor of Doolittle's LU decomposition of X'X (lmerTest's ``doolittle``),
  belonging to the term's columns;
* type 2: a term contained in no other term is tested marginally (its
  columns' coefficients all zero); a term contained in another is tested
  after every term that does not contain it (Doolittle on X'X with the
  term and the terms containing it moved last);
* type 3: lmerTest's ``extract_contrasts_type3``: the full-dummy design of
  each term (``model.matrix(~ 0 + term)``), mapped to the coefficients
  through the pseudo-inverse of X, and each term's hypothesis made orthogonal
  to those of the terms containing it.  With one term, or one column, every
  type is type 1 (as lmerTest).

A term contains another when it has all the other's variables and more,
with the same numeric variables (lmerTest's ``term_contain``).  On an
X-form fit every column is its own numeric term, so no term contains
another, and types 2 and 3 test each coefficient alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .ddf import check_ddf, lmm_tests

ANOVA_COLUMNS = ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]
INTERCEPT = "(Intercept)"


@dataclass
class TermStructure:
    """The fixed part's terms over the estimated (kept) columns.

    ``assign[j]`` is 0 for the intercept and k for the k-th term label
    (1-based), as R's ``assign``; ``variables[label]`` the term's variables
    and ``numerics[label]`` the numeric ones among them.
    """

    names: list
    labels: list
    assign: np.ndarray
    variables: dict  # the variables R codes by contrasts in the term (its "factors" entries 1)
    numerics: dict
    all_variables: dict = field(default_factory=dict)  # every variable of the term

    @property
    def has_intercept(self) -> bool:
        return bool(np.any(self.assign == 0))

    def columns(self, label: str) -> np.ndarray:
        return np.flatnonzero(self.assign == self.labels.index(label) + 1)

    def containment(self) -> dict:
        """lmerTest's ``containment``: for each term, the terms that contain it."""
        out = {}
        for a in self.labels:
            va, na = set(self.variables[a]), set(self.numerics[a])
            out[a] = [b for b in self.labels if va <= set(self.variables[b]) and set(self.variables[b]) - va and na == set(self.numerics[b])]
        return out


def term_structure(est) -> TermStructure:
    """Terms of a fitted model: the formula's (``est._design``) or, for an X-form fit, one per column."""
    names = list(est.fixed_effects_.index)
    design = getattr(est, "_design", None)
    if design is None:
        labels = [n for n in names if n != INTERCEPT]
        assign = np.array([0 if n == INTERCEPT else labels.index(n) + 1 for n in names])
        return _with_all_variables(TermStructure(names, labels, assign, {n: [n] for n in labels}, {n: [n] for n in labels}))
    all_names = list(design.fixed_names)
    full_assign = np.asarray(design.assign)
    assign = np.array([full_assign[all_names.index(n)] for n in names])
    labels = list(design.term_labels)
    factors = set(getattr(design, "factor_levels", {}) or {})
    sets = {frozenset(label.split(":")) for label in labels}
    variables, numerics = {}, {}
    for label in labels:
        # R's terms "factors" matrix: a variable is coded 1 (by contrasts) in a term when the
        # term without it is empty or in the model, else 2 (by dummies); lmerTest's
        # term_contain reads the variables coded 1 only.
        parts = label.split(":")
        coded = [v for v in parts if not (frozenset(parts) - {v}) or (frozenset(parts) - {v}) in sets]
        variables[label] = coded
        numerics[label] = [v for v in coded if v not in factors]
    return _with_all_variables(TermStructure(names, labels, assign, variables, numerics))


def _with_all_variables(terms: TermStructure) -> TermStructure:
    terms.all_variables = {label: label.split(":") for label in terms.labels}
    return terms


def doolittle_L(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """The unit lower-triangular L of lmerTest's ``doolittle(x)`` (entries below eps zeroed)."""
    n = x.shape[0]
    L = np.eye(n)
    U = np.zeros((n, n))
    for i in range(n):
        U[i, :] = x[i, :] - L[i, :i] @ U[:i, :]
        if i + 1 < n:
            col = x[i + 1 :, i] - L[i + 1 :, :i] @ U[:i, i]
            L[i + 1 :, i] = 0.0 if abs(U[i, i]) < eps else col / U[i, i]
    L[np.abs(L) < eps] = 0.0
    return L


def type1_contrasts(XtX: np.ndarray, terms: TermStructure) -> dict:
    p = XtX.shape[0]
    if p == 0 or (p == 1 and terms.has_intercept):
        return {label: np.zeros((0, p)) for label in terms.labels}
    Lt = np.ones((1, 1)) if p == 1 else doolittle_L(XtX).T
    return {label: Lt[terms.columns(label)] for label in terms.labels}


def _marginal_contrasts(terms: TermStructure, which) -> dict:
    eye = np.eye(len(terms.names))
    return {label: eye[terms.columns(label)] for label in which}


def type2_contrasts(XtX: np.ndarray, terms: TermStructure) -> dict:
    """lmerTest's ``get_contrasts_type2_unfolded``."""
    p = XtX.shape[0]
    if p <= 1 or len(terms.labels) <= 1:
        return type1_contrasts(XtX, terms)
    contained = terms.containment()
    out = _marginal_contrasts(terms, [t for t in terms.labels if not contained[t]])
    for term in terms.labels:
        if not contained[term]:
            continue
        cols = np.concatenate([terms.columns(t) for t in [term, *contained[term]]])
        order = np.concatenate([np.setdiff1d(np.arange(p), cols, assume_unique=True), cols])
        Lc = doolittle_L(XtX[np.ix_(order, order)]).T
        rows = np.flatnonzero(np.isin(order, terms.columns(term)))
        back = np.empty(p, dtype=int)
        back[order] = np.arange(p)
        out[term] = Lc[rows][:, back]
    return {label: out[label] for label in terms.labels}


def type3_contrasts(X: np.ndarray, XtX: np.ndarray, terms: TermStructure, full_dummy) -> dict:
    """lmerTest's ``extract_contrasts_type3`` for treatment-coded X.

    ``full_dummy(label)`` returns the term's full-dummy columns
    (``model.matrix(~ 0 + term)``, n x k) and their R names.  As lmerTest,
    the hypothesis of a term is read off the rows of the map from the
    full-dummy columns to the coefficients that carry the coefficients' names.
    """
    p = X.shape[1]
    if p <= 1 or len(terms.labels) <= 1:
        return type1_contrasts(XtX, terms)
    blocks, names = [], []
    if terms.has_intercept:
        blocks.append(np.ones((X.shape[0], 1)))
        names.append(INTERCEPT)
    for label in terms.labels:
        block, block_names = full_dummy(label)
        blocks.append(block)
        names.extend(block_names)
    rdX = np.column_stack(blocks)
    L = _zapsmall(np.linalg.pinv(X) @ rdX).T  # rows: full-dummy columns; columns: coefficients
    contained = terms.containment()
    order = sorted(terms.labels, key=lambda t: -len(terms.all_variables[t]))  # R's order(decreasing = TRUE), stable
    for term in order:
        contains = contained[term]
        if contains:
            cols_c = np.concatenate([terms.columns(t) for t in contains])
            cols_t = terms.columns(term)
            Xc = L[:, cols_c]
            coef, *_ = np.linalg.lstsq(Xc, L[:, cols_t], rcond=None)
            L[:, cols_t] = _zapsmall(L[:, cols_t] - Xc @ coef)
    position = {name: i for i, name in enumerate(names)}
    missing = [name for name in terms.names if name not in position]
    if missing:
        raise ValueError(f"type 3 hypotheses: no full-dummy column named {missing} (coefficient names {terms.names})")
    L = L[[position[name] for name in terms.names]]
    out = {}
    for label in terms.labels:
        Lt = L[:, terms.columns(label)].T
        out[label] = Lt[np.sum(np.abs(Lt), axis=1) > 1e-8]
    return out


def _zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    """R's ``zapsmall``: round to ``digits`` decimals relative to the largest magnitude."""
    finite = np.abs(x[np.isfinite(x)])
    mx = finite.max() if finite.size else 0.0
    if mx == 0:
        return x
    return np.round(x, int(max(0, digits - np.ceil(np.log10(mx)))))


def _model_matrix(est, tests) -> np.ndarray:
    return tests.prepared.design  # the estimated columns, rows with weight 0 left out


class _MissingColumn(Exception):
    pass


def _full_dummy_factory(est, terms: TermStructure, X: np.ndarray):
    """``model.matrix(~ 0 + term)`` for each term of the model: (columns, R names).

    Formula fits: each full-dummy column is built from the model matrix's own
    (treatment-coded, R-named) columns, an indicator of a factor's first
    level being 1 minus those of the others (so ``A1:x = x - A2:x - A3:x``);
    this needs the term's marginal terms in the model, as R's hierarchy
    usually has them.  Otherwise the training data's columns are used.
    """
    design = getattr(est, "_design", None)
    if design is None:  # X-form: every term is one numeric column
        return lambda label: (X[:, terms.columns(label)], [label])
    levels = {k: [str(v) for v in vals] for k, vals in design.factor_levels.items()}
    index = {name: j for j, name in enumerate(terms.names)}

    def monomial(label, pieces: dict, stack: frozenset = frozenset()) -> np.ndarray:
        """The product of a term's numeric variables and the indicators in ``pieces`` (var -> level).

        ``stack``: the monomials being expanded above this one (an expansion that
        comes back to one of them cannot succeed).
        """
        key = frozenset(pieces.items())
        if key in stack:
            raise _MissingColumn(str(dict(pieces)))
        stack = stack | {key}
        parts = [v if v not in levels else f"{v}{pieces[v]}" for v in terms.all_variables[label] if v not in levels or v in pieces]
        name = ":".join(parts) if parts else INTERCEPT
        if name in index:
            return X[:, index[name]]
        if not parts:  # no intercept column: 1 is the sum of a fully coded factor's indicators
            for f in levels:
                full = [f"{f}{level}" for level in levels[f]]
                if all(c in index for c in full):
                    return X[:, [index[c] for c in full]].sum(axis=1)
            raise _MissingColumn(name)
        # an indicator not in X: 1 minus the factor's other levels (try each factor in turn)
        for f in pieces:
            rest = {g: v for g, v in pieces.items() if g != f}
            try:
                value = monomial(label, rest, stack).copy()
                for other in levels[f]:
                    if other != pieces[f]:
                        value -= monomial(label, {**rest, f: other}, stack)
                return value
            except _MissingColumn:
                continue
        raise _MissingColumn(name)

    def cells(label):
        factors = [v for v in terms.all_variables[label] if v in levels]
        combos = [{}]
        for f in factors:  # the first factor varies fastest, as R's model.matrix
            combos = [{**c, f: level} for level in levels[f] for c in combos]
        names = [":".join(v if v not in levels else f"{v}{c[v]}" for v in terms.all_variables[label]) for c in combos]
        return combos, names

    def full_dummy(label):
        combos, names = cells(label)
        try:
            return np.column_stack([monomial(label, c) for c in combos]), names
        except _MissingColumn:
            pass
        frame = _training_frame(est)
        if frame is None:
            raise ValueError(
                f"type 3 tests of the term {label!r} need treatment-coded factors (R's default) and the "
                "term's marginal terms in the model; with other contrasts (e.g. C(f, contr.sum)) or a "
                "term without its marginal terms, use type=1 or type=2, or model.test(L) with your own L"
            )
        columns = []
        for c in combos:
            value = np.ones(X.shape[0])
            for v in terms.all_variables[label]:
                value = value * (frame[v].astype(str).to_numpy() == c[v] if v in levels else frame[v].to_numpy(dtype=float))
            columns.append(value)
        return np.column_stack(columns), names

    return full_dummy


def _training_frame(est):
    for name in ("_training_frame", "_data_frame", "_fit_frame"):
        frame = getattr(est, name, None)
        if isinstance(frame, pd.DataFrame):
            return frame
    return None


def term_contrasts(est, type: int) -> dict:
    """The hypothesis matrices of each term (over the kept fixed effects) for an ANOVA type."""
    tests = lmm_tests(est)
    terms = term_structure(est)
    X = _model_matrix(est, tests)
    XtX = X.T @ X
    if type == 1:
        return type1_contrasts(XtX, terms)
    if type == 2:
        return type2_contrasts(XtX, terms)
    return type3_contrasts(X, XtX, terms, _full_dummy_factory(est, terms, X))


def single_model_anova(est, type=3, ddf="satterthwaite"):
    """lmerTest's F table per model term; see :func:`sklmm.anova`."""
    from .anova import AnovaTable

    ddf = check_ddf(ddf)
    type = _check_type(type)
    tests = lmm_tests(est)
    rows = {}
    for label, L in term_contrasts(est, type).items():
        rows[label] = tests.f_test(L, ddf) if L.shape[0] else dict.fromkeys(ANOVA_COLUMNS, np.nan)
    table = AnovaTable(pd.DataFrame.from_dict(rows, orient="index", columns=ANOVA_COLUMNS))
    table.index = pd.Index(list(rows), dtype=object)
    method = "Satterthwaite's" if ddf == "satterthwaite" else "Kenward-Roger's"
    table.attrs["heading"] = [f"Type {'I' * type} Analysis of Variance Table with {method} method"]
    table.attrs["note"] = None
    return table


def _check_type(type) -> int:
    roman = {"I": 1, "II": 2, "III": 3}
    if isinstance(type, str) and type.upper() in roman:
        return roman[type.upper()]
    if type in (1, 2, 3) and not isinstance(type, bool):
        return int(type)
    raise ValueError(f"type={type!r}: use 1, 2 or 3 (or 'I', 'II', 'III')")


def contrast_test(est, L, ddf="satterthwaite") -> pd.DataFrame:
    """The test of ``L beta = 0``; see :meth:`MixedLinearRegressor.test`."""
    ddf = check_ddf(ddf)
    tests = lmm_tests(est)
    names = tests.names
    if isinstance(L, pd.DataFrame):
        unknown = [c for c in L.columns if c not in names]
        if unknown:
            raise ValueError(f"L has columns {unknown} that are not fixed effects of the model {names}")
        index = L.index
        L = L.reindex(columns=names, fill_value=0.0).to_numpy(dtype=float)
    elif isinstance(L, pd.Series):
        unknown = [c for c in L.index if c not in names]
        if unknown:
            raise ValueError(f"L names {unknown}, which are not fixed effects of the model {names}")
        L = L.reindex(names, fill_value=0.0).to_numpy(dtype=float)[None, :]
        index = None
    else:
        L = np.atleast_2d(np.asarray(L, dtype=float))
        index = None
    if L.ndim != 2 or L.shape[1] != len(names):
        raise ValueError(f"L must have one column per estimated fixed effect ({len(names)}: {names}); got shape {L.shape}")
    if not np.all(np.isfinite(L)):
        raise ValueError("L has non-finite entries")
    if L.shape[0] == 1:
        res = tests.t_test(L, ddf)
        frame = pd.DataFrame({"Estimate": res["estimate"], "Std. Error": res["se"], "df": res["df"], "t value": res["t"], "Pr(>|t|)": res["p"]})
        if index is not None:
            frame.index = index
        return frame
    return pd.DataFrame([tests.f_test(L, ddf)], columns=ANOVA_COLUMNS)
