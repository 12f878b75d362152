"""Conditional variances of the random effects against lme4 1.1-31's ``condVar``, and prediction standard errors.

Expected values: tests/data/lme4_inference/<case>.json ``condvar`` (made by
make_inference.R there: ``attr(ranef(fit, condVar = TRUE)[[g]], "postVar")``),
every level of every factor.  Tolerance: each covariance within 1e-3 of
sqrt(v_ii v_jj) (lme4's variances), plus 1e-6 sigma^2 absolute for the
boundary terms (cake's recipe, dyestuff2's Batch, where lme4's theta is
2e-5 and sklmm's 0).  The largest difference on the 36 case/method pairs
is 5e-5 of that scale.

lme4 1.1-31 has no prediction standard errors; those are checked against a
dense brute-force computation (Henderson's mixed-model equations solved
directly) to 1e-8 relative.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dense_lmm import DenseModel
from reference_cases import CASES, fitted, sklmm_group_name, sklmm_level

INFERENCE = Path(__file__).parent / "data" / "lme4_inference"
PARAMS = [pytest.param(case, method, id=f"{case}-{method}") for case in CASES for method in ["reml", "ml"]]


def lme4_condvar(case: str, method: str, model) -> dict[str, tuple[list[str], np.ndarray]]:
    """lme4's postVar per sklmm factor: (levels in sklmm's spelling, (n_levels, p, p) array in ranef column order)."""
    factors = json.loads((INFERENCE / f"{case}.json").read_text())[method]["condvar"]["factors"]
    out = {}
    for r_group, entry in factors.items():
        group = sklmm_group_name(r_group, set(model.random_effects_))
        levels = [sklmm_level(str(level), r_group, group) for level in entry["levels"]]
        columns = entry["columns"] if isinstance(entry["columns"], list) else [entry["columns"]]
        if entry["postVar_is_list"]:  # `||` terms: one array per term, zero covariance between them
            array = np.zeros((len(levels), len(columns), len(columns)))
            for term in entry["terms"]:
                term_columns = term["term_columns"] if isinstance(term["term_columns"], list) else [term["term_columns"]]
                index = [columns.index(c) for c in term_columns]
                array[np.ix_(range(len(levels)), index, index)] = np.asarray(term["condvar"], dtype=float).reshape(len(levels), len(index), len(index))
        else:
            array = np.asarray(entry["condvar"], dtype=float).reshape(len(levels), len(columns), len(columns))
        out[group] = (levels, columns, array)
    return out


@pytest.mark.parametrize("case, method", PARAMS)
def test_condvar_matches_lme4(case, method):
    model, _ = fitted(case, method)
    covariances = model.random_effects_cov_
    expected = lme4_condvar(case, method, model)
    assert set(covariances) == set(expected)
    for group, (levels, columns, array) in expected.items():
        frame = model.random_effects_[group]
        assert list(frame.columns) == columns
        rows = frame.index.astype(str).get_indexer(levels)
        assert (rows >= 0).all()
        mine = covariances[group][rows]
        assert mine.shape == array.shape
        sd = np.sqrt(np.einsum("lii->li", array))
        scale = np.einsum("li,lj->lij", sd, sd) + 1e-6 * model.sigma_**2
        assert np.max(np.abs(mine - array) / scale) < 1e-3, group


def test_condvar_is_cached_and_follows_a_refit():
    from sklearn.base import clone

    model, _ = fitted("sleepstudy", "reml")
    first = model.random_effects_cov_
    assert model.random_effects_cov_ is first
    data = model._training_data
    other = clone(model).fit(pd.DataFrame(data.X, columns=model.feature_names_in_), data.y, groups=data.groups)
    other.random_effects_cov_  # noqa: B018 - computed and cached
    other.fit(pd.DataFrame(data.X, columns=model.feature_names_in_), data.y * 2.0, groups=data.groups)
    np.testing.assert_allclose(other.random_effects_cov_["Subject"], 4.0 * first["Subject"], rtol=1e-4)


def test_pickling_keeps_the_original_models_training_data():
    """Regression: __getstate__ used to pop the training data from the live model, not from a copy."""
    import copy

    model, _ = fitted("dyestuff", "ml")
    pickle.dumps(model)
    copy.deepcopy(model)
    assert model._training_data is not None
    model.confint("profile", parm="sigma")  # still works


def test_condvar_without_random_effects_and_after_unpickling():
    from sklmm import MixedLinearRegressor

    rng = np.random.default_rng(0)
    plain = MixedLinearRegressor().fit(rng.normal(size=(20, 1)), rng.normal(size=20))
    assert plain.random_effects_cov_ == {}
    model, _ = fitted("dyestuff", "reml")
    restored = pickle.loads(pickle.dumps(model))
    if "_random_effects_cov" in model.__dict__:  # cached before pickling: kept
        np.testing.assert_array_equal(restored.random_effects_cov_["Batch"], model.random_effects_cov_["Batch"])
    fresh = pickle.loads(pickle.dumps(fitted("dyestuff2", "reml")[0]))
    fresh.__dict__.pop("_random_effects_cov", None)
    with pytest.raises(RuntimeError, match="fit the model again"):
        fresh.random_effects_cov_


# -- prediction standard errors ----------------------------------------------------------------


def brute_force_se(model, rows: np.ndarray, known: np.ndarray) -> np.ndarray:
    """sigma sqrt(v' C^-1 v), v = [Lambda' z; x] for training rows (z zeroed where the level is 'unknown')."""
    dense = DenseModel(model)
    C = dense.mme(model.theta_)
    Lam = dense.Lambda(model.theta_)
    kept = [list(["(Intercept)"] + list(model._training_data.feature_names)).index(n) for n in model.fixed_effects_.index]
    V = np.hstack([dense.Z[rows] @ Lam * known[:, None], dense.X[rows][:, kept]])
    C = C[np.ix_(list(range(Lam.shape[0])) + [Lam.shape[0] + k for k in kept], list(range(Lam.shape[0])) + [Lam.shape[0] + k for k in kept])]
    return model.sigma_ * np.sqrt(np.einsum("ij,ji->i", V, np.linalg.solve(C, V.T)))


@pytest.mark.parametrize("case", ["sleepstudy", "penicillin", "pastes", "zerocorr_crossed", "sleepstudy_weighted", "crossed3"])
def test_prediction_standard_errors_by_brute_force(case):
    model, _ = fitted(case, "reml")
    data = model._training_data
    n = len(data.y)
    rows = np.unique(np.linspace(0, n - 1, 25).astype(int))
    X = pd.DataFrame(data.X[rows], columns=model.feature_names_in_) if hasattr(model, "feature_names_in_") else data.X[rows]
    groups = data.groups.iloc[rows].reset_index(drop=True)
    conditional = model.predict_se(X, groups=groups)
    np.testing.assert_allclose(conditional, brute_force_se(model, rows, np.ones(len(rows))), rtol=1e-8)
    population = model.predict_se(X)
    np.testing.assert_allclose(population, brute_force_se(model, rows, np.zeros(len(rows))), rtol=1e-8)
    x = np.column_stack([np.ones(len(rows)), data.X[rows]])
    V = model.fixed_effects_cov_.to_numpy()
    np.testing.assert_allclose(population, np.sqrt(np.einsum("ij,jk,ik->i", x, V, x)), rtol=1e-10)
    assert np.all(conditional > 0)


def test_prediction_standard_errors_with_new_levels():
    model, _ = fitted("penicillin", "reml")
    data = model._training_data
    groups = data.groups.iloc[:3].reset_index(drop=True).copy()
    groups.loc[0, "plate"] = "NEW"  # the plate term drops out for this row; sample stays
    groups.loc[1, ["plate", "sample"]] = ["NEW", "NEW"]  # population level
    X = pd.DataFrame(np.empty((3, 0)))
    se = model.predict_se(X, groups=groups)
    dense = DenseModel(model)
    Lam = dense.Lambda(model.theta_)
    C = dense.mme(model.theta_)
    Zrow = dense.Z[:3] @ Lam
    q_plate = len(model.random_effects_["plate"])
    Zrow[0, :q_plate] = 0.0
    Zrow[1, :] = 0.0
    v = np.hstack([Zrow, np.ones((3, 1))])
    expected = model.sigma_ * np.sqrt(np.einsum("ij,ji->i", v, np.linalg.solve(C, v.T)))
    np.testing.assert_allclose(se, expected, rtol=1e-8)
    assert se[1] == pytest.approx(model.fixed_effects_.loc["(Intercept)", "std_error"], rel=1e-10)
