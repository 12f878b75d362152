"""R's number formatting and printing, so that a summary reads as lme4 prints it.

Ports of the pieces ``print(summary(lmer))`` uses: ``format`` of a numeric
vector (R's ``formatReal``: common number of decimals, fixed or scientific,
chosen for the narrower width), ``round``, ``zapsmall``, ``abbreviate``, and
the layout of ``print`` for a character matrix and a named vector.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np

#: R's ``options(scipen = 0)``.
SCIPEN = 0
#: R's ``options(width = 80)``.
WIDTH = 80


def _scientific(x: float, digits: int) -> tuple[int, int, int, bool]:
    """R's ``scientific()``: (neg, kpower, nsig, roundingwidens) of x at ``digits`` significant digits."""
    if x == 0.0:
        return 0, 0, 1, False
    neg = 1 if x < 0 else 0
    r = abs(x)
    kp = math.floor(math.log10(r)) - digits + 1
    r_prec = Decimal(r).scaleb(-kp)
    if r_prec < Decimal(10) ** (digits - 1):
        r_prec *= 10
        kp -= 1
    alpha = int(r_prec.to_integral_value(rounding=ROUND_HALF_EVEN))
    nsig = digits
    for _ in range(digits):
        if alpha % 10 == 0:
            alpha //= 10
            nsig -= 1
        else:
            break
    if nsig == 0 and digits > 0:
        nsig = 1
        kp += 1
    kpower = kp + digits - 1
    rgt = min(max(digits - kpower, 0), 27)
    fuzz = 0.5 / 10**rgt
    roundingwidens = 0 < kpower <= 27 and r < 10**kpower - fuzz
    return neg, kpower, nsig, roundingwidens


def format_real(values, digits: int = 7, nsmall: int = 0) -> list[str]:
    """R's ``format(x, digits = digits, nsmall = nsmall)`` for a numeric vector.

    All elements get the same number of decimals (enough for the element
    that needs most to show ``digits`` significant digits) and the same
    width, right-justified; scientific notation when that is narrower.

    Examples
    --------
    >>> format_real([612.0963, 35.07173, 654.9405], digits=4)
    ['612.10', ' 35.07', '654.94']
    >>> format_real([40.25, 1.258e-08, 20.71], digits=4)
    ['4.025e+01', '1.258e-08', '2.071e+01']
    """
    x = [float(v) for v in values]
    finite = [v for v in x if math.isfinite(v)]
    neg = 0
    rgt = mxl = mxsl = mxns = -(10**9)
    mnl = 10**9
    for v in finite:
        neg_i, kpower, nsig, widens = _scientific(v, digits)
        left = kpower + 1
        if widens:
            left -= 1
        sleft = neg_i + (1 if left <= 0 else left)
        right = nsig - left
        neg = max(neg, neg_i)
        rgt, mxl, mnl = max(rgt, right), max(mxl, left), min(mnl, left)
        mxsl, mxns = max(mxsl, sleft), max(mxns, nsig)
    if finite:
        if digits == 0:
            rgt = 0
        if mxl < 0:
            mxsl = 1 + neg
        rgt = max(rgt, 0)
        wF = mxsl + rgt + (rgt != 0)
        e = 2 if (mxl > 100 or mnl <= -99) else 1
        d = mxns - 1
        w = neg + (d > 0) + d + 4 + e
        if wF <= w + SCIPEN:
            e = 0
            if nsmall > rgt:
                rgt = nsmall
                wF = mxsl + rgt + (rgt != 0)
            d, w = rgt, wF
    else:
        w, d, e = 0, 0, 0
    out = []
    for v in x:
        if math.isnan(v):
            s = "NaN"
        elif math.isinf(v):
            s = "Inf" if v > 0 else "-Inf"
        else:
            v = 0.0 if v == 0 else v  # R drops the sign of a negative zero
            s = f"{v:#.{d}e}" if e else f"{v:.{d}f}"
            if e and d == 0:
                s = s.replace(".e", "e")  # R's %#.0e keeps the point, but formatReal then drops it
        out.append(s)
    width = max([w] + [len(s) for s in out])
    return [s.rjust(width) for s in out]


def r_round(x, digits: int):
    """R's ``round(x, digits)``: the exact binary value rounded half to even, as R 4 does."""
    digits = int(math.floor(digits + 0.5))
    arr = np.asarray(x, dtype=float)
    out = np.empty_like(arr)
    for i, v in np.ndenumerate(arr):
        if not math.isfinite(v):
            out[i] = v
        else:
            out[i] = float(Decimal(float(v)).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_EVEN)) if abs(digits) < 300 else v
    return out if out.ndim else float(out)


def zapsmall(x, digits: int):
    """R's ``zapsmall``: round so that values tiny relative to the largest become 0."""
    arr = np.asarray(x, dtype=float)
    finite = arr[np.isfinite(arr)]
    if not len(finite):
        return arr
    mx = float(np.max(np.abs(finite)))
    return r_round(arr, max(0.0, digits - math.log10(mx)) if mx > 0 else digits)


def _strip(s: list[str], minlength: int) -> str:
    """R's C ``stripchars`` (abbreviate with use.classes = TRUE), for ASCII names."""

    def length():
        return len(s) - nspace

    def first_char(i):
        return s[i - 1].isspace()

    def last_char(i):
        return (not s[i - 1].isspace()) and (i + 1 >= len(s) or s[i + 1].isspace())

    nspace = 0
    if len(s) < minlength:
        return "".join(s)
    trailing = True
    for i in range(len(s) - 1, 0, -1):
        if s[i].isspace():
            if trailing:
                del s[i]
            else:
                nspace += 1
        else:
            trailing = False
        if length() <= minlength:
            return _drop_spaces(s, minlength)
    vowel = set("aeiou")
    passes = [
        lambda i: s[i] in vowel and last_char(i),
        lambda i: s[i] in vowel and not first_char(i),
        lambda i: s[i].islower() and last_char(i),
        lambda i: s[i].islower() and not first_char(i),
        lambda i: not first_char(i) and not s[i].isspace(),
    ]
    for test in passes:
        i = len(s) - 1
        while i > 0:
            if i < len(s) and test(i):
                del s[i]
            if length() <= minlength:
                return _drop_spaces(s, minlength)
            i -= 1
    return _drop_spaces(s, minlength)


def _drop_spaces(s: list[str], minlength: int) -> str:
    if len(s) > minlength:
        for i in range(len(s) - 1, 0, -1):
            if s[i].isspace():
                del s[i]
    return "".join(s)


def abbreviate(names, minlength: int = 4) -> list[str]:
    """R's ``abbreviate(names, minlength)``: drop lower-case vowels, then lower-case letters, from the end.

    Examples
    --------
    >>> abbreviate(["(Intercept)", "Days", "lincomep"], minlength=6)
    ['(Intr)', 'Days', 'lincmp']
    """
    names = [str(n).strip() for n in names]
    unique = list(dict.fromkeys(names))
    result = {name: name for name in unique}
    todo = list(unique)
    length = minlength
    while True:
        for name in todo:
            result[name] = name if len(name) <= length else _strip(list(name), length)
        values = [result[name] for name in unique]
        duplicated = {v for v in values if values.count(v) > 1}
        if not duplicated:
            break
        length += 1
        todo = [name for name in unique if result[name] in duplicated]
    return [result[name] for name in names]


def print_matrix(cells, rownames, colnames, right: bool = False) -> list[str]:
    """R's ``print(<character matrix>, quote = FALSE, right = right)``: one string per line.

    Row names are left-justified; cells and column headers are left-justified
    (``right=False``) or right-justified; columns are separated by a space.
    """
    cells = [[str(c) for c in row] for row in cells]
    row_width = max([len(r) for r in rownames] + [0])
    widths = [max([len(colnames[j])] + [len(row[j]) for row in cells]) for j in range(len(colnames))]

    def cell(text, width):
        return text.rjust(width) if right else text.ljust(width)

    lines = [" " * row_width + "".join(" " + cell(name, w) for name, w in zip(colnames, widths))]
    for name, row in zip(rownames, cells):
        lines.append(name.ljust(row_width) + "".join(" " + cell(c, w) for c, w in zip(row, widths)))
    return lines


def print_named(values: list[str], names: list[str]) -> list[str]:
    """R's ``print`` of a named vector (already formatted): right-justified columns, wrapped at 80."""
    width = max([len(v) for v in values] + [len(n) for n in names])
    per_line = max(1, WIDTH // (width + 1))
    lines = []
    for start in range(0, len(values), per_line):
        chunk = slice(start, start + per_line)
        lines.append("".join(n.rjust(width) + " " for n in names[chunk]))
        lines.append("".join(v.rjust(width) + " " for v in values[chunk]))
    return lines
