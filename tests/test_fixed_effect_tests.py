"""Tests of fixed effects (Satterthwaite and Kenward-Roger t and F tests) against lmerTest 3.1-3 / pbkrtest 0.5.2.

References: tests/data/lmertest (``make_lmertest.R`` there; versions in ``VERSIONS``):

* ``xform/<case>.json``: the X-form reference cases of tests/data/lme4 and
  tests/data/lme4_extra, each column its own term;
* ``cases/<name>/``: formula cases (factors with several levels,
  interactions, nesting, random slopes) fitted on their model-matrix
  columns ``x_*``: the coefficient tables are the formula fit's.

Tolerances (the issue's): df and F to 1e-3 relative, p-values to 1e-4
absolute, NumDF exactly; standard errors and t values to 1e-3 relative
(lme4's optimum and sklmm's agree to about that, see test_lme4_reference).
"""

from __future__ import annotations

import json
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reference_cases import fitted

DATA = Path(__file__).parent / "data" / "lmertest"
XFORM_CASES = sorted(p.stem for p in (DATA / "xform").glob("*.json"))
FORMULA_CASES = sorted(p.name for p in (DATA / "cases").iterdir() if (p / "lmertest.json").exists())
METHODS = {"Satterthwaite": "satterthwaite", "Kenward-Roger": "kenward-roger"}


@lru_cache(maxsize=None)
def xform_reference(case: str) -> dict:
    return json.loads((DATA / "xform" / f"{case}.json").read_text())


@lru_cache(maxsize=None)
def formula_case(name: str):
    folder = DATA / "cases" / name
    spec = json.loads((folder / "spec.json").read_text())
    ref = json.loads((folder / "lmertest.json").read_text())
    data = pd.read_csv(folder / "data.csv", dtype=str, keep_default_na=False)
    return spec, ref, data


@lru_cache(maxsize=None)
def fitted_formula_xform(name: str, method: str):
    from sklmm import MixedLinearRegressor

    spec, _, data = formula_case(name)
    X = data[spec["fixed"]].astype(float)
    X.columns = [c[2:] for c in spec["fixed"]]
    y = data[spec["response"]].astype(float).to_numpy()
    groups = data[spec["groups"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MixedLinearRegressor(random_effects=spec["random_effects"], reml=method == "reml").fit(X, y, groups=groups)


def as_list(v):
    return v if isinstance(v, list) else [v]


def check_coef_table(model, ref: dict, ddf: str, names=None):
    table = model.summary(ddf=ddf).fixed_effects
    expected_names = names if names is not None else as_list(ref["names"])
    assert len(table) == len(expected_names)
    for column, key, rtol in [("Std. Error", "se", 1e-3), ("df", "df", 1e-3), ("t value", "t", 1e-3)]:
        np.testing.assert_allclose(table[column].to_numpy(), as_list(ref[key]), rtol=rtol, atol=1e-3 if key == "t" else 0, err_msg=f"{column} ({ddf})")
    np.testing.assert_allclose(table["Pr(>|t|)"].to_numpy(), as_list(ref["p"]), rtol=0, atol=1e-4, err_msg=f"p ({ddf})")


def check_anova(model, ref: dict, type: int, ddf: str, labels=None):
    from sklmm import anova

    table = anova(model, type=type, ddf=ddf)
    terms = labels if labels is not None else as_list(ref["terms"])
    assert len(table) == len(terms), (list(table.index), terms)
    if not terms:
        return
    np.testing.assert_array_equal(table["NumDF"].to_numpy(), as_list(ref["NumDF"]))
    np.testing.assert_allclose(table["DenDF"].to_numpy(float), as_list(ref["DenDF"]), rtol=1e-3, err_msg=f"DenDF type {type} {ddf}")
    np.testing.assert_allclose(table["F value"].to_numpy(float), as_list(ref["F"]), rtol=1e-3, err_msg=f"F type {type} {ddf}")
    np.testing.assert_allclose(table["Sum Sq"].to_numpy(float), as_list(ref["SumSq"]), rtol=2e-3, err_msg=f"Sum Sq type {type} {ddf}")
    np.testing.assert_allclose(table["Pr(>F)"].to_numpy(float), as_list(ref["p"]), atol=1e-4, err_msg=f"p type {type} {ddf}")


XFORM_PARAMS = [
    pytest.param(case, fit, method, id=f"{case}-{fit}-{method}")
    for case in XFORM_CASES
    for fit in ("reml", "ml")
    for method in METHODS
    if method in xform_reference(case)[fit]
]


@pytest.mark.parametrize("case, fit, method", XFORM_PARAMS)
def test_xform_cases_against_lmertest(case, fit, method):
    model, _ = fitted(case, fit)
    ref = xform_reference(case)[fit][method]
    names = [n.strip("`") for n in as_list(ref["coef"]["names"])]
    assert list(model.fixed_effects_.index) == names
    check_coef_table(model, ref["coef"], METHODS[method])
    for type in ("1", "2", "3"):
        labels = [n.strip("`") for n in as_list(ref["anova"][type]["terms"])]
        check_anova(model, ref["anova"][type], int(type), METHODS[method], labels)


FORMULA_PARAMS = [
    pytest.param(name, fit, method, id=f"{name}-{fit}-{method}")
    for name in FORMULA_CASES
    for fit in ("reml", "ml")
    for method in METHODS
    if method in formula_case(name)[1]["xform"][fit]
]


@pytest.mark.parametrize("name, fit, method", FORMULA_PARAMS)
def test_formula_cases_on_their_model_matrix(name, fit, method):
    """The formula fits' coefficient tables; the X-form (one term per column) ANOVA."""
    model = fitted_formula_xform(name, fit)
    _, ref, _ = formula_case(name)
    check_coef_table(model, ref["formula"][fit][method]["coef"], METHODS[method])
    for type in ("1", "2", "3"):
        table = ref["xform"][fit][method]["anova"][type]
        labels = [n.strip("`")[2:] for n in as_list(table["terms"])]
        check_anova(model, table, int(type), METHODS[method], labels)


# -- printed layout: R's printCoefmat of lmerTest's table ---------------------------------------


def _summary_with_table(table: pd.DataFrame):
    from sklmm import ModelSummary

    empty = pd.DataFrame()
    return ModelSummary("", "", pd.Series(dtype=float), None, empty, 0, pd.Series(dtype=int), table, empty)


LAYOUT_PARAMS = [
    pytest.param(case, method, id=f"{case}-{method}")
    for case in XFORM_CASES
    for method in METHODS
    if method in xform_reference(case)["summary_text"]
]


@pytest.mark.parametrize("case, method", LAYOUT_PARAMS)
def test_printed_table_is_lmertests(case, method):
    """The fixed-effects block, formatted from lmerTest's own numbers, reads exactly as R prints it."""
    ref = xform_reference(case)
    coef = ref["reml"][method]["coef"]
    table = pd.DataFrame(
        {"Estimate": as_list(coef["estimate"]), "Std. Error": as_list(coef["se"]), "df": as_list(coef["df"]), "t value": as_list(coef["t"]), "Pr(>|t|)": as_list(coef["p"])},
        index=[n.strip("`") for n in as_list(coef["names"])],
    )
    expected = [line.rstrip() for line in ref["summary_text"][method].splitlines()[1:]]
    mine = [line.rstrip() for line in _summary_with_table(table)._fixed_effects_lines()]
    assert mine == expected[: len(mine)] and len(mine) == len(expected)


def test_summary_text_heading_and_table():
    model, _ = fitted("sleepstudy", "reml")
    text = str(model.summary())
    assert text.startswith("Linear mixed model fit by REML. t-tests use Satterthwaite's method ['MixedLinearRegressor']\n")
    assert "            Estimate Std. Error      df t value Pr(>|t|)    \n" in text
    assert "Days          10.467      1.546  17.000   6.771 3.26e-06 ***\n" in text
    kr = str(model.summary(ddf="kenward-roger"))
    assert "t-tests use Kenward-Roger's method" in kr


# -- contrasts ------------------------------------------------------------------------------------


def test_contrast_tests_against_lmertest():
    """lmerTest 3.1-3 on sleepstudy, (Days | Subject), REML:
    contest1D(fm, c(0, 1)): t 6.771481489, df 16.99998373;
    contestMD(fm, diag(2)): F 749.9504539, DenDF 16.99984605;
    contestMD(fm, diag(2), ddf = "Kenward-Roger"): F 705.8357213, DenDF 16, Sum Sq 982345.1129."""
    model, _ = fitted("sleepstudy", "reml")
    one = model.test([0, 1])
    assert one["t value"].iloc[0] == pytest.approx(6.771481489, rel=1e-3)
    assert one["df"].iloc[0] == pytest.approx(16.99998373, rel=1e-3)
    sat = model.test(np.eye(2)).iloc[0]
    assert sat["F value"] == pytest.approx(749.9504539, rel=1e-3)
    assert sat["DenDF"] == pytest.approx(16.99984605, rel=1e-3)
    assert sat["NumDF"] == 2
    kr = model.test(np.eye(2), ddf="kenward-roger").iloc[0]
    assert kr["F value"] == pytest.approx(705.8357213, rel=1e-3)
    assert kr["DenDF"] == pytest.approx(16, rel=1e-3)
    assert kr["Sum Sq"] == pytest.approx(982345.1129, rel=1e-3)
    # named contrasts; a one-row F test is the t test squared
    named = model.test(pd.Series({"Days": 1.0}))
    assert named["t value"].iloc[0] == one["t value"].iloc[0]
    f1 = model.test(pd.DataFrame([[0.0, 1.0], [0.0, 2.0]], columns=["(Intercept)", "Days"])).iloc[0]
    assert f1["NumDF"] == 1 and f1["F value"] == pytest.approx(one["t value"].iloc[0] ** 2)


def test_contrast_errors_name_the_problem():
    model, _ = fitted("sleepstudy", "reml")
    with pytest.raises(ValueError, match="one column per estimated fixed effect"):
        model.test([1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="not fixed effects"):
        model.test(pd.Series({"age": 1.0}))
    with pytest.raises(ValueError, match="ddf='bogus'"):
        model.test([0, 1], ddf="bogus")
    ml, _ = fitted("sleepstudy", "ml")
    with pytest.raises(ValueError, match="only available for REML"):
        ml.test([0, 1], ddf="kenward-roger")
    from sklmm import anova

    with pytest.raises(ValueError, match="type=4"):
        anova(model, type=4)


def test_pickled_model_keeps_computed_df_and_otherwise_falls_back():
    import pickle

    from sklmm import MixedLinearRegressor
    from sklmm.datasets import load_sleepstudy

    X, y, groups = load_sleepstudy(return_X_y_groups=True)
    model = MixedLinearRegressor(random_effects="(1 + Days | Subject)").fit(X, y, groups=groups)
    fresh = pickle.loads(pickle.dumps(model))
    with pytest.warns(UserWarning, match="not saved"):
        table = fresh.summary().fixed_effects
    assert "df" not in table.columns
    expected = model.summary().fixed_effects
    restored = pickle.loads(pickle.dumps(model))
    pd.testing.assert_frame_equal(restored.summary().fixed_effects, expected)


# -- formula fits (sklmm.lmer): anova by model term ---------------------------------------------


def formula_data(name: str) -> pd.DataFrame:
    spec, _, data = formula_case(name)
    frame = data.copy()
    for v in [spec["response"], *as_list(spec.get("numeric", []))]:
        frame[v] = frame[v].astype(float)
    return frame


@lru_cache(maxsize=None)
def fitted_formula(name: str, method: str):
    import sklmm

    spec, _, _ = formula_case(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sklmm.lmer(spec["formula"], formula_data(name), reml=method == "reml")


TERM_PARAMS = [
    pytest.param(name, fit, method, type, id=f"{name}-{fit}-{method}-type{type}")
    for name in FORMULA_CASES
    for fit in ("reml", "ml")
    for method in METHODS
    if method in formula_case(name)[1]["formula"][fit]
    for type in ("1", "2", "3")
]


@pytest.mark.parametrize("name, fit, method, type", TERM_PARAMS)
def test_anova_by_formula_term_against_lmertest(name, fit, method, type):
    """lmerTest's F table per term of the formula (a factor's columns together): types 1, 2, 3."""
    model = fitted_formula(name, fit)
    table = formula_case(name)[1]["formula"][fit][method]["anova"][type]
    check_anova(model, table, int(type), METHODS[method], as_list(table["terms"]))


@pytest.mark.parametrize("name", FORMULA_CASES)
def test_formula_fit_coefficient_tables_against_lmertest(name):
    model = fitted_formula(name, "reml")
    _, ref, _ = formula_case(name)
    for method in METHODS:
        if method in ref["formula"]["reml"]:
            check_coef_table(model, ref["formula"]["reml"][method]["coef"], METHODS[method])


@pytest.mark.parametrize("name", ["ham", "cake_factorial", "sleep_groups"])
def test_full_dummy_columns_from_the_model_matrix_equal_the_datas(name):
    """model.matrix(~ 0 + term) rebuilt from the treatment-coded columns equals the indicators of the data."""
    from sklmm._inference.ddf import lmm_tests
    from sklmm._inference.ftests import _full_dummy_factory, term_structure

    model = fitted_formula(name, "reml")
    frame = formula_data(name)
    terms = term_structure(model)
    full_dummy = _full_dummy_factory(model, terms, lmm_tests(model).prepared.design)
    levels = model._design.factor_levels
    for label in terms.labels:
        cols, names = full_dummy(label)
        direct = np.ones((len(frame), 1))
        for v in terms.variables[label]:  # the first variable varies fastest, as R's model.matrix
            if v in levels:
                ind = np.column_stack([(frame[v].astype(str) == str(level)).to_numpy(float) for level in levels[v]])
                direct = np.column_stack([direct[:, i] * ind[:, j] for j in range(ind.shape[1]) for i in range(direct.shape[1])])
            else:
                direct = direct * frame[v].to_numpy(dtype=float)[:, None]
        np.testing.assert_allclose(cols, direct, atol=1e-12, err_msg=label)
        assert len(names) == cols.shape[1]


def test_type3_with_sum_contrasts_says_what_to_do():
    import sklmm

    data = formula_data("ham")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sklmm.lmer("liking ~ C(Product, contr.sum) * Information + (1 | Consumer)", data)
    with pytest.raises(ValueError, match="treatment-coded"):
        sklmm.anova(model, type=3)
    assert len(sklmm.anova(model, type=1)) == 3


NONHIERARCHICAL = json.loads((DATA / "nonhierarchical.json").read_text())


@pytest.mark.parametrize("index", range(len(NONHIERARCHICAL)), ids=[c["formula"] for c in NONHIERARCHICAL])
def test_anova_of_terms_without_their_margins(index):
    """R codes a factor by dummies where the term without it is not in the model; lmerTest's
    containment (types 2, 3) reads only the contrast-coded variables (make_nonhierarchical.R)."""
    import sklmm

    case = NONHIERARCHICAL[index]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sklmm.lmer(case["formula"], formula_data("ham"))
    for type in ("1", "2", "3"):
        check_anova(model, case["anova"][type], int(type), "satterthwaite", as_list(case["anova"][type]["terms"]))
