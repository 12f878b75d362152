"""``summary()`` against lme4 1.1-31's ``summary(lmer)`` on every reference case.

Expected values: tests/data/lme4_inference/<case>.json (``summary_text``,
``summary.*``; made by make_inference.R there with ``print(summary(fit))`` at
``options(width = 80)``) and tests/data/r_format/format_cases.json (R 4.2.2's
``format``, ``zapsmall``, ``round``, ``abbreviate``; made by make_format.R there).

Two kinds of checks:

* Layout: a :class:`ModelSummary` built from lme4's own numbers prints exactly
  lme4's text, line for line (trailing spaces aside), from the criterion line
  to the correlation of fixed effects, on all 40 case/method pairs.
* Numbers: sklmm's summary holds lme4's values: criterion 1e-6 relative;
  scaled residual quantiles within 2e-3 (absolute, in units of sigma);
  variances 4e-2 and standard deviations 2e-2 relative (the fit tests'
  tolerance) or both below 1e-3 sigma on the boundary; correlations 2e-2
  absolute; fixed-effects table 1e-3 relative (t values 1e-3 relative or
  1e-3 absolute); correlation of fixed effects 1e-3 absolute; numbers of
  observations and levels exact.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reference_cases import CASES, fitted, load_case, sklmm_group_name
from sklmm import ModelSummary
from sklmm._report.rformat import abbreviate, format_real, r_round, zapsmall

DATA = Path(__file__).parent / "data"
INFERENCE = DATA / "lme4_inference"
METHODS = ["reml", "ml"]
PARAMS = [pytest.param(case, method, id=f"{case}-{method}") for case in CASES for method in METHODS]


def inference_reference(case: str, method: str) -> dict:
    return json.loads((INFERENCE / f"{case}.json").read_text())[method]


def named_matrix(block: dict) -> pd.DataFrame:
    values = np.asarray(block["values"], dtype=float).reshape(len(block["rownames"]), len(block["colnames"]))
    return pd.DataFrame(values, index=block["rownames"], columns=block["colnames"])


def as_list(value):
    return value if isinstance(value, list) else [value]


# -- R's formatting helpers -------------------------------------------------------------

FORMAT = json.loads((DATA / "r_format" / "format_cases.json").read_text())


def test_format_real_matches_r():
    for case in FORMAT["format"]:
        x, expected = as_list(case["x"]), as_list(case["formatted"])
        assert format_real(x, case["digits"], case["nsmall"]) == expected, case


def test_zapsmall_and_round_match_r():
    for case in FORMAT["zapsmall"]:
        x = np.asarray(as_list(case["x"]), dtype=float)
        np.testing.assert_array_equal(zapsmall(x, case["digits"]), np.asarray(case["zapped"]))
        np.testing.assert_array_equal(r_round(x, case["digits"] - 1), np.asarray(case["rounded"]))


def test_abbreviate_matches_r():
    names = FORMAT["abbreviate"]["names"]
    for minlength, expected in FORMAT["abbreviate"]["by_minlength"].items():
        assert abbreviate(names, int(minlength)) == expected, minlength


# -- layout: lme4's numbers through sklmm's printer give lme4's text ----------------------


def summary_from_lme4(case: str, method: str) -> ModelSummary:
    """A ModelSummary holding lme4's numbers and names (for the layout test)."""
    ref = inference_reference(case, method)
    summary = ref["summary"]
    varcorr = load_case(case).reference[method]["varcorr"]
    terms: dict[str, list] = {}
    correlations = {}
    for row in varcorr:
        if row["grp"] == "Residual":
            continue
        if row.get("var2") is None:
            terms.setdefault(row["grp"], []).append((row["var1"], row["vcov"], row["sdcor"]))
        else:
            correlations[(row["grp"], row["var1"], row["var2"])] = row["sdcor"]
    max_p = max([len(v) for v in terms.values()] + [1])
    rows = []
    for index, (group, columns) in enumerate(terms.items()):
        names = [c[0] for c in columns]
        for i, (name, variance, sd) in enumerate(columns):
            row = {"term": index, "group": group, "name": name, "variance": variance, "std_dev": sd}
            for j in range(1, max_p):
                row[f"corr_{j}"] = correlations[(group, names[j - 1], name)] if j - 1 < i else np.nan
            rows.append(row)
    residual = next(row for row in varcorr if row["grp"] == "Residual")
    rows.append({"term": len(terms), "group": "Residual", "name": None, "variance": residual["vcov"], "std_dev": residual["sdcor"]})
    table = pd.DataFrame(rows, columns=["term", "group", "name", "variance", "std_dev"] + [f"corr_{j}" for j in range(1, max_p)])
    quantiles = summary["scaled_residual_quantiles"]
    return ModelSummary(
        method_title=summary["methTitle"],
        formula="",
        criterion=pd.Series(summary["AICtab"], dtype=float),
        scaled_residuals=pd.Series([quantiles[k] for k in ["Min", "1Q", "Median", "3Q", "Max"]], index=["Min", "1Q", "Median", "3Q", "Max"]),
        random_effects=table,
        n_obs=summary["nobs"],
        n_groups=pd.Series(summary["ngrps"], dtype=int),
        fixed_effects=named_matrix(summary["fixef_table"]),
        fixed_effects_correlation=named_matrix(summary["fixef_correlation"]),
    )


def body(text: str) -> list[str]:
    """From the criterion line to the end of the fixed effects' correlation (lme4's optimizer lines dropped)."""
    lines = [line.rstrip() for line in text.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("REML criterion") or line.strip().startswith("AIC"))
    end = next((i for i, line in enumerate(lines) if line.startswith("optimizer (")), len(lines))
    lines = lines[start:end]
    while lines and not lines[-1]:
        lines.pop()
    return lines


@pytest.mark.parametrize("case, method", PARAMS)
def test_layout_is_lme4s(case, method):
    expected = body(inference_reference(case, method)["summary_text"])
    assert body(str(summary_from_lme4(case, method))) == expected


# -- numbers: sklmm's summary holds lme4's values -------------------------------------------


@pytest.mark.parametrize("case, method", PARAMS)
def test_summary_numbers(case, method):
    model, _ = fitted(case, method)
    ref = inference_reference(case, method)["summary"]
    summary = model.summary(ddf=None)
    sigma = model.sigma_

    assert summary.method_title.strip() == ref["methTitle"].strip()
    for key, value in ref["AICtab"].items():
        assert summary.criterion[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key

    quantiles = ref["scaled_residual_quantiles"]
    for key, value in quantiles.items():
        assert abs(summary.scaled_residuals[key] - value) <= 2e-3, key

    assert summary.n_obs == ref["nobs"]
    factor_names = set(model.random_effects_)
    expected_groups = {sklmm_group_name(k, factor_names): v for k, v in ref["ngrps"].items()}
    assert summary.n_groups.to_dict() == expected_groups
    assert list(summary.n_groups.index) == list(expected_groups)  # lme4's order

    table = named_matrix(ref["fixef_table"])
    mine = summary.fixed_effects.loc[table.index]
    np.testing.assert_allclose(mine["Estimate"], table["Estimate"], rtol=1e-3, atol=1e-3 * table["Std. Error"].min())
    np.testing.assert_allclose(mine["Std. Error"], table["Std. Error"], rtol=1e-3)
    np.testing.assert_allclose(mine["t value"], table["t value"], rtol=1e-3, atol=1e-3)
    correlation = named_matrix(ref["fixef_correlation"])
    np.testing.assert_allclose(summary.fixed_effects_correlation.loc[correlation.index, correlation.columns], correlation, atol=1e-3)

    varcorr = load_case(case).reference[method]["varcorr"]
    random = summary.random_effects
    for row in varcorr:
        if row.get("var2") is not None:
            continue
        group = sklmm_group_name(row["grp"], factor_names)
        if group == "Residual":
            mine_row = random.iloc[-1]
        else:
            mine_row = random[(random["group"] == group) & (random["name"] == row["var1"])].iloc[0]
        if row["sdcor"] < 1e-3 * sigma:
            assert mine_row["std_dev"] < 1e-3 * sigma
        else:
            assert mine_row["std_dev"] == pytest.approx(row["sdcor"], rel=2e-2)
            assert mine_row["variance"] == pytest.approx(row["vcov"], rel=4e-2)


def test_correlations_in_the_random_effects_table():
    model, _ = fitted("slopes3_corr", "reml")
    table = model.summary(ddf=None).random_effects
    vc = model.variance_components_
    corr = vc[vc["var2"].notna()].set_index(["var1", "var2"])["sdcor"]
    rows = table.set_index("name")
    assert rows.loc["x1", "corr_1"] == pytest.approx(corr[("(Intercept)", "x1")])
    assert rows.loc["x2", "corr_1"] == pytest.approx(corr[("(Intercept)", "x2")])
    assert rows.loc["x2", "corr_2"] == pytest.approx(corr[("x1", "x2")])
    assert np.isnan(rows.loc["(Intercept)", "corr_1"])


def test_summary_text_and_html():
    model, _ = fitted("sleepstudy", "reml")
    summary = model.summary(ddf=None)
    text = str(summary)
    assert text.startswith("Linear mixed model fit by REML ['MixedLinearRegressor']\nFormula: y ~ 1 + Days + (1 + Days | Subject)\n")
    assert "Number of obs: 180, groups:  Subject, 18" in text
    assert repr(summary) == text
    html = summary._repr_html_()
    assert html.startswith("<div>") and "<table" in html and "Subject" in html and "Scaled residuals" in html


def test_singular_and_weighted_notes():
    model, _ = fitted("dyestuff2", "reml")
    assert "boundary (singular) fit" in str(model.summary(ddf=None))
    model, _ = fitted("sleepstudy_weighted", "reml")
    assert "\nWeights: sample_weight\n" in str(model.summary(ddf=None))


def test_summary_after_unpickling_has_no_residuals():
    model, _ = fitted("dyestuff", "reml")
    restored = pickle.loads(pickle.dumps(model))
    summary = restored.summary(ddf=None)
    assert summary.scaled_residuals is None
    assert "Scaled residuals" not in str(summary)
    pd.testing.assert_frame_equal(summary.fixed_effects, model.summary(ddf=None).fixed_effects)


def test_summary_of_a_model_without_random_effects():
    from sklmm import MixedLinearRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 2))
    y = X @ [1.0, -1.0] + rng.normal(size=50)
    model = MixedLinearRegressor(reml=False).fit(X, y)
    text = str(model.summary(ddf=None))
    assert "Number of obs: 50\n" in text
    assert " Residual" in text and "x0" in text and "x1" in text


def test_weights_line_names_the_column_given_to_lmer_and_glmer():
    """lme4 prints ``Weights: w`` for ``weights = w``; an X-form fit's weights are sample_weight."""
    import sklmm
    from sklmm.datasets import load_cbpp, load_sleepstudy

    data = load_sleepstudy()
    data["w"] = np.linspace(0.5, 1.5, len(data))
    model = sklmm.lmer("Reaction ~ Days + (Days | Subject)", data, weights="w")
    assert "\nWeights: w\n" in str(model.summary(ddf=None))
    assert "Weights" not in str(sklmm.lmer("Reaction ~ Days + (Days | Subject)", data).summary(ddf=None))
    # the same estimator refitted through fit() with an array: the label goes with the fit
    X = data[["Days", "Subject", "Reaction"]]
    model.fit(X, data["Reaction"], sample_weight=data["w"].to_numpy())
    assert "\nWeights: sample_weight\n" in str(model.summary(ddf=None))
    cbpp = load_cbpp()
    cbpp["proportion"] = cbpp["incidence"] / cbpp["size"]
    glmm = sklmm.glmer("proportion ~ period + (1 | herd)", cbpp, family="binomial", weights="size")
    assert "\nWeights: size\n" in str(glmm.summary())
