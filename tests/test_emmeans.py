"""sklmm.emmeans against R's emmeans 1.8.4-1 (tests/data/emmeans/make_emmeans.R, emmeans.json).

The models are the formula cases of tests/data/lmertest/cases, fitted with
``sklmm.lmer`` and their formula.  Tolerances: means, SE and interval bounds 1e-4 relative
(the fits agree with lme4 to about 1e-6 here), df 1e-3 relative,
p values 1e-4 absolute; the linear functions (emmeans' ``linfct``) 1e-10.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_fixed_effect_tests import as_list, fitted_formula

import sklmm

REFERENCE = json.loads((Path(__file__).parent / "data" / "emmeans" / "emmeans.json").read_text())


def model_for(case: str):
    return fitted_formula(case, "reml")


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
