"""Formula models on Dask collections equal the in-memory formula fits (sklmm._dask.formula),
and compact partition blocks add up to the blocks of all rows (sklmm._engine.blocks).

Expected numbers are sklmm's in-memory formula fits of the same rows (checked
against lme4 by tests/test_formula_reference.py); tolerance 1e-8 relative, the
issue's, with the absolute floor of tests/test_dask.py.  Fits run on Dask's
synchronous scheduler and, for two models, on a LocalCluster with two worker
processes.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest

dask = pytest.importorskip("dask")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import sklmm  # noqa: E402
from sklmm import MixedLinearRegressor  # noqa: E402
from sklmm._engine.blocks import form_blocks, sum_blocks  # noqa: E402
from sklmm._engine.fit import TrainingData, prepare  # noqa: E402
from sklmm._model.bars import parse_random_effects  # noqa: E402
from sklmm._model.terms import build_terms  # noqa: E402

from test_dask import RTOL, _data, assert_same_fit  # noqa: E402


@pytest.fixture(scope="module")
def cluster_client():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        client = distributed.Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    """test_dask's data with a two-level factor f whose effect varies by a, and a positive t."""
    frame = _data()
    frame["f"] = np.where(frame["x1"] > 0, "hi", "lo")
    codes = frame["a"].str[1:].astype(int).to_numpy()
    frame["y"] = frame["y"] + 0.8 * np.random.default_rng(5).normal(size=48)[codes] * (frame["f"] == "hi")
    frame["t"] = np.exp(frame["x1"])
    return frame


MODELS = {
    "correlated slope": ("y ~ x0 + x1 + (1 + x0 | a)", None),
    "factor slope, interaction, transform, crossed, weights": ("y ~ x0 * f + log(t) + (1 + f | a) + (1 | b)", "w"),
    "I(), offset, ||, nested, weights": ("y ~ x0 + I(x1^2) + offset(0.5 * x1) + (x0 || a) + (1 | c/a)", "w"),
    "response expression, factor(), interaction factor": ("log(abs(y) + 1) ~ factor(b) + x0 + (1 | a:b)", None),
}


@pytest.mark.parametrize("model", list(MODELS))
def test_lmer_on_dask_equals_the_in_memory_fit(data, model):
    formula, weights = MODELS[model]
    ddf = dd.from_pandas(data, npartitions=5)
    expected = sklmm.lmer(formula, data, weights=weights)
    with dask.config.set(scheduler="synchronous"):
        got = sklmm.lmer(formula, ddf, weights=weights)
    assert_same_fit(got, expected)
    assert "Formula: " + formula in str(got.summary())


@pytest.mark.parametrize("model", ["factor slope, interaction, transform, crossed, weights", "I(), offset, ||, nested, weights"])
def test_formula_fit_and_lazy_predict_on_the_cluster(data, model, cluster_client):
    """Worker processes: the design travels to them, each partition is encoded there."""
    formula, weights = MODELS[model]
    train, test = data.iloc[:2000], data.iloc[2000:].copy()
    test.loc[test.index[:20], "a"] = "new level"
    expected = sklmm.lmer(formula, train, weights=weights)
    with cluster_client.as_current(), dask.config.set(scheduler=cluster_client.get):
        got = sklmm.lmer(formula, dd.from_pandas(train, npartitions=4), weights=weights)
        lazy = got.predict(dd.from_pandas(test, npartitions=3))
        assert isinstance(lazy, dd.Series) and lazy.npartitions == 3
        predicted = lazy.compute()
    assert_same_fit(got, expected)
    np.testing.assert_allclose(predicted.to_numpy(), expected.predict(test), rtol=RTOL)
    pd.testing.assert_index_equal(predicted.index, test.index)


def test_estimator_formula_with_dask_y_weights_predict_and_score(data):
    ddf = dd.from_pandas(data, npartitions=4)
    formula = "~ x0 + f + (1 + x0 | a) + (1 | b)"
    expected = MixedLinearRegressor(formula=formula, reml=False).fit(data, data["y"], sample_weight=data["w"])
    with dask.config.set(scheduler="synchronous"):
        got = MixedLinearRegressor(formula=formula, reml=False).fit(ddf, ddf["y"], sample_weight=ddf["w"])
        predicted = got.predict(ddf).compute()
        score = got.score(ddf, ddf["y"], sample_weight=ddf["w"]).compute()
    assert_same_fit(got, expected)
    assert list(got.feature_names_in_) == list(data.columns) and got.n_features_in_ == data.shape[1]
    np.testing.assert_allclose(predicted.to_numpy(), expected.predict(data), rtol=RTOL)
    assert score == pytest.approx(expected.score(data, data["y"], sample_weight=data["w"]), rel=RTOL)
    # a model fitted on Dask predicts pandas rows as the in-memory one
    np.testing.assert_allclose(got.predict(data.iloc[:100]), expected.predict(data.iloc[:100]), rtol=RTOL)


def test_levels_from_every_partition_zero_weights_and_categoricals(data):
    """Partitions hold disjoint levels of the fixed factor and of the grouping factor; a known
    categorical keeps its category order; rows of weight 0 keep their factor levels (as in memory)."""
    frame = data.copy()
    frame["k"] = pd.Categorical(frame["c"], categories=["c5", "c3", "c1", "c0", "c2", "c4"])
    frame["w"] = np.where(np.arange(len(frame)) % 9 == 0, 0.0, frame["w"])
    frame = frame.sort_values(["c", "a"], kind="stable").reset_index(drop=True)
    ddf = dd.from_pandas(frame, npartitions=6, sort=False)
    formula = "y ~ x0 + k + (1 | a)"
    expected = sklmm.lmer(formula, frame, weights="w")
    with dask.config.set(scheduler="synchronous"):
        got = sklmm.lmer(formula, ddf, weights="w")
    assert_same_fit(got, expected)
    assert list(got.fixed_effects_.index) == ["(Intercept)", "x0", "kc3", "kc1", "kc0", "kc2", "kc4"]


@pytest.mark.parametrize("formula", ["y ~ scale(x0) + center(log(t)) + (1 + scale(x0) | a)", "y ~ x1:scale(x0^2) + (center(x1) || b) + (1 | a)"])
def test_center_and_scale_use_the_statistics_of_all_partitions(data, formula):
    """center()/scale(): mean and standard deviation over all rows (weights aside, as formulaic),
    combined from the partitions' moments; fit and predictions as in memory."""
    ddf = dd.from_pandas(data, npartitions=5)
    expected = sklmm.lmer(formula, data, weights="w")
    with dask.config.set(scheduler="synchronous"):
        got = sklmm.lmer(formula, ddf, weights="w")
        predicted = got.predict(ddf).compute()
    assert_same_fit(got, expected)
    for key, state in expected._design.fixed.spec.transform_state.items():
        for name in ("center", "scale"):
            if state[name] is not None:
                assert got._design.fixed.spec.transform_state[key][name] == pytest.approx(state[name], rel=1e-13)
    np.testing.assert_allclose(predicted.to_numpy(), expected.predict(data), rtol=RTOL)


def test_other_stateful_transforms_and_bad_input_are_refused_by_name(data):
    ddf = dd.from_pandas(data, npartitions=3)
    with dask.config.set(scheduler="synchronous"):
        for formula, call in [
            ("y ~ poly(x0, 2) + (1 | a)", "poly(x0, 2)"),
            ("y ~ x1 + (bs(x0, df=4) | a)", "bs(x0, df=4)"),
            ("y ~ scale(x0, center=False) + (1 | a)", "scale(x0, center=False)"),
            ("y ~ lag(x0) + (1 | a)", "lag(x0)"),
        ]:
            with pytest.raises(ValueError, match=r"stateful transform\(s\) \[" + re.escape(repr(call)) + r"\]"):
                sklmm.lmer(formula, ddf)
        with pytest.raises(ValueError, match=r"stateful transform\(s\) \['scale\(y\)'\]"):
            sklmm.lmer("scale(y) ~ x0 + (1 | a)", ddf)
        with pytest.raises(ValueError, match="grouping factor 'z'"):
            sklmm.lmer("y ~ x0 + (1 | z)", ddf)
        broken = data.copy()
        broken.loc[7, "f"] = None
        with pytest.raises(ValueError, match="column 'f'"):
            sklmm.lmer("y ~ f + (1 | a)", dd.from_pandas(broken, npartitions=3))
        with pytest.raises(ValueError, match="groups was passed"):
            MixedLinearRegressor(formula="~ x0 + (1 | a)").fit(ddf, ddf["y"], groups=ddf["a"])
        with pytest.raises(ValueError, match="weights='nope'"):
            sklmm.lmer("y ~ x0 + (1 | a)", ddf, weights="nope")


@pytest.mark.parametrize("random_effects", ["(1 | a)", "(1 + x0 | a) + (1 | b)", "(1 | c/a)", "(1 + x1 | b) + (1 | a) + (1 | c)"])
def test_compact_blocks_hold_their_levels_and_add_up_exactly(data, random_effects):
    """form_blocks(compact=True) on row subsets holding few levels, summed and expanded, equals
    the ordinary blocks of all rows (engine level; summation order aside: 1e-12 relative)."""
    groups = data[["a", "b", "c"]]
    X = data[["x0", "x1"]].to_numpy()
    w = data["w"].to_numpy()
    specs = parse_random_effects(random_effects)
    training = TrainingData(X, data["y"].to_numpy(), groups, w, specs, ["x0", "x1"], True)
    whole = prepare(training, reml=True, warn=False)
    stacked = np.column_stack([whole.design, data["y"].to_numpy() - whole.problem.y_offset])
    codes = {t.factors: (t.refs, t.levels) for t in whole.terms}
    dense = form_blocks(whole.terms, stacked, w)
    pieces = []
    order = np.argsort(data["a"].to_numpy(), kind="stable")  # subsets hold few levels of a
    for rows in np.array_split(order, 5):
        sub_codes = {key: (refs[rows], levels) for key, (refs, levels) in codes.items()}
        terms = build_terms(specs, X[rows], ["x0", "x1"], groups.iloc[rows], codes=sub_codes)
        piece = form_blocks(terms, stacked[rows], w[rows], compact=True)
        assert piece.compact and len(piece.levels0) == len(np.unique(terms[0].refs))
        if terms[0].factors == ("a",):
            assert len(piece.levels0) < terms[0].n_levels / 4 and piece.A00.shape[0] == len(piece.levels0)
        pieces.append(piece)
    summed = sum_blocks([sum_blocks(pieces[:2]), sum_blocks(pieces[2:])])  # a two-level tree
    expanded = summed.expanded([t.n_levels for t in whole.terms], [t.n_columns for t in whole.terms])
    for name in ("AXX", "A00", "AX0", "AXr", "parent_range"):
        want, got = getattr(dense, name), getattr(expanded, name)
        if want is None:
            assert got is None, name
            continue
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.max(np.abs(want)), err_msg=name)
    for name in ("Ar0", "Arr"):
        want, got = getattr(dense, name), getattr(expanded, name)
        if want is not None:
            np.testing.assert_allclose(got.toarray(), want.toarray(), rtol=1e-12, atol=1e-12 * abs(want).max(), err_msg=name)
    assert expanded.n == dense.n and expanded.sum_log_weights == pytest.approx(dense.sum_log_weights, rel=1e-12)
