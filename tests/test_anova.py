"""``sklmm.anova`` against lme4 1.1-31's ``anova(m0, m1, ...)``.

Expected values: tests/data/lme4_inference/anova.json (make_inference.R there):
lme4's tables for nested fits to tests/data/lme4/sleepstudy/data.csv and
tests/data/lme4/penicillin/data.csv.  Tolerances: npar and Df exact;
logLik, deviance, AIC and BIC 1e-6 relative (lme4's ``refitML`` and a direct
ML fit differ by about 1e-8); Chisq 1e-4 absolute; Pr(>Chisq) 1e-3 relative.

Comparison ``c_sleepstudy_fixed_days_ml`` (``Reaction ~ 1 + (1 + Days |
Subject)``, a random slope without its fixed slope) is not expressible in
sklmm, whose slope columns are fixed effects too, and is left out.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sklmm import AnovaTable, MixedLinearRegressor, anova

DATA = Path(__file__).parent / "data"
REFERENCE = json.loads((DATA / "lme4_inference" / "anova.json").read_text())["comparisons"]

#: lme4 formula -> (dataset, fixed columns, sklmm random_effects)
MODELS = {
    "Reaction ~ Days + (1 | Subject)": ("sleepstudy", ["Days"], "(1 | Subject)"),
    "Reaction ~ Days + (1 + Days | Subject)": ("sleepstudy", ["Days"], "(1 + Days | Subject)"),
    "Reaction ~ Days + ((1 | Subject) + (0 + Days | Subject))": ("sleepstudy", ["Days"], "(1 + Days || Subject)"),
    "diameter ~ 1 + (1 | plate)": ("penicillin", [], "(1 | plate)"),
    "diameter ~ 1 + (1 | plate) + (1 | sample)": ("penicillin", [], "(1 | plate) + (1 | sample)"),
}
RESPONSE = {"sleepstudy": "Reaction", "penicillin": "diameter"}
GROUPS = {"sleepstudy": ["Subject"], "penicillin": ["plate", "sample"]}
COMPARISONS = [key for key in REFERENCE if key != "c_sleepstudy_fixed_days_ml"]


def fit(formula: str, reml: bool) -> MixedLinearRegressor:
    dataset, fixed, random_effects = MODELS[formula]
    data = pd.read_csv(DATA / "lme4" / dataset / "data.csv", dtype={g: str for g in GROUPS[dataset]})
    X = data[fixed].astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MixedLinearRegressor(random_effects=random_effects, reml=reml).fit(
            X, data[RESPONSE[dataset]].to_numpy(float), groups=data[GROUPS[dataset]]
        )


@pytest.mark.parametrize("key", COMPARISONS)
def test_anova_matches_lme4(key):
    comparison = REFERENCE[key]
    models = [fit(m["formula"], m["REML"]) for m in comparison["models"]]
    names = [m["name"] for m in comparison["models"]]
    refit = "refit = FALSE" not in comparison["call"]
    table = anova(*models, refit=refit, names=names)
    expected = comparison["table"]

    assert isinstance(table, AnovaTable)
    assert list(table.index) == expected["rownames"]
    assert list(table.columns) == ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)"]
    assert table["npar"].tolist() == expected["npar"]
    for column in ["AIC", "BIC", "logLik", "deviance"]:
        np.testing.assert_allclose(table[column], expected[column], rtol=1e-6, err_msg=column)
    assert np.isnan(table["Chisq"].iloc[0]) and np.isnan(table["Df"].iloc[0]) and np.isnan(table["Pr(>Chisq)"].iloc[0])
    np.testing.assert_allclose(table["Chisq"].iloc[1:], expected["Chisq"][1:], atol=1e-4)
    assert table["Df"].iloc[1:].tolist() == expected["Df"][1:]
    np.testing.assert_allclose(table["Pr(>Chisq)"].iloc[1:], expected["Pr(>Chisq)"][1:], rtol=1e-3)

    # lme4's message when it refits; sklmm's note says the same
    if comparison["messages"]:
        assert table.attrs["note"] == comparison["messages"][0]
        assert repr(table).startswith(comparison["messages"][0] + "\nModels:\n")
    else:
        assert table.attrs["note"] is None
    heading = [line for line in comparison["heading"] if line.startswith("m")]
    assert [line.split(":")[0] for line in table.attrs["heading"][1:]] == [line.split(":")[0] for line in heading]


def test_ml_refit_matches_lme4s_refitML():
    comparison = REFERENCE["a_sleepstudy_slope_reml"]
    for model_ref in comparison["models"]:
        model = fit(model_ref["formula"], reml=True)
        table = anova(model, fit(model_ref["formula"], reml=True), names=["a", "b"])
        assert table.loc["a", "logLik"] == pytest.approx(model_ref["ml_refit"]["logLik"], rel=1e-8)
        assert model.log_likelihood_ == pytest.approx(model_ref["logLik"], rel=1e-8)  # the REML fit itself is untouched


def test_default_names_order_and_html():
    m1 = fit("Reaction ~ Days + (1 + Days | Subject)", reml=False)
    m0 = fit("Reaction ~ Days + (1 | Subject)", reml=False)
    table = anova(m1, m0)  # rows are ordered by npar, labelled by argument position
    assert list(table.index) == ["m1", "m0"]
    assert table.attrs["heading"] == ["Models:", "m1: y ~ 1 + Days + (1 | Subject)", "m0: y ~ 1 + Days + (1 + Days | Subject)"]
    assert "<table" in table._repr_html_()
    assert isinstance(table[["AIC", "BIC"]], AnovaTable)


def test_anova_refuses_different_data_and_no_models():
    m0 = fit("Reaction ~ Days + (1 | Subject)", reml=False)
    small = MixedLinearRegressor(random_effects="(1 | g)", reml=False).fit(
        np.arange(20.0)[:, None], np.random.default_rng(0).normal(size=20), groups=pd.Series(np.repeat(list("abcde"), 4), name="g")
    )
    with pytest.raises(ValueError, match="same size of dataset"):
        anova(m0, small)
    with pytest.raises(ValueError, match="one fitted model"):
        anova()
    assert list(anova(m0).columns) == ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]  # one model: F tests (test_fixed_effect_tests)
    with pytest.raises(ValueError, match="names="):
        anova(m0, m0, names=["a", "a"])


def test_mixed_reml_and_ml_without_refit_warns():
    m0 = fit("Reaction ~ Days + (1 | Subject)", reml=True)
    m1 = fit("Reaction ~ Days + (1 + Days | Subject)", reml=False)
    with pytest.warns(UserWarning, match="some models were fit with REML"):
        anova(m0, m1, refit=False)


def test_against_a_model_without_random_effects():
    """The random intercept against least squares (lme4: anova(lmer_fit, lm_fit)); the least-squares
    log-likelihood checked against its closed form -n/2 (log(2 pi RSS/n) + 1)."""
    m1 = fit("Reaction ~ Days + (1 | Subject)", reml=False)
    data = pd.read_csv(DATA / "lme4" / "sleepstudy" / "data.csv")
    m0 = MixedLinearRegressor(reml=False).fit(data[["Days"]], data["Reaction"].to_numpy(float))
    table = anova(m1, m0)
    n = len(data)
    design = np.column_stack([np.ones(n), data["Days"]])
    rss = np.sum((data["Reaction"] - design @ np.linalg.lstsq(design, data["Reaction"], rcond=None)[0]) ** 2)
    assert table.loc["m1", "logLik"] == pytest.approx(-0.5 * n * (np.log(2 * np.pi * rss / n) + 1), rel=1e-10)
    assert list(table.index) == ["m1", "m0"] and table["npar"].tolist() == [3, 4]
    assert table.loc["m0", "Chisq"] == pytest.approx(2 * (m1.log_likelihood_ - table.loc["m1", "logLik"]), rel=1e-10)


def test_one_glmm_gets_a_clear_error():
    import pandas as pd

    import sklmm
    from sklmm import MixedPoissonRegressor

    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(10), 8)
    y = rng.poisson(np.exp(0.5 + rng.normal(0, 0.5, 10)[g]))
    model = MixedPoissonRegressor(random_effects="(1 | group)").fit(np.zeros((80, 0)), y, groups=g)
    with pytest.raises(TypeError, match="lmerTest's F tests, which are for linear mixed models"):
        sklmm.anova(model)
