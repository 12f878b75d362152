"""sklmm.emmeans against R's emmeans 1.8.4-1 (tests/data/emmeans/make_emmeans.R, emmeans.json).

The models are the formula cases of tests/data/lmertest/cases, fitted on
their model matrix with the formula's design attached through the design
contract (``FakeDesign`` below stands in for the formula interface's
FormulaDesign).  Tolerances: means, SE and interval bounds 1e-4 relative
(the fits agree with lme4 to about 1e-6 here), df 1e-3 relative,
p values 1e-4 absolute; the linear functions (emmeans' ``linfct``) 1e-10.
"""

from __future__ import annotations

import json
import re
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_fixed_effect_tests import FakeDesign, as_list, formula_case

import sklmm
from sklmm import MixedLinearRegressor

REFERENCE = json.loads((Path(__file__).parent / "data" / "emmeans" / "emmeans.json").read_text())


class GridDesign(FakeDesign):
    """FakeDesign plus fixed_matrix / variable_names, for treatment-coded R column names."""

    def __init__(self, names, labels, assign, factor_levels, variable_names):
        super().__init__(names, labels, assign, factor_levels)
        self.variable_names = variable_names

    def fixed_matrix(self, frame: pd.DataFrame) -> np.ndarray:
        columns = []
        for name in self.fixed_names:
            if name == "(Intercept)":
                columns.append(np.ones(len(frame)))
                continue
            value = np.ones(len(frame))
            for piece in name.split(":"):
                factor = next((f for f in self.factor_levels if piece.startswith(f) and piece[len(f) :] in self.factor_levels[f]), None)
                if factor is not None:
                    value = value * (frame[factor].astype(str).to_numpy() == piece[len(factor) :])
                else:
                    value = value * frame[piece].to_numpy(dtype=float)
            columns.append(value)
        return np.column_stack(columns)


@lru_cache(maxsize=None)
def model_for(case: str):
    spec, ref, data = formula_case(case)
    names = as_list(ref["coef_names"])
    X = data[spec["fixed"]].astype(float)
    X.columns = names[1:]
    y = data[spec["response"]].astype(float).to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MixedLinearRegressor(random_effects=spec["random_effects"]).fit(X, y, groups=data[spec["groups"]])
    factors = as_list(spec.get("factors", []))
    numeric = as_list(spec.get("numeric", []))
    frame = data.copy()
    for v in numeric:
        frame[v] = frame[v].astype(float)
    model._design = GridDesign(names, as_list(ref["term_labels"]), as_list(ref["assign"]), {f: sorted(data[f].unique()) for f in factors}, factors + numeric)
    if case != "sleep_groups":  # there, Days' mean comes from the model matrix's Days column
        model._training_frame = frame
    return model


PARAMS = [pytest.param(i, mode, id=f"{r['case']}-{r['specs']}-by{r.get('by')}-{mode}") for i, r in enumerate(REFERENCE) for mode in ("kenward-roger", "satterthwaite")]


@pytest.mark.parametrize("index, mode", PARAMS)
def test_emmeans_against_r(index, mode):
    ref = REFERENCE[index]
    model = model_for(ref["case"])
    result = sklmm.emmeans(model, ref["specs"], by=ref.get("by"), level=0.9, ddf=mode)
    expected = ref[mode]
    means = result.means
    for column in [ref["specs"]] + ([ref["by"]] if ref.get("by") else []):
        assert means[column].astype(str).tolist() == as_list(expected["means"][column])
    np.testing.assert_allclose(result.linfct, np.array(expected["linfct"]), atol=1e-10)
    for column in ["emmean", "SE", "lower.CL", "upper.CL"]:
        np.testing.assert_allclose(means[column], as_list(expected["means"][column]), rtol=1e-4, err_msg=column)
    np.testing.assert_allclose(means["df"], as_list(expected["means"]["df"]), rtol=1e-3)
    for adjust in ("tukey", "bonferroni", "holm", "none"):
        pairs = result.pairs(adjust)
        want = expected[f"pairs_{adjust}"]
        assert pairs["contrast"].tolist() == as_list(want["contrast"])
        np.testing.assert_allclose(pairs["estimate"], as_list(want["estimate"]), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(pairs["SE"], as_list(want["SE"]), rtol=1e-4)
        np.testing.assert_allclose(pairs["df"], as_list(want["df"]), rtol=1e-3)
        np.testing.assert_allclose(pairs["p.value"], as_list(want["p.value"]), atol=1e-4, err_msg=adjust)


def test_default_df_is_emmeans_default():
    """emmeans' default for these lmer fits (n <= 3000) is Kenward-Roger (recorded as default_mode)."""
    assert {r["default_mode"] for r in REFERENCE} == {"kenward-roger"}
    model = model_for("ergostool")
    assert sklmm.emmeans(model, "Type").ddf == "kenward-roger"


def test_emmeans_errors():
    model = model_for("ergostool")
    with pytest.raises(ValueError, match="not factors of the model"):
        sklmm.emmeans(model, "Colour")
    with pytest.raises(ValueError, match="adjust='sidak'"):
        sklmm.emmeans(model, "Type").pairs("sidak")
    x_model, _ = __import__("reference_cases").fitted("sleepstudy", "reml")
    with pytest.raises(ValueError, match="fitted with a formula"):
        sklmm.emmeans(x_model, "Days")
