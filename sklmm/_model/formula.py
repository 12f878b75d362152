"""lme4 formulas: ``"Reaction ~ Days + I(Days^2) + (Days | Subject)"`` read as lme4 reads them.

A formula is split, as lme4's ``findbars``/``nobars`` split it, into

* the response (left of ``~``; absent in a one-sided formula);
* the fixed part: every term that is not a bar term nor ``offset()``, built
  into a model matrix by formulaic (Wilkinson formulas with R's semantics:
  intercept rules, ``0 +`` and ``- 1``, factors with treatment contrasts,
  ``a:b``, ``a*b``, ``(a + b)^2``, ``I()``, numpy functions, stateful
  transforms such as ``center()`` and ``scale()``, ``C(f, contr.sum)``);
* ``offset(expr)`` terms, summed into a known part of the linear predictor;
* the bar terms ``(lhs | group)`` and ``(lhs || group)``: each ``lhs`` is a
  formula of its own (its columns may be factors, transforms or
  interactions: ``(1 + Machine | Worker)``, ``(0 + Machine | Worker)``,
  ``(log(x) | g)``), each ``group`` a grouping factor, an interaction
  ``a:b`` or a nesting ``a/b`` of the data's columns.

R's syntax is translated for formulaic (``^`` inside a function call is a
power, ``C(f, sum)`` names R's ``contr.sum``) and every column is named as
R's ``model.matrix`` names it (:func:`r_column_name`): ``(Intercept)``,
``SexMale``, ``age:SexMale``, ``I(Days^2)``, ``log(x)``, ``MachineB``.

:class:`FormulaDesign` holds what fit learnt (formulaic's model specs, with
factor levels and stateful-transform state) so that new data are encoded as
the training data were.
"""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .bars import INTERCEPT, FormulaError, TermSpec, parse_random_effects

#: Functions a formula may call besides formulaic's own (``log``, ``exp``,
#: ``center``, ``scale``, ``poly``, ``C``, ``I``, ...): numpy's elementwise math.
FUNCTIONS = {
    name: getattr(np, name)
    for name in (
        "sqrt", "exp", "log", "log10", "log2", "log1p", "expm1", "abs", "sin", "cos", "tan",
        "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "floor", "ceil", "round", "sign",
    )
}
FUNCTIONS.update({"asin": np.arcsin, "acos": np.arccos, "atan": np.arctan, "pi": np.pi})

#: R's short names of contrasts in ``C(f, sum)``, as R's ``C`` accepts them.
_R_CONTRASTS = {"sum": "contr.sum", "helmert": "contr.helmert", "poly": "contr.poly", "treatment": "contr.treatment"}


@dataclass(frozen=True)
class Bar:
    """One ``(lhs | group)`` term of a formula, as written."""

    lhs: str
    group: str
    double: bool  # ``||``: uncorrelated


@dataclass(frozen=True)
class SplitFormula:
    """A formula split into its parts (see :func:`split_formula`)."""

    text: str
    response: str | None
    fixed: str
    offsets: tuple[str, ...]
    bars: tuple[Bar, ...]


def split_formula(text: str) -> SplitFormula:
    """Split an lme4 formula into response, fixed part, offsets and bar terms.

    Parameters
    ----------
    text : str
        ``"y ~ fixed + (lhs | g)"``, or one-sided ``"~ fixed + (lhs | g)"``.

    Returns
    -------
    SplitFormula

    Examples
    --------
    >>> parts = split_formula("Reaction ~ Days + (Days | Subject)")
    >>> parts.response, parts.fixed, parts.bars[0]
    ('Reaction', 'Days', Bar(lhs='Days', group='Subject', double=False))
    >>> split_formula("y ~ (1 | g) + offset(log(t))").fixed
    '1'
    """
    if not isinstance(text, str):
        raise TypeError(f"formula must be a string such as 'y ~ x + (1 | g)', got {type(text).__name__}")
    depth_zero_tilde = [i for i, depth in _depths(text) if text[i] == "~" and depth == 0]
    if len(depth_zero_tilde) != 1:
        raise FormulaError(
            text,
            depth_zero_tilde[1] if len(depth_zero_tilde) > 1 else 0,
            f"a formula needs exactly one '~' (response ~ terms, or ~ terms): {text!r}",
        )
    tilde = depth_zero_tilde[0]
    response = text[:tilde].strip() or None
    rhs = text[tilde + 1 :]
    pieces = _top_level_terms(rhs, text, tilde + 1)
    fixed, offsets, bars = [], [], []
    for sign, piece, start in pieces:
        stripped = piece.strip()
        bar = _as_bar(stripped)
        if bar is not None:
            if sign == "-":
                raise FormulaError(text, start, f"a random-effects term cannot be subtracted: {stripped!r}")
            bars.append(bar)
        elif re.fullmatch(r"offset\s*\(.*\)", stripped, re.S):
            if sign == "-":
                raise FormulaError(text, start, f"an offset cannot be subtracted: {stripped!r}")
            offsets.append(stripped[stripped.index("(") + 1 : -1].strip())
        elif stripped:
            fixed.append((sign, stripped))
    fixed_text = " ".join(f"{sign} {term}" for sign, term in fixed).strip()
    if fixed_text.startswith("+ "):
        fixed_text = fixed_text[2:]
    if not fixed_text:
        fixed_text = "1"
    elif fixed_text.startswith("- "):
        fixed_text = "1 " + fixed_text
    if any("|" in term for _, term in fixed):
        raise FormulaError(text, text.index("|"), f"a '|' outside a parenthesised random-effects term: {text!r}")
    return SplitFormula(text, response, fixed_text, tuple(offsets), tuple(bars))


def _depths(text: str):
    depth = 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
            yield i, depth - 1
            continue
        if char == ")":
            depth -= 1
        yield i, depth


def _top_level_terms(rhs: str, text: str, offset: int) -> list[tuple[str, str, int]]:
    """Split at the ``+`` and ``-`` outside parentheses: (sign, term, position)."""
    pieces, depth, start, sign = [], 0, 0, "+"
    for i, char in enumerate(rhs):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise FormulaError(text, offset + i, f"unbalanced ')' in formula {text!r}")
        elif char in "+-" and depth == 0 and not _inside_number(rhs, i):
            pieces.append((sign, rhs[start:i], offset + start))
            sign, start = char, i + 1
    if depth != 0:
        raise FormulaError(text, offset + rhs.rfind("("), f"unbalanced '(' in formula {text!r}")
    pieces.append((sign, rhs[start:], offset + start))
    return [p for p in pieces if p[1].strip() or p[0] == "-"]


def _inside_number(text: str, i: int) -> bool:
    """A sign that belongs to a number's exponent (``1e-3``)."""
    return i >= 2 and text[i - 1] in "eE" and text[i - 2].isdigit()


def _as_bar(term: str) -> Bar | None:
    """``(lhs | group)`` as a Bar; None for any other term."""
    if not (term.startswith("(") and term.endswith(")")):
        return None
    inner = term[1:-1]
    depth = 0
    for i, char in enumerate(inner):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                return None  # "(a) + (b)" is not one parenthesised term
        elif char == "|" and depth == 0:
            double = inner[i + 1 : i + 2] == "|"
            group = inner[i + (2 if double else 1) :].strip()
            return Bar(inner[:i].strip(), group, double)
    return None


# -- R syntax to formulaic, and formulaic's names back to R's -------------------------


def to_formulaic(expression: str) -> str:
    """R formula text as formulaic reads it: ``^`` inside a call is a power; ``C(f, sum)``.

    At the formula level ``(a + b)^2`` stays an interaction power, as in R.
    """
    out, stack = [], []  # stack: for each open parenthesis, whether it opens a call
    i = 0
    while i < len(expression):
        char = expression[i]
        if char == "(":
            before = "".join(out).rstrip()
            stack.append(bool(before) and (before[-1].isalnum() or before[-1] in "._"))
        elif char == ")":
            if stack:
                stack.pop()
        elif char == "^" and any(stack):
            out.append("**")
            i += 1
            continue
        out.append(char)
        i += 1
    text = "".join(out)
    # R's factor(x) / as.factor(x) is formulaic's C(x) (named back as factor(x), see r_deparse)
    text = re.sub(r"(?<![\w.])(?:as\.)?factor\(", "C(", text)
    return re.sub(
        r"\bC\(\s*([^,()]+?)\s*,\s*(sum|helmert|poly|treatment)\s*\)",
        lambda m: f"C({m.group(1)}, {_R_CONTRASTS[m.group(2)]})",
        text,
    )


_PRECEDENCE = {ast.Pow: 7, ast.Mult: 5, ast.Div: 5, ast.Mod: 5, ast.FloorDiv: 5, ast.Add: 4, ast.Sub: 4}
_R_OPERATOR = {ast.Pow: "^", ast.Mult: " * ", ast.Div: "/", ast.Mod: " %% ", ast.FloorDiv: " %/% ", ast.Add: " + ", ast.Sub: " - "}
_R_COMPARE = {ast.Gt: " > ", ast.GtE: " >= ", ast.Lt: " < ", ast.LtE: " <= ", ast.Eq: " == ", ast.NotEq: " != "}


def r_deparse(expression: str) -> str:
    """An expression as R's ``deparse`` prints it: ``I(Days ** 2)`` -> ``I(Days^2)``.

    R puts spaces around ``+ - * ==`` and none around ``^ / :``; arguments
    are separated by ``", "``.

    Examples
    --------
    >>> r_deparse("I(Days ** 2)"), r_deparse("log(x + 1)"), r_deparse("C(f, contr.sum)")
    ('I(Days^2)', 'log(x + 1)', 'C(f, contr.sum)')
    """
    try:
        node = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError:
        return expression
    return _deparse(node)


def _deparse(node, parent: int = 0) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_deparse(node.value, 9)}.{node.attr}"
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        if isinstance(value, str):
            return '"' + value + '"'
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return "-" + _deparse(node.operand, 6)
    if isinstance(node, ast.BinOp) and type(node.op) in _PRECEDENCE:
        own = _PRECEDENCE[type(node.op)]
        right_own = own + (0 if isinstance(node.op, ast.Pow) else 1)
        left_own = own + (1 if isinstance(node.op, ast.Pow) else 0)
        text = _deparse(node.left, left_own) + _R_OPERATOR[type(node.op)] + _deparse(node.right, right_own)
        return f"({text})" if own < parent else text
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _R_COMPARE:
        text = _deparse(node.left, 3) + _R_COMPARE[type(node.ops[0])] + _deparse(node.comparators[0], 3)
        return f"({text})" if parent > 2 else text
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "C" and len(node.args) == 1 and not node.keywords:
        return f"factor({_deparse(node.args[0])})"  # R's factor(x), which to_formulaic made C(x)
    if isinstance(node, ast.Call):
        args = [_deparse(a) for a in node.args] + [f"{k.arg} = {_deparse(k.value)}" for k in node.keywords]
        return f"{_deparse(node.func, 9)}({', '.join(args)})"
    return ast.unparse(node)


# -- the design ---------------------------------------------------------------------


@dataclass
class _Block:
    """One formulaic model spec and the R names of its columns."""

    spec: object  # formulaic.ModelSpec (fitted: levels and transform state)
    names: list[str]
    intercept: np.ndarray  # bool per column: the intercept column
    order: dict = field(default_factory=dict)  # factor -> first appearance in the formula (R's variable order)


@dataclass
class FormulaDesign:
    """What fit learnt from a formula and its data, to encode training and new data alike.

    Attributes
    ----------
    formula : SplitFormula
    fixed_names : list of str
        The fixed-effects columns as lme4 names them, ``"(Intercept)"`` first
        when the model has one.
    term_labels : list of str
        R's term labels of the fixed part (``"age"``, ``"Sex"``, ``"age:Sex"``).
    assign : ndarray of int
        R's ``assign``: for each fixed column, 0 for the intercept, else the
        1-based position of its term in ``term_labels``.
    factor_levels : dict of str to list
        Levels of each factor the fixed part uses, by its expression.
    variable_names : list of str
        Data columns the fixed part uses.
    specs : list of TermSpec
        Random-effects terms; ``positions`` index :meth:`slopes` columns.
    group_columns : list of str
        Data columns that form grouping factors.
    """

    formula: SplitFormula
    fixed: _Block
    random: list[_Block]
    offsets: list[object]
    specs: list[TermSpec]
    group_columns: list[str]
    term_labels: list[str] = field(default_factory=list)
    assign: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    factor_levels: dict = field(default_factory=dict)
    variable_names: list[str] = field(default_factory=list)

    # -- construction ------------------------------------------------------------

    @classmethod
    def from_data(cls, formula: str, data: pd.DataFrame, *, one_sided: bool, transform_state: dict | None = None) -> FormulaDesign:
        """Parse ``formula`` and learn its encodings from ``data`` (the training data).

        Parameters
        ----------
        formula : str
        data : DataFrame
            Every column the formula names.
        one_sided : bool
            The estimator's ``formula=`` is one-sided (y is passed to fit);
            :func:`sklmm.lmer`'s is two-sided.
        transform_state : dict, optional
            Stateful transforms' state already known, by formulaic's
            expression (``{"scale(x)": {"ddof": 1, "center": m, "scale": s}}``),
            used instead of learning it from ``data`` (a Dask fit computes it
            over all partitions, :mod:`sklmm._dask.formula`).
        """
        parts = split_formula(formula)
        if one_sided and parts.response is not None:
            raise ValueError(
                f"formula={formula!r} has a response ({parts.response!r}) left of '~'; the estimator's "
                "formula is one-sided, as y is passed to fit: write it as "
                f"'~ {formula.split('~', 1)[1].strip()}', or use sklmm.lmer(formula, data) for a two-sided formula"
            )
        if not one_sided and parts.response is None:
            raise ValueError(f"formula={formula!r} has no response: write 'y ~ ...' (the response column left of '~')")
        frame = _prepare_data(data, "data" if not one_sided else "X")
        state = transform_state
        fixed = _build_block(parts.fixed, frame, "the fixed part", state=state)
        offsets = [_build_block(f"0 + I({e})", frame, f"offset({e})", treat_as_offset=True, state=state).spec for e in parts.offsets]

        specs: list[TermSpec] = []
        random: list[_Block] = []
        group_columns: list[str] = []
        n_slopes = 0
        for bar in parts.bars:
            factor_lists = _grouping_factors(bar, parts.text)
            for name in (n for fl in factor_lists for n in fl):
                if name not in frame.columns:
                    raise ValueError(
                        f"the term ({bar.lhs} {'||' if bar.double else '|'} {bar.group}) names the grouping "
                        f"factor {name!r}, which is not a column of the data (columns: {list(map(str, data.columns))})"
                    )
                if name not in group_columns:
                    group_columns.append(name)
            pieces = _double_bar_pieces(bar.lhs, frame, state) if bar.double else [bar.lhs]
            for piece in pieces:
                block = _build_block(piece, frame, f"the random-effects term ({bar.lhs} | {bar.group})", state=state)
                if not block.names:
                    raise ValueError(f"the random-effects term ({bar.lhs} | {bar.group}) has no columns")
                random.append(block)
                positions = []
                for is_intercept in block.intercept:
                    positions.append(None if is_intercept else n_slopes)
                    n_slopes += 0 if is_intercept else 1
                # (Intercept) first, as lme4 orders a term's columns
                order = sorted(range(len(block.names)), key=lambda j: not block.intercept[j])
                for factors in factor_lists:
                    specs.append(
                        TermSpec(
                            factors=factors,
                            columns=tuple(block.names[j] for j in order),
                            positions=tuple(positions[j] for j in order),
                        )
                    )
        design = cls(parts, fixed, random, offsets, specs, group_columns)
        design._describe_fixed(frame)
        return design

    def _describe_fixed(self, frame: pd.DataFrame) -> None:
        spec = self.fixed.spec
        labels, assign = [], np.zeros(len(self.fixed.names), dtype=int)
        for structure in spec.structure:
            term = structure.term
            factors = list(term.factors)
            if len(factors) == 1 and str(factors[0].expr) == "1":
                continue
            ordered = sorted(factors, key=lambda f: self.fixed.order.get(str(f.expr), 0))
            labels.append(":".join(r_deparse(str(f.expr)) for f in ordered))
            for column in structure.columns:
                assign[spec.column_names.index(column)] = len(labels)
        self.term_labels, self.assign = labels, assign
        self.factor_levels = {
            r_deparse(str(factor)): list(state.levels) for factor, state in spec.factor_contrasts.items()
        }
        self.variable_names = sorted(str(v) for v in spec.required_variables if str(v) in frame.columns)

    # -- encoding data -----------------------------------------------------------------

    @property
    def fixed_names(self) -> list[str]:
        return list(self.fixed.names)

    @property
    def has_intercept(self) -> bool:
        return bool(self.fixed.intercept.any())

    @property
    def required_columns(self) -> list[str]:
        """Every data column the formula needs (response excluded)."""
        return sorted(set(self.group_columns) | set(self._required_without_groups()))

    def check_columns(self, data, argument: str, require_groups: bool = True) -> pd.DataFrame:
        """``data`` as a DataFrame holding every column the formula needs, or a clear error.

        With ``require_groups=False`` (prediction) grouping columns may be
        absent: their random effects then contribute nothing.
        """
        if not isinstance(data, pd.DataFrame):
            raise TypeError(
                f"{argument} must be a pandas DataFrame holding the columns the formula names "
                f"({self.required_columns}), got {type(data).__name__}"
            )
        columns = {str(c) for c in data.columns}
        needed = self.required_columns if require_groups else self._required_without_groups()
        missing = [c for c in needed if c not in columns]
        if missing:
            raise ValueError(
                f"{argument} has no column(s) {missing}, which the formula {self.formula.text!r} uses "
                f"(its columns: {list(map(str, data.columns))})"
            )
        return _prepare_data(data, argument)

    def _required_without_groups(self) -> list[str]:
        needed = set()
        for block in [self.fixed, *self.random]:
            needed |= {str(v) for v in block.spec.required_variables}
        for spec in self.offsets:
            needed |= {str(v) for v in spec.required_variables}
        return sorted(needed - set(FUNCTIONS))

    def encode(self, data, argument: str = "X", require_groups: bool = True) -> Encoded:
        """Every matrix the model needs for ``data``: fixed part, slopes, offset, groups.

        Parameters
        ----------
        data : DataFrame
            Holding every column the formula uses (clear errors otherwise:
            a missing column, a missing value, a factor level not seen in fit).
        argument : str
            How the caller calls ``data``, for messages.
        """
        frame = self.check_columns(data, argument, require_groups)
        fixed = _materialize(self.fixed, frame, "the fixed part")
        parts = [_materialize(block, frame, "a random-effects term")[:, ~block.intercept] for block in self.random]
        parts = [part for part in parts if part.shape[1]]
        slopes = np.column_stack(parts) if parts else np.empty((len(frame), 0))
        offset = None
        if self.offsets:
            offset = np.zeros(len(frame))
            for spec in self.offsets:
                offset += _as_numpy(spec.get_model_matrix(frame, context=FUNCTIONS, na_action="raise"))[:, 0]
        present = [name for name in self.group_columns if name in frame.columns]
        groups = frame[present].reset_index(drop=True) if self.group_columns else None
        return Encoded(fixed[:, ~self.fixed.intercept], fixed, slopes, offset, groups)

    def fixed_matrix(self, data) -> np.ndarray:
        """The fixed-effects model matrix for ``data``, intercept included, columns :attr:`fixed_names`."""
        frame = self.check_columns(data, "data")
        return _materialize(self.fixed, frame, "the fixed part")

    def fixed_columns_without_intercept(self) -> list[str]:
        return [n for n, i in zip(self.fixed.names, self.fixed.intercept) if not i]

    def offset(self, data) -> np.ndarray | None:
        """The sum of the ``offset()`` terms for ``data``, or None without any."""
        return self.encode(data, "data").offset if self.offsets else None



def evaluate_response(expression: str, data: pd.DataFrame) -> np.ndarray:
    """The response of a two-sided formula on ``data``: a column, or an expression such as ``log(y)``."""
    frame = _prepare_data(data, "data")
    if expression in frame.columns:
        return np.asarray(frame[expression])
    block = _build_block(f"0 + I({expression})", frame, f"the response {expression!r}", treat_as_offset=True)
    return _materialize(block, frame, "the response")[:, 0]


def cbind_arguments(expression: str) -> tuple[str, str] | None:
    """The two columns of a ``cbind(successes, failures)`` response, or None for any other response.

    Each argument is an expression of its own (``size - incidence``),
    evaluated as a response is (:func:`evaluate_response`).

    Examples
    --------
    >>> cbind_arguments("cbind(incidence, size - incidence)")
    ('incidence', 'size - incidence')
    >>> cbind_arguments("prop") is None
    True
    >>> cbind_arguments("cbind(a, b) / log(c)") is None
    True
    """
    text = expression.strip()
    match = re.fullmatch(r"cbind\s*\((.*)\)", text, flags=re.DOTALL)
    if match is None:
        return None
    inner = match.group(1)
    if any(depth < 0 for _, depth in _depths(inner)):
        return None  # "cbind(a, b) + log(c)": the parenthesis of cbind( closes before the end
    commas = [i for i, depth in _depths(inner) if inner[i] == "," and depth == 0]
    if len(commas) != 1:
        raise ValueError(
            f"cbind() in a response takes two columns, cbind(successes, failures), got {len(commas) + 1} "
            f"argument(s) in {text!r}"
        )
    first, second = inner[: commas[0]].strip(), inner[commas[0] + 1 :].strip()
    if not first or not second:
        raise ValueError(f"cbind() has an empty argument in {text!r}: write cbind(successes, failures)")
    return first, second


@dataclass
class Encoded:
    """A formula model's matrices for one data set (see :meth:`FormulaDesign.encode`)."""

    X: np.ndarray  # fixed-effects columns without the intercept
    fixed: np.ndarray  # with the intercept column, as fixed_names
    slopes: np.ndarray  # random-effects columns (TermSpec positions)
    offset: np.ndarray | None
    groups: pd.DataFrame | None


def _prepare_data(data, argument: str) -> pd.DataFrame:
    """A shallow copy with R's reading of column types: logical columns as FALSE/TRUE factors.

    The caller's frame is never modified.
    """
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"{argument} must be a pandas DataFrame for a formula model, got {type(data).__name__}")
    frame = data.copy(deep=False)
    frame.columns = [str(c) for c in frame.columns]
    if frame.columns.duplicated().any():
        raise ValueError(f"{argument} has repeated column names: {list(frame.columns[frame.columns.duplicated()])}")
    for name in frame.columns:
        dtype = frame[name].dtype
        if isinstance(dtype, pd.StringDtype) and dtype.na_value is pd.NA:
            # pandas' "string" dtype (Dask's reading of text), which formulaic does not take for a
            # factor (it does take pandas' default "str"): as object, with the same levels
            frame[name] = frame[name].astype(object)
        if frame[name].dtype == bool:
            frame[name] = pd.Categorical(np.where(frame[name].to_numpy(), "TRUE", "FALSE"), categories=["FALSE", "TRUE"])
    return frame.reset_index(drop=True)


def _check_missing(frame: pd.DataFrame, columns, what: str) -> None:
    for name in columns:
        if name in frame.columns:
            missing = frame[name].isna().to_numpy()
            if missing.any():
                raise ValueError(
                    f"column {name!r}, used by {what}, has {int(missing.sum())} missing value(s) (first at "
                    f"row {int(np.flatnonzero(missing)[0])}); drop or fill those rows first, e.g. "
                    f"data.dropna(subset=[{name!r}]) (lme4 drops them silently; sklmm asks)"
                )


def _build_block(text: str, frame: pd.DataFrame, what: str, treat_as_offset: bool = False, state: dict | None = None) -> _Block:
    """``text``'s model spec learnt from ``frame`` (``state``: stateful transforms' state given, by expression)."""
    from formulaic import ModelSpec, model_matrix
    from formulaic.errors import FormulaicError

    source = to_formulaic(text)
    given = {key: dict(value) for key, value in (state or {}).items() if key.replace(" ", "") in source.replace(" ", "")}
    request = ModelSpec(formula=source, transform_state=given) if given else source
    used = [name for name in frame.columns if re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.])", source)]
    _check_missing(frame, used, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            matrix = model_matrix(request, frame, context=FUNCTIONS, na_action="raise", output="numpy")
    except FormulaicError as error:
        raise ValueError(f"{what} ({text!r}) could not be built from the data: {error}") from None
    except (NameError, KeyError, TypeError, ValueError, SyntaxError) as error:
        raise ValueError(f"{what} ({text!r}) could not be built from the data: {error}") from None
    spec = matrix.model_spec
    order = _variable_order(source, spec)
    names = [r_column_name(spec, column, order) for column in spec.column_names]
    intercept = np.array([column == "Intercept" for column in spec.column_names], dtype=bool)
    if treat_as_offset and matrix.shape[1] != 1:
        raise ValueError(f"{what} must evaluate to one numeric column, got {matrix.shape[1]}")
    return _Block(spec, names, intercept, order)


def _materialize(block: _Block, frame: pd.DataFrame, what: str) -> np.ndarray:
    """``block``'s columns for ``frame``, with unseen factor levels refused by name."""
    from formulaic.errors import DataMismatchWarning, FormulaicError

    spec = block.spec
    for factor, state in spec.factor_contrasts.items():
        name = str(factor)
        if name in frame.columns:
            seen = set(state.levels)
            values = pd.unique(frame[name].dropna())
            unseen = [v for v in values if v not in seen]
            if unseen:
                raise ValueError(
                    f"column {name!r} has level(s) {unseen[:5]} not seen in fit (levels: {list(state.levels)}); "
                    f"{what} has no coefficient for them"
                )
    _check_missing(frame, [str(v) for v in spec.required_variables], what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataMismatchWarning)
            warnings.simplefilter("ignore", FutureWarning)
            matrix = spec.get_model_matrix(frame, context=FUNCTIONS, na_action="raise")
    except DataMismatchWarning as warning:
        raise ValueError(f"{what}: {warning}") from None
    except FormulaicError as error:
        raise ValueError(f"{what} could not be built from the data: {error}") from None
    return _as_numpy(matrix)


def _as_numpy(matrix) -> np.ndarray:
    values = matrix.to_numpy() if hasattr(matrix, "to_numpy") else np.asarray(matrix)
    return np.asarray(values, dtype=np.float64)


def _variable_order(source: str, spec) -> dict[str, int]:
    """Each factor's position of first appearance in the formula text.

    R orders the factors of an interaction by the order in which their
    variables first appear in the formula: ``0 + Sex + age:Sex`` has the term
    ``Sex:age`` and the column ``SexMale:age``.
    """
    squeezed = re.sub(r"\s+", "", source)
    order = {}
    for structure in spec.structure:
        for factor in structure.term.factors:
            expr = str(factor.expr)
            if expr in order:
                continue
            target = re.sub(r"\s+", "", expr)
            position = len(squeezed)
            for match in re.finditer(re.escape(target), squeezed):
                before = squeezed[match.start() - 1] if match.start() else ""
                after = squeezed[match.end()] if match.end() < len(squeezed) else ""
                if not (before and (before.isalnum() or before in "._")) and not (after and (after.isalnum() or after in "._(")):
                    position = match.start()
                    break
            order[expr] = position
    return order


def r_column_name(spec, column: str, order: dict[str, int] | None = None) -> str:
    """formulaic's column name as R's ``model.matrix`` names it.

    ``Intercept`` -> ``(Intercept)``; ``f[T.b]`` (treatment) and ``f[b]``
    (indicator) -> ``fb``; ``C(f, contr.sum)[S.a]`` -> ``C(f, contr.sum)1``
    (R numbers sum and Helmert contrast columns); ``poly(x, 2)[1]`` ->
    ``poly(x, 2)1``; ``I(x ** 2)`` -> ``I(x^2)``; interactions joined by ``:``.
    """
    if column == "Intercept":
        return INTERCEPT
    for structure in spec.structure:
        if column not in structure.columns:
            continue
        rest, parts = column, []
        for factor in structure.term.factors:
            expr = str(factor.expr)
            if not rest.startswith(expr):
                return column
            rest = rest[len(expr) :]
            suffix = ""
            if rest.startswith("["):
                close = rest.index("]")
                suffix, rest = rest[1:close], rest[close + 1 :]
            parts.append(((order or {}).get(expr, 0), r_deparse(expr) + _r_suffix(spec, factor, suffix)))
            if rest.startswith(":"):
                rest = rest[1:]
        return ":".join(part for _, part in sorted(parts, key=lambda item: item[0]))
    return column


def _r_suffix(spec, factor, suffix: str) -> str:
    if not suffix:
        return ""
    state = spec.factor_contrasts.get(factor)
    if state is None:
        return suffix  # e.g. poly(x, 2)[1] -> 1
    levels = [str(level) for level in state.levels]
    kind = type(state.contrasts).__name__
    if suffix.startswith("T.") and kind == "TreatmentContrasts":
        return suffix[2:]
    if suffix.startswith("S.") and kind == "SumContrasts" and suffix[2:] in levels:
        return str(levels.index(suffix[2:]) + 1)
    if suffix.startswith("H.") and kind == "HelmertContrasts" and suffix[2:] in levels:
        return str(levels.index(suffix[2:]))
    return suffix


def _grouping_factors(bar: Bar, text: str) -> list[tuple[str, ...]]:
    """The factor tuples a bar's grouping expands to (``a/b`` -> ``a``, ``a:b``), via the bar parser."""
    try:
        specs = parse_random_effects(f"(1 | {bar.group})")
    except FormulaError as error:
        raise FormulaError(text, text.find(bar.group), f"the grouping factor {bar.group!r} in {text!r} does not parse: {error}") from None
    return [spec.factors for spec in specs]


def _double_bar_pieces(lhs: str, frame: pd.DataFrame, state: dict | None = None) -> list[str]:
    """lme4's ``||``: ``(1 + x + f || g)`` is ``(1 | g) + (0 + x | g) + (0 + f | g)``.

    Each term of ``lhs`` becomes a term of its own (a factor keeps its
    columns together, as lme4's ``expandDoubleVerts``).
    """
    block = _build_block(lhs, frame, "a random-effects term", state=state)
    pieces = ["1"] if block.intercept.any() else []
    for structure in block.spec.structure:
        factors = list(structure.term.factors)
        if len(factors) == 1 and str(factors[0].expr) == "1":
            continue
        pieces.append("0 + " + ":".join(str(f.expr) for f in factors))
    return pieces
