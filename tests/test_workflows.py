"""scikit-learn workflows end to end: Pipelines, cross-validation with GroupKFold and
KFold, grid and randomized search, conditional scoring, pandas in and out, persistence.

Data: lme4's sleepstudy (sklmm.datasets), 18 subjects x 10 days, model
``(1 + Days | Subject)``.  What reached ``fit`` and ``predict`` is recorded by
``SpyRegressor`` (a MixedLinearRegressor that logs its calls) or read off the fitted
estimators (the levels in ``random_effects_``).

Expected relations, not numbers from elsewhere: under GroupKFold the test subjects were
not seen in fit, so the conditional score equals the population-level score (to 1e-12);
under KFold every subject was seen, so the conditional score is far higher (sleepstudy's
subject-to-subject variation is most of the variance: R^2 about 0.73 against 0.25).
Metadata routing is switched on only inside ``sklearn.config_context`` so that no test
leaks global configuration.
"""

import io
import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import UnsetMetadataPassedError
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    KFold,
    RandomizedSearchCV,
    cross_val_score,
    cross_validate,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sklmm import MixedLinearRegressor, make_conditional_scorer
from sklmm.datasets import load_gasoline, load_sleepstudy

FORMULA = "(1 + Days | Subject)"
KFOLD = KFold(n_splits=6, shuffle=True, random_state=0)
GROUP_KFOLD = GroupKFold(n_splits=6)


class SpyRegressor(MixedLinearRegressor):
    """A MixedLinearRegressor that records what reached fit and predict."""

    log: list = []

    def fit(self, X, y, groups=None, sample_weight=None):
        SpyRegressor.log.append(_call("fit", X, groups))
        return super().fit(X, y, groups=groups, sample_weight=sample_weight)

    def predict(self, X, groups=None):
        SpyRegressor.log.append(_call("predict", X, groups))
        return super().predict(X, groups=groups)


def _call(method, X, groups):
    levels = None if groups is None else set(np.asarray(groups).ravel().tolist())
    n_groups = None if groups is None else len(groups)
    columns = list(X.columns) if isinstance(X, pd.DataFrame) else None
    return {"method": method, "n": len(X), "levels": levels, "n_groups": n_groups, "columns": columns}


@pytest.fixture(autouse=True)
def _clear_log():
    SpyRegressor.log.clear()
    yield
    SpyRegressor.log.clear()


@pytest.fixture
def routing():
    with sklearn.config_context(enable_metadata_routing=True):
        yield


@pytest.fixture
def no_routing():
    with sklearn.config_context(enable_metadata_routing=False):
        yield


@pytest.fixture(scope="module")
def sleep():
    X, y, groups = load_sleepstudy(return_X_y_groups=True)
    return X, y, groups  # a Series (one grouping factor), as GroupKFold takes groups


def requesting(model):
    """The model with groups requested for fit, predict and score."""
    return model.set_fit_request(groups=True).set_predict_request(groups=True).set_score_request(groups=True)


def scaled_pipeline(model):
    return Pipeline([("scale", StandardScaler()), ("model", model)]).set_output(transform="pandas")


# -- 1. metadata routing ---------------------------------------------------------------


def test_request_methods_follow_the_method_signatures():
    import inspect

    model = MixedLinearRegressor()

    def parameters(method):
        return set(inspect.signature(method).parameters) - {"self"}

    assert parameters(model.set_fit_request) == {"groups", "sample_weight"}
    assert parameters(model.set_predict_request) == {"groups"}
    assert parameters(model.set_score_request) == {"groups", "sample_weight"}


def test_request_methods_need_routing_enabled(no_routing):
    with pytest.raises(RuntimeError, match=r"enable_metadata_routing=True"):
        MixedLinearRegressor().set_fit_request(groups=True)


def test_pipeline_routes_groups_to_fit_and_predict(routing, sleep):
    X, y, subject = sleep
    pipe = scaled_pipeline(requesting(SpyRegressor(FORMULA)))
    pipe.fit(X, y, groups=subject)
    fit_call = SpyRegressor.log[0]
    assert fit_call["method"] == "fit" and fit_call["n"] == 180 and len(fit_call["levels"]) == 18
    assert fit_call["columns"] == ["Days"]  # set_output(transform="pandas") kept the name
    assert pipe[-1].feature_names_in_.tolist() == ["Days"]
    assert list(pipe[-1].random_effects_["Subject"].columns) == ["(Intercept)", "Days"]

    # the same as fitting the model on the scaled data directly
    direct = MixedLinearRegressor(FORMULA).fit(pipe[0].transform(X), y, groups=subject)
    np.testing.assert_array_equal(pipe.predict(X, groups=subject), direct.predict(pipe[0].transform(X), groups=subject))
    assert SpyRegressor.log[-1]["levels"] == set(subject)

    conditional, population = pipe.predict(X, groups=subject), pipe.predict(X)
    assert SpyRegressor.log[-1]["levels"] is None
    assert not np.allclose(conditional, population)
    # score routes groups too when requested (Pipeline.score routes only with routing on)
    assert pipe.score(X, y, groups=subject) == pytest.approx(r2_score(y, conditional), abs=1e-12)
    assert pipe.score(X, y) == pytest.approx(r2_score(y, population), abs=1e-12)


def test_column_transformer_names_reach_the_model(routing, sleep):
    X, y, subject = sleep
    # verbose_feature_names_out=True (the default) prefixes the transformer's name
    prefixed = ColumnTransformer([("num", StandardScaler(), ["Days"])])
    pipe = Pipeline([("prep", prefixed), ("model", requesting(MixedLinearRegressor("(1 + num__Days | Subject)")))])
    pipe.set_output(transform="pandas").fit(X, y, groups=subject)
    assert pipe[-1].feature_names_in_.tolist() == ["num__Days"]

    plain = ColumnTransformer([("num", StandardScaler(), ["Days"])], verbose_feature_names_out=False)
    pipe = Pipeline([("prep", plain), ("model", requesting(MixedLinearRegressor(FORMULA)))])
    pipe.set_output(transform="pandas").fit(X, y, groups=subject)
    assert pipe[-1].feature_names_in_.tolist() == ["Days"]
    assert list(pipe[-1].random_effects_["Subject"].columns) == ["(Intercept)", "Days"]


def test_numpy_pipeline_names_slopes_by_position(routing, sleep):
    X, y, subject = sleep
    pipe = Pipeline([("scale", StandardScaler()), ("model", requesting(MixedLinearRegressor("(1 + x0 | Subject)")))])
    pipe.fit(X, y, groups=subject)
    assert not hasattr(pipe[-1], "feature_names_in_")
    assert list(pipe[-1].random_effects_["Subject"].columns) == ["(Intercept)", "x0"]

    named = Pipeline([("scale", StandardScaler()), ("model", requesting(MixedLinearRegressor(FORMULA)))])
    with pytest.raises(ValueError, match=r"slope\(s\) \['Days'\].*set_output\(transform='pandas'\)"):
        named.fit(X, y, groups=subject)


def test_cross_validate_group_kfold_scores_population_level(routing, sleep):
    X, y, subject = sleep
    scoring = {"population": "r2", "conditional": make_conditional_scorer()}
    result = cross_validate(
        requesting(SpyRegressor(FORMULA)), X, y, cv=GROUP_KFOLD, params={"groups": subject},
        scoring=scoring, return_estimator=True, return_indices=True,
    )
    for estimator, train, test in zip(result["estimator"], result["indices"]["train"], result["indices"]["test"]):
        seen = set(estimator.random_effects_["Subject"].index)
        assert seen == set(subject.iloc[train])
        assert seen.isdisjoint(subject.iloc[test])  # GroupKFold: test subjects are new
    # new subjects get the population-level prediction, so both scores agree
    np.testing.assert_allclose(result["test_conditional"], result["test_population"], rtol=0, atol=1e-12)

    fits = [c for c in SpyRegressor.log if c["method"] == "fit"]
    predicts = [c for c in SpyRegressor.log if c["method"] == "predict"]
    assert len(fits) == 6 and all(c["n_groups"] == c["n"] == 150 for c in fits)
    # one predict per fold from "r2" (no groups), one from the conditional scorer (test groups)
    assert sorted(c["levels"] is None for c in predicts) == [False] * 6 + [True] * 6
    assert all(c["n_groups"] == c["n"] == 30 for c in predicts if c["levels"] is not None)


def test_cross_validate_kfold_scores_conditionally(routing, sleep):
    X, y, subject = sleep
    model = requesting(MixedLinearRegressor(FORMULA))
    scoring = {"population": "r2", "conditional": make_conditional_scorer()}
    kfold = cross_validate(model, X, y, cv=KFOLD, params={"groups": subject}, scoring=scoring, return_estimator=True)
    for estimator in kfold["estimator"]:
        assert len(estimator.random_effects_["Subject"]) == 18  # every subject seen in every fold
    assert np.all(kfold["test_conditional"] > kfold["test_population"] + 0.1)
    assert kfold["test_conditional"].mean() > kfold["test_population"].mean() + 0.4

    # the estimator's own score, with groups requested for score, is the conditional score
    default = cross_validate(model, X, y, cv=KFOLD, params={"groups": subject})
    np.testing.assert_allclose(default["test_score"], kfold["test_conditional"], rtol=1e-12)

    group = cross_validate(model, X, y, cv=GROUP_KFOLD, params={"groups": subject}, scoring=scoring)
    # conditional on seen subjects beats population-level on new ones, by a wide margin
    assert kfold["test_conditional"].mean() > group["test_conditional"].mean() + 0.4
    assert kfold["test_conditional"].mean() == pytest.approx(0.73, abs=0.03)


def test_cross_val_score_with_a_pipeline(routing, sleep):
    X, y, subject = sleep
    pipe = scaled_pipeline(requesting(MixedLinearRegressor(FORMULA)))
    scorer = make_conditional_scorer(mean_absolute_error, greater_is_better=False)
    kfold = cross_val_score(pipe, X, y, cv=KFOLD, params={"groups": subject}, scoring=scorer)
    group = cross_val_score(pipe, X, y, cv=GROUP_KFOLD, params={"groups": subject}, scoring=scorer)
    assert np.all(kfold < 0) and np.all(group < 0)  # negated losses
    assert -kfold.mean() < 0.6 * -group.mean()  # conditional errors are much smaller


def test_grid_search_pipeline_group_kfold_and_refit(routing, sleep):
    X, y, subject = sleep
    pipe = Pipeline([("scale", StandardScaler()), ("model", requesting(SpyRegressor(FORMULA)))])
    grid = {
        "scale": [StandardScaler().set_output(transform="pandas"), "passthrough"],
        "model__reml": [True, False],
        "model__random_effects": ["(1 | Subject)", FORMULA],
    }
    search = GridSearchCV(pipe, grid, cv=GroupKFold(n_splits=3), scoring="neg_mean_squared_error")
    search.fit(X, y, groups=subject)
    assert len(search.cv_results_["params"]) == 8
    assert not np.any(np.isnan(search.cv_results_["mean_test_score"]))
    fits = [c for c in SpyRegressor.log if c["method"] == "fit"]
    assert len(fits) == 8 * 3 + 1
    assert all(c["columns"] == ["Days"] and c["n_groups"] == c["n"] for c in fits)  # names kept, groups routed
    assert fits[-1]["n"] == 180 and len(fits[-1]["levels"]) == 18  # the refit saw everything

    best = search.best_estimator_
    assert set(best[-1].random_effects_["Subject"].index) == set(subject)
    conditional = best.predict(X, groups=subject)
    assert SpyRegressor.log[-1]["levels"] == set(subject)
    assert r2_score(y, conditional) > r2_score(y, best.predict(X)) + 0.3


def test_randomized_search_with_conditional_scoring(routing, sleep):
    X, y, subject = sleep
    pipe = scaled_pipeline(requesting(MixedLinearRegressor(FORMULA)))
    distributions = {
        "model__reml": [True, False],
        "model__random_effects": ["(1 | Subject)", FORMULA, "(1 + Days || Subject)", "(0 + Days | Subject)"],
    }
    scorer = make_conditional_scorer()
    search = RandomizedSearchCV(pipe, distributions, n_iter=4, cv=KFOLD, scoring=scorer, random_state=0)
    search.fit(X, y, groups=subject)
    assert search.best_score_ > 0.6
    # search.score routes groups to the scorer as well
    expected = r2_score(y, search.best_estimator_.predict(X, groups=subject))
    assert search.score(X, y, groups=subject) == pytest.approx(expected, abs=1e-12)
    assert scorer(search, X, y, groups=subject) == pytest.approx(expected, abs=1e-12)


def test_routing_errors_name_the_request_method(routing, sleep):
    X, y, subject = sleep
    unrequested = Pipeline([("scale", StandardScaler()), ("model", MixedLinearRegressor(FORMULA))])
    with pytest.raises(UnsetMetadataPassedError, match=r"set_fit_request"):
        unrequested.fit(X, y, groups=subject)
    fit_only = scaled_pipeline(MixedLinearRegressor(FORMULA).set_fit_request(groups=True)).fit(X, y, groups=subject)
    with pytest.raises(UnsetMetadataPassedError, match=r"set_predict_request"):
        fit_only.predict(X, groups=subject)
    with pytest.raises(UnsetMetadataPassedError, match=r"set_score_request"):
        cross_validate(fit_only[-1], X, y, cv=KFOLD, params={"groups": subject})
    # requested, but no groups passed: the estimator says how to pass them
    with pytest.raises(ValueError, match=r"groups=None.*params=\{'groups': groups\}"):
        cross_validate(requesting(MixedLinearRegressor(FORMULA)), X, y, cv=KFOLD, error_score="raise")


def test_conditional_scorer_requests_groups(routing):
    scorer = make_conditional_scorer()
    request = scorer.get_metadata_routing()
    assert request.score.requests == {"groups": True, "sample_weight": None}
    scorer.set_score_request(sample_weight=True)
    assert scorer.get_metadata_routing().score.requests["sample_weight"] is True
    with pytest.raises(TypeError, match="unexpected argument 'weights'"):
        scorer.set_score_request(weights=True)


def test_conditional_scorer_sample_weight(routing, sleep):
    X, y, subject = sleep
    model = requesting(MixedLinearRegressor(FORMULA)).set_fit_request(sample_weight=False)
    weights = np.where(X["Days"] > 4, 2.0, 1.0)
    scorer = make_conditional_scorer().set_score_request(sample_weight=True)
    result = cross_validate(
        model, X, y, cv=KFOLD, params={"groups": subject, "sample_weight": weights}, scoring=scorer,
        return_estimator=True, return_indices=True,
    )
    estimator, test = result["estimator"][0], result["indices"]["test"][0]
    expected = r2_score(y.iloc[test], estimator.predict(X.iloc[test], groups=subject.iloc[test]), sample_weight=weights[test])
    assert result["test_score"][0] == pytest.approx(expected, abs=1e-12)


def test_conditional_scorer_direct_call(sleep):
    X, y, subject = sleep
    model = MixedLinearRegressor(FORMULA).fit(X, y, groups=subject)
    scorer = make_conditional_scorer(mean_absolute_error, greater_is_better=False)
    assert scorer(model, X, y, groups=subject) == pytest.approx(-mean_absolute_error(y, model.predict(X, groups=subject)))
    assert repr(scorer) == "make_conditional_scorer(mean_absolute_error, greater_is_better=False)"
    with pytest.raises(ValueError, match=r"got no groups.*enable_metadata_routing=True.*make_conditional_scorer\(groups="):
        scorer(model, X, y)
    with pytest.raises(TypeError, match="metric function"):
        make_conditional_scorer("r2")
    from sklearn.linear_model import LinearRegression

    with pytest.raises(TypeError, match="LinearRegression.predict does not take groups"):
        scorer(LinearRegression().fit(X, y), X, y, groups=subject)


# -- 2. without metadata routing ---------------------------------------------------------


def test_legacy_cross_validate_fits_with_groups_but_scores_population_level(no_routing, sleep):
    X, y, subject = sleep
    # `params=` goes to fit (and `groups=` to a group splitter); the scorer gets nothing
    result = cross_validate(SpyRegressor(FORMULA), X, y, cv=KFOLD, params={"groups": subject})
    fits = [c for c in SpyRegressor.log if c["method"] == "fit"]
    predicts = [c for c in SpyRegressor.log if c["method"] == "predict"]
    assert all(len(c["levels"]) == 18 for c in fits)
    assert all(c["levels"] is None for c in predicts)  # score() predicted population-level
    assert result["test_score"].mean() < 0.4

    # cross_val_score takes the same legacy arguments
    scores = cross_val_score(MixedLinearRegressor(FORMULA), X, y, groups=subject, cv=GROUP_KFOLD, params={"groups": subject})
    assert scores.shape == (6,)


def test_legacy_conditional_scorer(no_routing, sleep):
    X, y, subject = sleep
    model = MixedLinearRegressor(FORMULA)
    with pytest.raises(ValueError, match=r"got no groups.*set_config\(enable_metadata_routing=True\)"):
        cross_validate(model, X, y, cv=KFOLD, params={"groups": subject}, scoring=make_conditional_scorer(), error_score="raise")
    # bound groups, looked up by X's index: the same scores as with routing
    legacy = cross_validate(model, X, y, cv=KFOLD, params={"groups": subject}, scoring=make_conditional_scorer(groups=subject))
    with sklearn.config_context(enable_metadata_routing=True):
        routed = cross_validate(
            requesting(MixedLinearRegressor(FORMULA)), X, y, cv=KFOLD, params={"groups": subject},
            scoring=make_conditional_scorer(),
        )
    np.testing.assert_allclose(legacy["test_score"], routed["test_score"], rtol=1e-12)

    with pytest.raises(ValueError, match="not a DataFrame"):
        make_conditional_scorer(groups=subject)(model.fit(X, y, groups=subject), X.to_numpy(), y)
    with pytest.raises(ValueError, match="index label"):
        make_conditional_scorer(groups=subject)(model, X.reset_index(drop=True).set_index(X.index + 1000), y)


def test_legacy_pipeline_uses_step_parameters(no_routing, sleep):
    X, y, subject = sleep
    pipe = scaled_pipeline(SpyRegressor(FORMULA))
    with pytest.raises(ValueError, match=r"stepname__parameter"):
        pipe.fit(X, y, groups=subject)
    pipe.fit(X, y, model__groups=subject)
    assert len(SpyRegressor.log[-1]["levels"]) == 18
    conditional = pipe.predict(X, groups=subject)  # Pipeline.predict forwards to the model
    assert SpyRegressor.log[-1]["levels"] == set(subject)
    # ... but Pipeline.score drops groups without routing: the population-level R^2
    assert pipe.score(X, y, groups=subject) == pytest.approx(r2_score(y, pipe.predict(X)), abs=1e-12)
    assert make_conditional_scorer()(pipe, X, y, groups=subject) == pytest.approx(r2_score(y, conditional), abs=1e-12)


def test_legacy_grid_search(no_routing, sleep):
    X, y, subject = sleep
    # a Pipeline's step parameter reaches fit; `groups=` only the splitter
    pipe = scaled_pipeline(SpyRegressor(FORMULA))
    search = GridSearchCV(pipe, {"model__reml": [True, False]}, cv=GroupKFold(n_splits=3))
    search.fit(X, y, groups=subject, model__groups=subject)
    assert all(c["levels"] is not None for c in SpyRegressor.log if c["method"] == "fit")
    # a bare estimator cannot get groups in fit without routing; the error says what to do
    bare = GridSearchCV(MixedLinearRegressor(FORMULA), {"reml": [True, False]}, cv=GroupKFold(n_splits=3))
    with pytest.raises(ValueError, match=r"set_config\(enable_metadata_routing=True\).*set_fit_request\(groups=True\)"):
        bare.fit(X, y, groups=subject)


# -- 3. pandas in, pandas out -----------------------------------------------------------


def test_groups_as_series_frame_categorical_or_integers_agree(sleep):
    X, y, subject = sleep
    reference = MixedLinearRegressor(FORMULA).fit(X, y, groups=subject)
    expected = reference.predict(X, groups=subject)
    labels = subject.unique().tolist()
    for groups, levels in [
        (subject.to_frame(), labels),
        (subject.astype("category"), labels),
        (subject.astype(int), [int(label) for label in labels]),
    ]:
        model = MixedLinearRegressor(FORMULA).fit(X, y, groups=groups)
        np.testing.assert_allclose(model.predict(X, groups=groups), expected, rtol=1e-10)
        frame = model.random_effects_["Subject"]  # indexed by the level labels
        assert frame.index.name == "Subject" and frame.index.tolist() == levels
    frame = reference.random_effects_["Subject"]
    assert frame.loc["308"].index.tolist() == ["(Intercept)", "Days"]
    assert reference.feature_names_in_.tolist() == ["Days"]
    # a categorical subset (unused categories) and rows in another order
    some = subject.astype("category").iloc[::-7]
    np.testing.assert_allclose(reference.predict(X.iloc[::-7], groups=some), expected[::-7], rtol=1e-10)


def test_slopes_resolve_through_column_names():
    X, y, groups = load_gasoline(return_X_y_groups=True)
    reordered = X[["lrpmg", "time", "lincomep"]]
    model = MixedLinearRegressor("(1 + time | country)").fit(reordered, y, groups=groups)
    assert model.feature_names_in_.tolist() == ["lrpmg", "time", "lincomep"]
    assert model.fixed_effects_.index.tolist() == ["(Intercept)", "lrpmg", "time", "lincomep"]
    assert model.random_effects_["country"].columns.tolist() == ["(Intercept)", "time"]
    assert "AUSTRIA" in model.random_effects_["country"].index
    # prediction checks the columns by name, as scikit-learn does
    with pytest.raises(ValueError, match="feature names"):
        model.predict(X, groups=groups)


def test_global_pandas_output_config(sleep):
    X, y, subject = sleep
    with sklearn.config_context(transform_output="pandas", enable_metadata_routing=True):
        pipe = Pipeline([("scale", StandardScaler()), ("model", requesting(MixedLinearRegressor(FORMULA)))])
        pipe.fit(X, y, groups=subject)
    assert pipe[-1].feature_names_in_.tolist() == ["Days"]


# -- 4. persistence ---------------------------------------------------------------------


def _round_trips(obj):
    yield pickle.loads(pickle.dumps(obj))
    buffer = io.BytesIO()
    joblib.dump(obj, buffer)
    buffer.seek(0)
    yield joblib.load(buffer)


def test_pickle_and_joblib_estimator(sleep):
    X, y, subject = sleep
    model = MixedLinearRegressor(FORMULA).fit(X, y, groups=subject)
    for loaded in _round_trips(model):
        np.testing.assert_array_equal(loaded.predict(X, groups=subject), model.predict(X, groups=subject))
        np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
        pd.testing.assert_frame_equal(loaded.random_effects_["Subject"], model.random_effects_["Subject"])
        pd.testing.assert_frame_equal(loaded.variance_components_, model.variance_components_)
        assert loaded.get_params() == model.get_params()


def test_pickle_and_joblib_pipeline(routing, sleep):
    X, y, subject = sleep
    pipe = scaled_pipeline(requesting(MixedLinearRegressor(FORMULA))).fit(X, y, groups=subject)
    for loaded in _round_trips(pipe):
        np.testing.assert_array_equal(loaded.predict(X, groups=subject), pipe.predict(X, groups=subject))
        np.testing.assert_array_equal(loaded.predict(X), pipe.predict(X))
        # the metadata requests survive, and an unfitted clone keeps them too
        assert loaded[-1].get_metadata_routing().predict.requests == {"groups": True}
        clone(loaded).fit(X, y, groups=subject)


def test_pickle_search_and_scorer(routing, sleep):
    X, y, subject = sleep
    scorer = make_conditional_scorer()
    search = GridSearchCV(
        scaled_pipeline(requesting(MixedLinearRegressor(FORMULA))), {"model__reml": [True, False]},
        cv=GroupKFold(n_splits=3), scoring=scorer,
    ).fit(X, y, groups=subject)
    for loaded in _round_trips(search):
        np.testing.assert_array_equal(
            loaded.best_estimator_.predict(X, groups=subject), search.best_estimator_.predict(X, groups=subject)
        )
    for loaded in _round_trips(scorer):
        assert loaded(search, X, y, groups=subject) == scorer(search, X, y, groups=subject)
