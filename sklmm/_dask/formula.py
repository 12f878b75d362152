"""Formula models on Dask collections: ``formula=`` and :func:`sklmm.lmer` with a Dask DataFrame.

A formula's encodings are learnt from the training data: the levels of
every factor of the fixed part and of the random terms' left-hand sides, and
of the grouping factors.  On a Dask collection they come from the first pass
over the partitions (:func:`sklmm._dask.fit.summarize`), which also collects,
per partition, the distinct combinations of the factor columns the formula
uses (each with one real row's numeric values).  Their union is a small
frame holding every level: :meth:`FormulaDesign.from_data` learns the same
design from it as from all rows (levels sorted, or a categorical's
categories in their order), and the second pass encodes each partition with
that one design (:meth:`FormulaDesign.encode`: fixed matrix, random-term
columns including factor slopes, ``offset()``), so every partition codes a
level the same way and the fit equals the in-memory formula fit.

Stateful transforms learn statistics of the whole column.  ``center(expr)``
and ``scale(expr)`` (one argument) are computed: the first pass also sums
each argument's count, mean and squared deviations per partition (combined
by Chan et al.'s pairwise update), and the design is given formulaic's state
from them (:meth:`FormulaDesign.from_data`'s ``transform_state``), so the
columns are those of the in-memory fit to rounding.  The others (``poly()``,
``standardize()``, splines, ``scale()`` with more arguments, and ``lag()``,
which reads neighbouring rows across partition boundaries, and any stateful
transform of the response) are refused before any pass, with an error
naming them; compute such columns before the fit.
"""

from __future__ import annotations

import ast
import numbers
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._model.formula import FormulaDesign, to_formulaic, _build_block, _grouping_factors, _materialize, split_formula
from .fit import _groups, _response, _weights, fit_blocks, summarize
from .partitions import aligned_partitions, as_frame, check_lengths

#: Calls that make a numeric column a factor: R's factor(x), as.factor(x), formulaic's C(x).
_FACTOR_CALL = re.compile(r"(?<![\w.])(?:C|factor|as\.factor)\(\s*([^,()]+)")


def _columns_in(text: str, columns) -> list[str]:
    """The columns whose names occur in ``text`` as names (not as parts of longer names)."""
    return [name for name in columns if re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.])", text)]


@dataclass
class LevelRows:
    """Distinct combinations of a formula's factor columns over some rows (one real row each)."""

    rows: pd.DataFrame
    factors: list[str]
    moments: dict  # a center()/scale() call's formulaic expression -> (n, mean, sum of squared deviations)

    @staticmethod
    def combine(parts: list[LevelRows]) -> LevelRows:
        rows = pd.concat([p.rows for p in parts], ignore_index=True)
        factors = parts[0].factors
        rows = rows.drop_duplicates(subset=factors, ignore_index=True) if factors else rows.iloc[:1]
        moments = {}
        for key in parts[0].moments:
            n, mean, m2 = parts[0].moments[key]
            for part in parts[1:]:  # Chan et al.'s pairwise update
                n_b, mean_b, m2_b = part.moments[key]
                total = n + n_b
                if n_b:
                    delta = mean_b - mean
                    mean, m2 = mean + delta * n_b / total, m2 + m2_b + delta * delta * n * n_b / total
                n = total
            moments[key] = (n, mean, m2)
        return LevelRows(rows, factors, moments)


@dataclass
class FormulaReader:
    """Reads a partition of a formula model: the data frame (as ``X``), y or the response expression.

    Before the first pass ``design`` is None: the reader then collects the
    factor columns' distinct combinations (:meth:`extra`); the fit sets the
    design learnt from them before the second pass.
    """

    formula: str
    response_expression: str | None  # lmer's response expression; None: y is a collection of its own
    offsets: tuple[str, ...]
    group_columns: list[str]
    level_columns: list[str]  # the columns the fixed part and the random terms' left-hand sides use
    factor_columns: list[str]  # those of them that are factors
    weight: float | str | None  # a scalar weight, a column of the data (lmer's weights="w"), or None
    standardized: dict  # center()/scale() calls: formulaic's expression -> the argument's text
    design: FormulaDesign | None = None

    def _frame(self, parts: dict) -> pd.DataFrame:
        frame = parts["X"]
        if not all(isinstance(c, str) for c in frame.columns):
            frame = frame.rename(columns=str)  # a new frame: the partition itself is left as it is
        return frame

    def _weights(self, parts: dict, frame: pd.DataFrame):
        if isinstance(self.weight, str):
            return _weights(frame[self.weight], len(frame))
        return _weights(parts["sample_weight"] if self.weight is None else self.weight, len(frame))

    def _values(self, expression: str, frame: pd.DataFrame, what: str) -> np.ndarray:
        """A stateless numeric expression of the partition's columns (a stateful one is refused)."""
        if expression in frame.columns and frame[expression].dtype.kind in "iufb":
            values = frame[expression].to_numpy(dtype=np.float64)
        else:
            block = _build_block(f"0 + I({expression})", frame.reset_index(drop=True), what, treat_as_offset=True)
            _refuse_stateful({what: block.spec.transform_state})
            values = _materialize(block, frame.reset_index(drop=True), what)[:, 0]
        return values

    def _y(self, parts: dict, frame: pd.DataFrame) -> np.ndarray:
        if self.response_expression is None:
            y = _response(parts["y"])
        else:
            if self.response_expression in frame.columns and frame[self.response_expression].isna().any():
                raise ValueError(
                    f"the response column {self.response_expression!r} has {int(frame[self.response_expression].isna().sum())} missing "
                    f"value(s) in a partition; drop those rows first, e.g. data.dropna(subset=[{self.response_expression!r}])"
                )
            y = _response(self._values(self.response_expression, frame, f"the response {self.response_expression!r}"))
        for expression in self.offsets:
            y = y - self._values(expression, frame, f"offset({expression})")
        return y

    def response(self, parts: dict):
        """(y minus offsets, weights, groups) of a partition: what the first pass reads."""
        check_lengths(parts)
        frame = self._frame(parts)
        g = _groups(frame[self.group_columns]) if self.group_columns else None
        return self._y(parts, frame), self._weights(parts, frame), g

    def extra(self, parts: dict) -> LevelRows:
        frame = self._frame(parts)
        rows = frame[self.level_columns + [c for c in self.group_columns if c not in self.level_columns]]
        if self.factor_columns:
            rows = rows.drop_duplicates(subset=self.factor_columns, ignore_index=True)
        else:
            rows = rows.iloc[:1].reset_index(drop=True)
        moments = {}
        for key, argument in self.standardized.items():
            values = self._values(argument, frame, key)
            if not np.all(np.isfinite(values)):
                raise ValueError(f"{key} has missing or infinite values in a partition; every row needs a finite value")
            mean = float(np.mean(values)) if len(values) else 0.0
            moments[key] = (len(values), mean, float(np.sum((values - mean) ** 2)))
        return LevelRows(rows, self.factor_columns, moments)

    def read(self, parts: dict):
        """(fixed columns without intercept, y minus offsets, weights, groups, random-term columns)."""
        check_lengths(parts)
        frame = self._frame(parts)
        encoded = self.design.encode(frame, "data")
        y = self._y(parts, frame)
        return encoded.X, y, self._weights(parts, frame), encoded.groups, encoded.slopes


def _refuse_stateful(states: dict) -> None:
    found = {what: sorted(state) for what, state in states.items() if state}
    if found:
        names = sorted({name for names in found.values() for name in names})
        raise ValueError(
            f"the formula uses the stateful transform(s) {names}, which learn statistics of the whole "
            "column (a mean, a standard deviation, polynomial recurrences, knots; lag() reads the rows "
            "before), which sklmm does not compute over a Dask collection's partitions. Compute the "
            "transformed column before the fit, e.g. ddf['x_c'] = ddf['x'] - ddf['x'].mean(), and name it in the formula."
        )


def _stateful_calls(text: str) -> list[str]:
    """The calls of formulaic's stateful transforms (and of ``lag()``, which reads neighbouring rows) in ``text``."""
    from formulaic.transforms import TRANSFORMS

    names = [name for name, function in TRANSFORMS.items() if getattr(function, "__is_stateful_transform__", False) and name != "Q"]
    calls = []
    for match in re.finditer(rf"(?<![\w.])(?:{'|'.join(map(re.escape, [*names, 'lag']))})\s*\(", text):
        depth, end = 0, match.end() - 1
        for end in range(match.end() - 1, len(text)):
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            if depth == 0:
                break
        calls.append(text[match.start() : end + 1])
    return calls


def _standardizations(calls: list[str]) -> tuple[dict, list[str]]:
    """({formulaic expression: argument} of the one-argument center()/scale() calls, the other calls)."""
    supported, others = {}, []
    for call in calls:
        name, argument = call[: call.index("(")].strip(), call[call.index("(") + 1 : -1].strip()
        if name in ("center", "scale") and not any(depth == 0 and char == "," for char, depth in _depth_of(argument)):
            supported[ast.unparse(ast.parse(to_formulaic(call), mode="eval"))] = argument
        else:
            others.append(call)
    return supported, others


def _depth_of(text: str):
    depth = 0
    for char in text:
        depth += char == "("
        depth -= char == ")"
        yield char, depth


def _standardization_state(moments: dict, standardized: dict) -> dict:
    """formulaic's state of each center()/scale() call from the moments over all rows (as formulaic's scale)."""
    state = {}
    for key in standardized:
        n, mean, m2 = moments[key]
        scaled = key.startswith("scale")
        state[key] = {"ddof": 1, "center": np.float64(mean), "scale": np.float64(np.sqrt(m2 / (n - 1))) if scaled else None}
    return state


def _plan(formula: str, meta: pd.DataFrame) -> tuple:
    """(offsets, group columns, level columns, factor columns, factor sets) from the formula and the frame's dtypes."""
    parts = split_formula(formula)
    columns = [str(c) for c in meta.columns]
    group_columns, factor_sets = [], []
    for bar in parts.bars:
        for factors in _grouping_factors(bar, parts.text):
            factor_sets.append(factors)
            for name in factors:
                if name not in columns:
                    raise ValueError(
                        f"the term ({bar.lhs} {'||' if bar.double else '|'} {bar.group}) names the grouping "
                        f"factor {name!r}, which is not a column of the data (columns: {columns})"
                    )
                if name not in group_columns:
                    group_columns.append(name)
    design_text = " + ".join([parts.fixed, *(bar.lhs for bar in parts.bars)])
    level_columns = _columns_in(design_text, columns)
    called = " ".join(match.group(1) for match in _FACTOR_CALL.finditer(design_text))
    factor_columns = [
        name for name in level_columns
        if meta[name].dtype.kind not in "iuf" or name in _columns_in(called, [name])
    ]
    return parts.offsets, group_columns, level_columns, factor_columns, list(dict.fromkeys(factor_sets))


def fit_formula(est, data, y, sample_weight, *, response: str | None = None, formula_text: str | None = None):
    """Fit ``est`` (``formula=`` set) on a Dask DataFrame; ``response``: lmer's response expression.

    With ``response`` None, ``y`` is a Dask Series (or one-column DataFrame)
    partitioned as ``data``.  ``sample_weight``: a number, a Dask Series, a
    column name of ``data`` (lmer's ``weights="w"``) or None.
    """
    est._validate_params()
    if est.random_effects is not None:
        raise ValueError(
            f"formula={est.formula!r} and random_effects={est.random_effects!r} were both given; "
            "they exclude each other: put the random part in the formula"
        )
    data = as_frame(data, "X", "x0")
    meta = data._meta
    rhs_formula = est.formula
    if response is not None and _stateful_calls(response):
        _refuse_stateful({"the response": dict.fromkeys(_stateful_calls(response), True)})
    standardized, others = _standardizations(_stateful_calls(rhs_formula))
    if others:
        _refuse_stateful({"the formula": dict.fromkeys(others, True)})
    offsets, group_columns, level_columns, factor_columns, factor_sets = _plan(rhs_formula, meta)
    needed = sorted(set(group_columns) | set(level_columns) | set(_columns_in(" ".join(offsets), [str(c) for c in meta.columns])))
    if response is not None:
        needed = sorted(set(needed) | set(_columns_in(response, [str(c) for c in meta.columns])))
    weight = None
    if isinstance(sample_weight, str):
        if sample_weight not in meta.columns:
            raise ValueError(f"weights={sample_weight!r} is not a column of data (columns: {list(map(str, meta.columns))})")
        weight, sample_weight = sample_weight, None
        needed = sorted(set(needed) | {weight})
    elif isinstance(sample_weight, numbers.Number):
        weight, sample_weight = float(sample_weight), None
    elif sample_weight is not None:
        sample_weight = as_frame(sample_weight, "sample_weight", "sample_weight")
    if response is None:
        if y is None:
            raise ValueError("y is required: the response, one value per row of X")
        y = as_frame(y, "y", "y")
        if y._meta.shape[1] != 1:
            raise ValueError(f"y must be one column, got a Dask DataFrame with {y._meta.shape[1]} columns")
    frame = data[needed] if needed else data.iloc[:, :1]
    reader = FormulaReader(rhs_formula, response, tuple(offsets), group_columns, level_columns, factor_columns, weight, standardized)
    first_pass = aligned_partitions({"X": frame, "y": y, "groups": None, "sample_weight": sample_weight})
    summary = summarize(first_pass, reader, factor_sets)

    levels = summary.extra.rows
    state = _standardization_state(summary.extra.moments, standardized)
    design = FormulaDesign.from_data(rhs_formula, levels, one_sided=True, transform_state=state)
    # a stateful transform whose state was learnt from the level rows alone (not one of ours): refused
    blocks = [("the fixed part", design.fixed.spec), *(("a random term", b.spec) for b in design.random), *(("an offset", spec) for spec in design.offsets)]
    _refuse_stateful({what: {k: v for k, v in spec.transform_state.items() if k not in state} for what, spec in blocks})
    reader.design = design
    names = design.fixed_columns_without_intercept()
    n_slopes = sum(int((~block.intercept).sum()) for block in design.random)
    groups_meta = levels[design.group_columns].iloc[:0] if design.group_columns else None
    partitions = aligned_partitions({"X": frame, "y": y, "groups": None, "sample_weight": sample_weight})
    fit = fit_blocks(
        partitions, reader, summary, design.specs, names, groups_meta, design.has_intercept,
        weight is not None or sample_weight is not None, est.reml, est.max_iter, n_slopes=n_slopes,
    )
    est._set_fitted(fit, design.has_intercept, list(design.group_columns))
    est.feature_names_in_ = np.asarray([str(c) for c in data.columns], dtype=object)
    est.n_features_in_ = len(data.columns)
    est._design = design
    est._formula_text = formula_text
    est._weights_label = sample_weight if isinstance(sample_weight, str) else None
    est._training_data = None
    est._training_fingerprint = None
    est._fitted_on_dask = True
    return est

