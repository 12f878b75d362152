"""Fits, predictions and scores on Dask collections equal the in-memory ones (sklmm._dask).

Expected numbers come from sklmm's own in-memory fit of the same rows, which
the rest of the suite checks against lme4; a Dask fit sums the same cross
products in another order, so the two agree to rounding.  Tolerance: 1e-8
relative (the issue's), with an absolute floor of 1e-8 times the largest
value of the same array for entries at zero (a variance on the boundary, a
conditional mode of a zero variance term).

Two schedulers: Dask's synchronous one, and a real ``distributed.LocalCluster``
with two worker processes (one for the module: starting it takes seconds).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

dask = pytest.importorskip("dask")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

from sklmm import MixedLinearRegressor  # noqa: E402
from sklmm._engine.blocks import form_blocks, sum_blocks  # noqa: E402
from sklmm._engine.deviance import ProfiledDeviance  # noqa: E402
from sklmm._engine.fit import TrainingData, prepare  # noqa: E402
from sklmm._model.bars import parse_random_effects  # noqa: E402
from sklmm._model.terms import build_terms  # noqa: E402

RTOL = 1e-8


@pytest.fixture(scope="module")
def cluster_client():
    """One LocalCluster with two worker processes for the module."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the dashboard's port, when taken, is reported as a warning
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        client = distributed.Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(params=["synchronous", "distributed"])
def scheduler(request):
    """Run the test body on Dask's synchronous scheduler or on the LocalCluster."""
    if request.param == "synchronous":
        with dask.config.set(scheduler="synchronous"):
            yield request.param
    else:
        client = request.getfixturevalue("cluster_client")
        with client.as_current(), dask.config.set(scheduler=client.get):
            yield request.param


def _data(n=2400, seed=3) -> pd.DataFrame:
    """Covariates, crossed (a, b), nested (c > a) and interaction factors, weights; real variances."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 48, n)
    b = rng.integers(0, 9, n)
    c = a % 6
    x0, x1 = rng.normal(size=n), rng.uniform(-1, 1, size=n)
    y = (
        3.0 + 0.5 * x0 - x1
        + rng.normal(size=48)[a] + 0.6 * rng.normal(size=48)[a] * x0
        + 0.8 * rng.normal(size=9)[b] + 0.9 * rng.normal(size=6)[c]
        + rng.normal(size=n)
    )
    return pd.DataFrame({
        "x0": x0, "x1": x1, "a": [f"s{v:02d}" for v in a], "b": b, "c": [f"c{v}" for v in c],
        "y": y, "w": rng.uniform(0.3, 3.0, size=n),
    })


@pytest.fixture(scope="module")
def data():
    return _data()


def _close(got, expected, what):
    got, expected = np.asarray(got, dtype=float), np.asarray(expected, dtype=float)
    floor = RTOL * max(np.max(np.abs(expected), initial=0.0), 1e-300)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=floor, err_msg=what)


def assert_same_fit(got: MixedLinearRegressor, expected: MixedLinearRegressor):
    """Objective, coefficients, theta, sigma, standard errors, conditional modes: 1e-8 relative."""
    _close(got.objective_, expected.objective_, "objective")
    _close(got.theta_, expected.theta_, "theta")
    _close(np.r_[got.intercept_, got.coef_], np.r_[expected.intercept_, expected.coef_], "fixed effects")
    _close(got.sigma_, expected.sigma_, "sigma")
    _close(got.fixed_effects_["std_error"], expected.fixed_effects_["std_error"], "standard errors")
    assert list(got.fixed_effects_.index) == list(expected.fixed_effects_.index)
    assert got.random_effects_.keys() == expected.random_effects_.keys()
    for name, frame in expected.random_effects_.items():
        assert list(got.random_effects_[name].index) == list(frame.index), name
        assert list(got.random_effects_[name].columns) == list(frame.columns), name
        _close(got.random_effects_[name], frame, f"conditional modes of {name}")
    pd.testing.assert_frame_equal(got.variance_components_[["group", "var1", "var2"]], expected.variance_components_[["group", "var1", "var2"]])
    assert got.n_obs_ == expected.n_obs_ and got.group_names_ == expected.group_names_
    assert got.aic_ == pytest.approx(expected.aic_, rel=RTOL)


CASES = {
    "intercept": ("(1 | a)", ["a"], False, True),
    "correlated slope": ("(1 + x0 | a)", ["a"], False, True),
    "independent slopes, weights": ("(1 + x0 || a)", ["a"], True, True),
    "crossed, weights": ("(1 | a) + (1 | b)", ["a", "b"], True, True),
    "nested": ("(1 | c/a)", ["c", "a"], False, True),
    "interaction, ML": ("(1 | a:b)", ["a", "b"], False, False),
    "crossed slopes, weights, ML": ("(1 + x1 | a) + (1 | b)", ["a", "b"], True, False),
}


#: The cases also run on the LocalCluster (each distributed fit costs about a second of
#: scheduling on the 2-core CI machine; the synchronous scheduler runs them all).
ON_CLUSTER = {"correlated slope", "crossed, weights", "nested"}


@pytest.mark.parametrize(
    ("case", "scheduler"),
    [(case, "synchronous") for case in CASES] + [(case, "distributed") for case in CASES if case in ON_CLUSTER],
    indirect=["scheduler"],
)
def test_fit_equals_the_in_memory_fit(case, data, scheduler):
    random_effects, groups, weighted, reml = CASES[case]
    ddf = dd.from_pandas(data, npartitions=5)
    expected = MixedLinearRegressor(random_effects=random_effects, reml=reml).fit(
        data[["x0", "x1"]], data["y"], groups=data[groups], sample_weight=data["w"] if weighted else None
    )
    got = MixedLinearRegressor(random_effects=random_effects, reml=reml).fit(
        ddf[["x0", "x1"]], ddf["y"], groups=ddf[groups], sample_weight=ddf["w"] if weighted else None
    )
    assert_same_fit(got, expected)
    assert list(got.feature_names_in_) == ["x0", "x1"] and got.n_features_in_ == 2


def test_sleepstudy_on_the_cluster_equals_lme4_fit(cluster_client):
    """The classic correlated-slope model, partitions of unequal size, on worker processes."""
    from sklmm.datasets import load_sleepstudy

    X, y, groups = load_sleepstudy(return_X_y_groups=True)
    frame = pd.concat([X, y.rename("Reaction"), groups], axis=1)
    ddf = dd.from_pandas(frame, npartitions=7)
    expected = MixedLinearRegressor(random_effects="(1 + Days | Subject)").fit(X, y, groups=groups)
    with cluster_client.as_current(), dask.config.set(scheduler=cluster_client.get):
        got = MixedLinearRegressor(random_effects="(1 + Days | Subject)").fit(ddf[["Days"]], ddf["Reaction"], groups=ddf["Subject"])
    assert_same_fit(got, expected)
    assert got.objective_ == pytest.approx(1743.6283, abs=1e-4)  # lme4 1.1-31: REML criterion 1743.628


def test_zero_weights_unordered_partitions_and_categoricals(data):
    """Rows of weight 0 are left out, levels are coded globally whatever the partitions hold,
    and known categoricals keep their category order (unused categories dropped)."""
    frame = data.sample(frac=1.0, random_state=0).reset_index(drop=True)
    frame["w"] = np.where(np.arange(len(frame)) % 7 == 0, 0.0, frame["w"])
    order = sorted(frame["c"].unique(), reverse=True) + ["unused"]
    frame["c"] = pd.Categorical(frame["c"], categories=order)
    # partitions hold disjoint sets of a's levels: sort by a first
    frame = frame.sort_values("a", kind="stable").reset_index(drop=True)
    ddf = dd.from_pandas(frame, npartitions=6, sort=False)
    assert ddf["c"].cat.known
    expected = MixedLinearRegressor(random_effects="(1 | a) + (1 | c)").fit(frame[["x0", "x1"]], frame["y"], groups=frame[["a", "c"]], sample_weight=frame["w"])
    with dask.config.set(scheduler="synchronous"):
        got = MixedLinearRegressor(random_effects="(1 | a) + (1 | c)").fit(ddf[["x0", "x1"]], ddf["y"], groups=ddf[["a", "c"]], sample_weight=ddf["w"])
    assert_same_fit(got, expected)
    assert list(got.random_effects_["c"].index) == order[:-1]


def test_aliased_column_is_dropped_as_in_memory(data):
    frame = data.assign(x2=2.0 * data["x0"] - data["x1"])
    ddf = dd.from_pandas(frame, npartitions=3)
    with dask.config.set(scheduler="synchronous"):
        with pytest.warns(UserWarning, match="x2"):
            got = MixedLinearRegressor(random_effects="(1 | a)").fit(ddf[["x0", "x1", "x2"]], ddf["y"], groups=ddf["a"])
    with pytest.warns(UserWarning, match="x2"):
        expected = MixedLinearRegressor(random_effects="(1 | a)").fit(frame[["x0", "x1", "x2"]], frame["y"], groups=frame["a"])
    assert_same_fit(got, expected)
    assert got.coef_[2] == 0.0


def test_predict_and_score_are_lazy_and_equal_in_memory(data, scheduler):
    train, test = data.iloc[:1800], data.iloc[1800:].copy()
    test.loc[test.index[:50], "a"] = "new level"  # population-level for these rows
    model = MixedLinearRegressor(random_effects="(1 + x0 | a) + (1 | b)").fit(train[["x0", "x1"]], train["y"], groups=train[["a", "b"]])
    ddf = dd.from_pandas(test, npartitions=4)
    prediction = model.predict(ddf[["x0", "x1"]], groups=ddf[["a", "b"]])
    assert isinstance(prediction, dd.Series) and prediction.npartitions == 4
    got = prediction.compute()
    np.testing.assert_allclose(got.to_numpy(), model.predict(test[["x0", "x1"]], groups=test[["a", "b"]]), rtol=1e-12)
    pd.testing.assert_index_equal(got.index, test.index)
    score = model.score(ddf[["x0", "x1"]], ddf["y"], groups=ddf[["a", "b"]], sample_weight=ddf["w"])
    assert dask.is_dask_collection(score)
    expected = model.score(test[["x0", "x1"]], test["y"], groups=test[["a", "b"]], sample_weight=test["w"])
    assert score.compute() == pytest.approx(expected, rel=1e-12)
    population = model.predict(ddf[["x0", "x1"]]).compute()
    np.testing.assert_allclose(population.to_numpy(), model.predict(test[["x0", "x1"]]), rtol=1e-12)


def test_dask_fitted_model_predicts_dask_and_pandas(data):
    ddf = dd.from_pandas(data, npartitions=3)
    with dask.config.set(scheduler="synchronous"):
        model = MixedLinearRegressor(random_effects="(1 + x0 | a)").fit(ddf[["x0", "x1"]], ddf["y"], groups=ddf["a"])
        lazy = model.predict(ddf[["x0", "x1"]], groups=ddf["a"]).compute()
    eager = model.predict(data[["x0", "x1"]], groups=data["a"])
    np.testing.assert_allclose(lazy.to_numpy(), eager, rtol=1e-12)


def test_fit_from_a_parquet_folder(tmp_path, data, scheduler):
    """Out of core: the fit reads the partitions from files, never all rows at once."""
    pytest.importorskip("pyarrow")
    folder = tmp_path / "rows"
    dd.from_pandas(data, npartitions=4).to_parquet(folder, write_index=False)
    assert len(list(folder.glob("*.parquet"))) == 4
    ddf = dd.read_parquet(folder)
    got = MixedLinearRegressor(random_effects="(1 | a) + (1 | b)").fit(ddf[["x0", "x1"]], ddf["y"], groups=ddf[["a", "b"]], sample_weight=ddf["w"])
    expected = MixedLinearRegressor(random_effects="(1 | a) + (1 | b)").fit(data[["x0", "x1"]], data["y"], groups=data[["a", "b"]], sample_weight=data["w"])
    assert_same_fit(got, expected)


def test_methods_needing_the_rows_say_so(data):
    ddf = dd.from_pandas(data, npartitions=2)
    with dask.config.set(scheduler="synchronous"):
        model = MixedLinearRegressor(random_effects="(1 | a)").fit(ddf[["x0", "x1"]], ddf["y"], groups=ddf["a"])
    for call in (lambda: model.simulate(1), lambda: model.confint("profile"), lambda: model.confint("bootstrap", n_boot=2)):
        with pytest.raises(RuntimeError, match="fit on Dask collections keeps none of them"):
            call()
    assert model.confint("wald").loc["x0"].notna().all()  # Wald intervals need only the fit
    assert "REML criterion" in str(model.summary())


def test_invalid_dask_input_is_refused_with_the_reason(data):
    ddf = dd.from_pandas(data, npartitions=3)
    other = dd.from_pandas(data, npartitions=2)
    model = MixedLinearRegressor(random_effects="(1 | a)")
    with dask.config.set(scheduler="synchronous"):
        with pytest.raises(ValueError, match="different numbers of partitions"):
            model.fit(ddf[["x0"]], other["y"], groups=ddf["a"])
        broken = data.copy()
        broken.loc[5, "y"] = np.nan
        bad = dd.from_pandas(broken, npartitions=3)
        with pytest.raises(ValueError, match="y has 1 missing or infinite"):
            model.fit(bad[["x0"]], bad["y"], groups=bad["a"])
        with pytest.raises(ValueError, match="names the grouping factor 'z'"):
            MixedLinearRegressor(random_effects="(1 | z)").fit(ddf[["x0"]], ddf["y"], groups=ddf["a"])


@pytest.mark.parametrize("random_effects", ["(1 | a)", "(1 + x0 | a) + (1 | b)", "(1 | c/a)", "(1 + x1 | b) + (1 | a)"])
def test_partial_blocks_add_up_to_the_blocks_of_all_rows(data, random_effects):
    """form_blocks over disjoint row sets, summed, gives the criterion of all rows (engine level)."""
    groups = data[["a", "b", "c"]]
    X = data[["x0", "x1"]].to_numpy()
    training = TrainingData(X, data["y"].to_numpy(), groups, data["w"].to_numpy(), parse_random_effects(random_effects), ["x0", "x1"], True)
    whole = prepare(training, reml=True, warn=False)
    problem = whole.problem
    stacked = np.column_stack([whole.design, data["y"].to_numpy() - problem.y_offset])
    codes = {t.factors: (t.refs, t.levels) for t in whole.terms}
    pieces = []
    for rows in np.array_split(np.random.default_rng(0).permutation(len(data)), 3):
        sub_codes = {key: (refs[rows], levels) for key, (refs, levels) in codes.items()}
        terms = build_terms(parse_random_effects(random_effects), X[rows], ["x0", "x1"], groups.iloc[rows], codes=sub_codes)
        pieces.append(form_blocks(terms, stacked[rows], data["w"].to_numpy()[rows]))
    summed = ProfiledDeviance.from_blocks(whole.terms, sum_blocks(pieces), reml=True, y_offset=problem.y_offset)
    if problem.q_rest:
        assert type(summed.rest) is type(problem.rest)
    rng = np.random.default_rng(1)
    for _ in range(3):
        theta = rng.uniform(0.2, 1.5, size=problem.n_theta)
        theta[problem.lower_bounds() < 0] = rng.uniform(-0.5, 0.5, size=int((problem.lower_bounds() < 0).sum()))
        v1, g1 = problem.objective_and_gradient(theta)
        v2, g2 = summed.objective_and_gradient(theta)
        assert v2 == pytest.approx(v1, rel=1e-12)
        np.testing.assert_allclose(g2, g1, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(("options", "groups"), [({}, None), ({"fit_intercept": False}, ["a"]), ({"reml": False}, ["a", "b"])])
def test_least_squares_no_intercept_and_scalar_weight(data, options, groups):
    """No groups (least squares), no intercept (y not centred), a scalar sample_weight."""
    ddf = dd.from_pandas(data, npartitions=3)
    expected = MixedLinearRegressor(**options).fit(data[["x0", "x1"]], data["y"], groups=None if groups is None else data[groups], sample_weight=2.0)
    with dask.config.set(scheduler="synchronous"):
        got = MixedLinearRegressor(**options).fit(ddf[["x0", "x1"]], ddf["y"], groups=None if groups is None else ddf[groups], sample_weight=2.0)
    assert_same_fit(got, expected)


def test_model_fitted_on_arrays_predicts_dask_input(data):
    """A model fitted on unnamed arrays predicts Dask frames by column position."""
    model = MixedLinearRegressor("(1 | group)").fit(data[["x0", "x1"]].to_numpy(), data["y"].to_numpy(), groups=data["a"].to_numpy())
    ddf = dd.from_pandas(data, npartitions=3)
    with dask.config.set(scheduler="synchronous"):
        got = model.predict(ddf[["x0", "x1"]], groups=ddf["a"].rename(None)).compute()
    np.testing.assert_allclose(got.to_numpy(), model.predict(data[["x0", "x1"]].to_numpy(), groups=data["a"].to_numpy()), rtol=1e-12)


def test_inputs_from_separate_collections_are_matched_by_partition(data):
    """X, y and groups built separately (not columns of one frame) are zipped partition by
    partition; partitions of different lengths are refused."""
    X = dd.from_pandas(data[["x0", "x1"]], npartitions=4)
    y = dd.from_pandas(data["y"], npartitions=4)
    groups = dd.from_pandas(data["a"], npartitions=4)
    expected = MixedLinearRegressor("(1 + x0 | a)").fit(data[["x0", "x1"]], data["y"], groups=data["a"])
    with dask.config.set(scheduler="synchronous"):
        got = MixedLinearRegressor("(1 + x0 | a)").fit(X, y, groups=groups)
        assert_same_fit(got, expected)
        shifted = dd.from_pandas(data["y"].iloc[1:], npartitions=4)
        with pytest.raises(ValueError, match="different row counts"):
            MixedLinearRegressor("(1 + x0 | a)").fit(X, shifted, groups=groups)
