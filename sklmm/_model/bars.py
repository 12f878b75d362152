"""Parse the random part of an lme4 formula: ``"(1 + x | g) + (1 | a/b)"``.

The grammar is lme4's bar syntax, restricted to what a random-effects term
needs::

    formula := term ("+" term)*
    term    := "(" columns ("|" | "||") factor ")"
    columns := item (("+" | "-") item)*          item := "0" | "1" | name
    factor  := group ("/" group)*                group := name (":" name)*
    name    := identifier, or any text between backticks

Semantics follow lme4:

* an intercept is implied unless ``0`` or ``-1`` removes it, so ``(x | g)`` is
  ``(1 + x | g)``;
* ``||`` splits the term into one scalar term per column (uncorrelated);
* ``a/b`` is nested: the terms for ``a:b`` and for ``a``;
* ``a:b`` is the interaction factor whose levels are the observed pairs.

The parser only reads the string; names are resolved against the data in
:mod:`sklmm._design`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

INTERCEPT = "(Intercept)"

_TOKEN = re.compile(
    r"\s*(?:(?P<bars>\|\|)|(?P<punct>[()|+\-/:])|(?P<number>\d+(?:\.\d*)?)"
    r"|(?P<name>[A-Za-z_.][A-Za-z0-9_.]*)|`(?P<quoted>[^`]+)`)"
)


@dataclass(frozen=True)
class TermSpec:
    """One random-effects term after expansion of ``||`` and ``/``.

    Attributes
    ----------
    factors : tuple of str
        Grouping columns whose interaction defines the levels (one name for a
        plain factor, several for ``a:b``).
    columns : tuple of str
        Term columns in order: ``"(Intercept)"`` first if present, then slope
        names (columns of ``X``).
    positions : tuple of (int or None), optional
        For a formula's terms: each column's index in the model's slope
        matrix (``None`` for the intercept); the columns are then not looked
        up in ``X`` by name.
    """

    factors: tuple[str, ...]
    columns: tuple[str, ...]
    positions: tuple[int | None, ...] | None = field(default=None, repr=False)

    @property
    def factor_name(self) -> str:
        """The grouping factor's name, ``"a:b"`` for an interaction."""
        return ":".join(self.factors)


class FormulaError(ValueError):
    """A ``random_effects`` string that does not parse, with its position.

    Attributes
    ----------
    formula : str
        The string.
    pos : int
        Position (0-based) of the offending character.

    Examples
    --------
    >>> from sklmm import FormulaError, MixedLinearRegressor
    >>> from sklmm.datasets import load_sleepstudy
    >>> X, y, groups = load_sleepstudy(return_X_y_groups=True)
    >>> try:
    ...     MixedLinearRegressor("(1 + Days | Subject").fit(X, y, groups=groups)
    ... except FormulaError as error:
    ...     print(error.pos)
    19
    """

    def __init__(self, formula: str, pos: int, message: str):
        self.formula = formula
        self.pos = pos
        pointer = " " * pos + "^"
        super().__init__(
            f"random_effects could not be parsed: {message} at position {pos}\n"
            f"    {formula}\n    {pointer}"
        )


class _Tokens:
    """A cursor over the tokens of a formula string."""

    def __init__(self, text: str):
        self.text = text
        self.items: list[tuple[str, str, int]] = []  # (kind, value, position)
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _TOKEN.match(text, pos)
            if match is None:
                bad = pos + len(text[pos:]) - len(text[pos:].lstrip())
                raise FormulaError(text, bad, f"unexpected character {text[bad]!r}")
            kind = match.lastgroup
            value = match.group(kind)
            start = match.start(kind) - (1 if kind == "quoted" else 0)
            if kind == "quoted":
                kind = "name"
            self.items.append((kind, value, start))
            pos = match.end()
        self.index = 0

    def peek(self) -> tuple[str, str, int]:
        if self.index < len(self.items):
            return self.items[self.index]
        return ("end", "", len(self.text))

    def take(self) -> tuple[str, str, int]:
        token = self.peek()
        self.index += 1
        return token

    def expect(self, value: str, what: str) -> None:
        kind, got, pos = self.take()
        if got != value or kind == "name":
            shown = "end of string" if kind == "end" else repr(got)
            raise FormulaError(self.text, pos, f"expected {what}, found {shown}")


def parse_random_effects(formula: str) -> list[TermSpec]:
    """Parse a ``random_effects`` string into expanded terms.

    Parameters
    ----------
    formula : str
        lme4 bar syntax for the random part, e.g. ``"(1 + x | g)"``.

    Returns
    -------
    list of TermSpec
        Terms in formula order, with ``||`` and ``/`` expanded.

    Raises
    ------
    FormulaError
        If the string does not parse; the message points at the position.

    Examples
    --------
    >>> parse_random_effects("(1 + x || g)")
    [TermSpec(factors=('g',), columns=('(Intercept)',)), TermSpec(factors=('g',), columns=('x',))]
    >>> [t.factor_name for t in parse_random_effects("(1 | a/b)")]
    ['a:b', 'a']
    """
    if not isinstance(formula, str):
        raise TypeError(
            f"random_effects must be a string such as '(1 | g)' or None, "
            f"got {type(formula).__name__}"
        )
    tokens = _Tokens(formula)
    if tokens.peek()[0] == "end":
        raise FormulaError(formula, 0, "empty formula; expected a term like '(1 | g)'")
    terms: list[TermSpec] = []
    while True:
        terms.extend(_parse_term(tokens))
        kind, value, pos = tokens.peek()
        if kind == "end":
            return terms
        tokens.expect("+", "'+' between terms")


def _parse_term(tokens: _Tokens) -> list[TermSpec]:
    tokens.expect("(", "'(' opening a term like '(1 | g)'")
    start = tokens.peek()[2]
    columns = _parse_columns(tokens)
    kind, bar, pos = tokens.take()
    if bar not in ("|", "||"):
        shown = "end of string" if kind == "end" else repr(bar)
        raise FormulaError(tokens.text, pos, f"expected '|' or '||', found {shown}")
    if not columns:
        raise FormulaError(tokens.text, start, "the term has no columns (it removes the intercept and names no slope)")
    factor_groups = _parse_factor(tokens)
    tokens.expect(")", "')' closing the term")

    if bar == "||":
        column_sets = [(c,) for c in columns]
    else:
        column_sets = [tuple(columns)]
    # a/b/c -> a:b:c, a:b, a (innermost first, as lme4's expandSlash).
    nested = [tuple(n for g in factor_groups[: i + 1] for n in g) for i in reversed(range(len(factor_groups)))]
    return [TermSpec(factors=f, columns=c) for f in nested for c in column_sets]


def _parse_columns(tokens: _Tokens) -> list[str]:
    """Columns of a term; the intercept is implied unless removed."""
    intercept = True
    slopes: list[str] = []
    sign = "+"
    expect_item = True
    while True:
        kind, value, pos = tokens.peek()
        if expect_item:
            if kind == "punct" and value == "-" and not slopes and sign == "+":
                tokens.take()
                sign = "-"
                continue
            tokens.take()
            if kind == "number" and value in ("0", "1"):
                # As R: "1" / "+1" and "-0" keep the intercept; "0" / "+0" and "-1" remove it.
                intercept = (value == "1") != (sign == "-")
            elif kind == "number":
                raise FormulaError(tokens.text, pos, f"only 0 or 1 may stand as a number, found {value!r}")
            elif kind == "name":
                if sign == "-":
                    raise FormulaError(tokens.text, pos, "only the intercept can be removed with '-'")
                if value in slopes:
                    raise FormulaError(tokens.text, pos, f"column {value!r} appears twice in the term")
                slopes.append(value)
            else:
                shown = "end of string" if kind == "end" else repr(value)
                raise FormulaError(tokens.text, pos, f"expected 0, 1 or a column name, found {shown}")
            expect_item = False
        else:
            if kind == "punct" and value in ("+", "-"):
                tokens.take()
                sign = value
                expect_item = True
            else:
                break
    return ([INTERCEPT] if intercept else []) + slopes


def _parse_factor(tokens: _Tokens) -> list[tuple[str, ...]]:
    """``a/b:c`` -> [("a",), ("b", "c")]: slash-separated groups of names."""
    groups: list[tuple[str, ...]] = []
    names: list[str] = []
    while True:
        kind, value, pos = tokens.take()
        if kind != "name":
            shown = "end of string" if kind == "end" else repr(value)
            raise FormulaError(tokens.text, pos, f"expected a grouping factor name, found {shown}")
        names.append(value)
        kind, value, pos = tokens.peek()
        if kind == "punct" and value == ":":
            tokens.take()
        elif kind == "punct" and value == "/":
            tokens.take()
            groups.append(tuple(names))
            names = []
        else:
            groups.append(tuple(names))
            return groups
