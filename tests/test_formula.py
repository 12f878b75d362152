"""The random_effects parser: lme4's bar syntax, expansions and error positions."""

import pytest

from sklmm._model.bars import FormulaError, TermSpec, parse_random_effects

I = "(Intercept)"


@pytest.mark.parametrize(
    "formula, expected",
    [
        ("(1 | g)", [TermSpec(("g",), (I,))]),
        ("(1 + x | g)", [TermSpec(("g",), (I, "x"))]),
        ("(x | g)", [TermSpec(("g",), (I, "x"))]),  # intercept implied, as lme4
        ("(0 + x | g)", [TermSpec(("g",), ("x",))]),
        ("(-1 + x | g)", [TermSpec(("g",), ("x",))]),
        ("(x - 1 | g)", [TermSpec(("g",), ("x",))]),
        ("(x - 0 | g)", [TermSpec(("g",), (I, "x"))]),  # R: removing "0" keeps the intercept
        ("(0 + x + 1 | g)", [TermSpec(("g",), (I, "x"))]),
        ("(1 + x + z | g)", [TermSpec(("g",), (I, "x", "z"))]),
        ("(1 + x || g)", [TermSpec(("g",), (I,)), TermSpec(("g",), ("x",))]),
        ("(1 | a) + (1 | b)", [TermSpec(("a",), (I,)), TermSpec(("b",), (I,))]),
        ("(1 | a/b)", [TermSpec(("a", "b"), (I,)), TermSpec(("a",), (I,))]),
        ("(1 | a/b/c)", [TermSpec(("a", "b", "c"), (I,)), TermSpec(("a", "b"), (I,)), TermSpec(("a",), (I,))]),
        ("(1 | a:b)", [TermSpec(("a", "b"), (I,))]),
        ("(1 + x || a/b)", [TermSpec(("a", "b"), (I,)), TermSpec(("a", "b"), ("x",)), TermSpec(("a",), (I,)), TermSpec(("a",), ("x",))]),
        ("(1 | `my group`)", [TermSpec(("my group",), (I,))]),
        ("  (1|g)+(0+x.1|h_2)  ", [TermSpec(("g",), (I,)), TermSpec(("h_2",), ("x.1",))]),
    ],
)
def test_parse(formula, expected):
    assert parse_random_effects(formula) == expected


@pytest.mark.parametrize(
    "formula, position, message",
    [
        ("", 0, "empty formula"),
        ("1 | g", 0, "expected '\\(' opening"),
        ("(1 + x g)", 7, "expected '\\|' or '\\|\\|'"),
        ("(1 | g", 6, "expected '\\)' closing"),
        ("(1 | g) (1 | h)", 8, "expected '\\+' between terms"),
        ("(0 | g)", 1, "no columns"),
        ("(1 + 2 | g)", 5, "only 0 or 1"),
        ("(1 | g) + (1 | )", 15, "grouping factor name"),
        ("(1 + x - z | g)", 9, "only the intercept can be removed"),
        ("(1 + x + x | g)", 9, "appears twice"),
        ("(1 | g) $", 8, "unexpected character '\\$'"),
    ],
)
def test_errors_point_at_position(formula, position, message):
    with pytest.raises(FormulaError, match=message) as info:
        parse_random_effects(formula)
    assert info.value.pos == position


def test_non_string_is_a_type_error():
    with pytest.raises(TypeError, match="random_effects must be a string"):
        parse_random_effects(3)


@pytest.mark.parametrize(
    "n_levels, expected",
    [
        ([18, 18], [0, 1]),  # already non-increasing: formula order kept
        ([30, 10], [0, 1]),
        ([12, 20, 20], [2, 1, 0]),  # reordered: rev(order(nl)) reverses ties, as lme4
        ([5, 40, 15], [1, 2, 0]),
    ],
)
def test_lme4_term_order(n_levels, expected):
    from sklmm._model.terms import lme4_term_order

    assert lme4_term_order(n_levels) == expected
