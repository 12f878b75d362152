"""Everyday mistakes never give a silently wrong fit (issue "No silent wrong fits from common mistakes").

Each case is a mistake a user makes with sleepstudy and ``(1 + Days | Subject)``:
it must give the right fit (checked against the clean fit, whose REML criterion
1743.628 is lme4 1.1-31's) or a clear error or warning naming the problem.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GroupKFold

from sklmm import MixedLinearRegressor
from sklmm.datasets import load_sleepstudy

FORMULA = "(1 + Days | Subject)"


@pytest.fixture(scope="module")
def data():
    return load_sleepstudy(return_X_y_groups=True)


@pytest.fixture(scope="module")
def clean(data):
    X, y, groups = data
    return MixedLinearRegressor(FORMULA).fit(X, y, groups=groups)


def _shuffled(obj, seed=0):
    order = np.random.default_rng(seed).permutation(len(obj))
    return obj.iloc[order]


@pytest.mark.parametrize("argument", ["y", "groups", "sample_weight"])
def test_reordered_pandas_inputs_are_refused_in_fit(data, argument):
    X, y, groups = data
    kwargs = {"y": y, "groups": groups, "sample_weight": pd.Series(np.ones(len(y)), index=y.index)}
    kwargs[argument] = _shuffled(kwargs[argument])
    with pytest.raises(ValueError, match=rf"^{argument} is a pandas object whose index holds the same labels as X's index in a different order.*{argument}\.loc\[X\.index\]"):
        MixedLinearRegressor(FORMULA).fit(X, **kwargs)


def test_aligned_by_label_gives_the_clean_fit(data, clean):
    X, y, groups = data
    shuffled = _shuffled(groups)
    model = MixedLinearRegressor(FORMULA).fit(X, y, groups=shuffled.loc[X.index])
    assert model.objective_ == pytest.approx(clean.objective_, rel=1e-12)
    assert clean.objective_ == pytest.approx(1743.628, abs=1e-3)  # lme4 1.1-31


def test_shuffled_rows_of_everything_give_the_clean_fit(data, clean):
    """All inputs reordered the same way: same labels, same order, rows still paired."""
    X, y, groups = data
    order = np.random.default_rng(1).permutation(len(y))
    model = MixedLinearRegressor(FORMULA).fit(X.iloc[order], y.iloc[order], groups=groups.iloc[order])
    assert model.objective_ == pytest.approx(clean.objective_, rel=1e-9)


def test_default_index_series_pairs_by_position(data, clean):
    """A Series made from an array (labels 0..n-1) beside an X with other labels: by position."""
    X, y, groups = data
    X_relabelled = X.set_axis(X.index + 1000)
    model = MixedLinearRegressor(FORMULA).fit(X_relabelled, y, groups=groups)
    assert model.objective_ == pytest.approx(clean.objective_, rel=1e-12)


def test_reordered_groups_are_refused_in_predict_and_predict_se(data, clean):
    X, y, groups = data
    with pytest.raises(ValueError, match="^groups is a pandas object whose index"):
        clean.predict(X, groups=_shuffled(groups))
    with pytest.raises(ValueError, match="^groups is a pandas object whose index"):
        clean.predict_se(X, groups=_shuffled(groups))
    np.testing.assert_array_equal(clean.predict(X, groups=_shuffled(groups).loc[X.index]), clean.predict(X, groups=groups))


def test_reordered_inputs_are_refused_in_score(data, clean):
    X, y, groups = data
    with pytest.raises(ValueError, match="^y is a pandas object whose index"):
        clean.score(X, _shuffled(y), groups=groups)
    with pytest.raises(ValueError, match="^groups is a pandas object whose index"):
        clean.score(X, y, groups=_shuffled(groups))
    with pytest.raises(ValueError, match="^sample_weight is a pandas object whose index"):
        clean.score(X, y, sample_weight=_shuffled(pd.Series(np.ones(len(y)), index=y.index)), groups=groups)


def test_group_id_left_in_X_warns_naming_the_column(data):
    X, y, groups = data
    X_with_id = X.assign(Subject=groups.astype(int))
    with pytest.warns(UserWarning, match=r"X column\(s\) \['Subject'\] have the name\(s\) of grouping factor\(s\).*fixed-effect covariate.*drop them from X"):
        MixedLinearRegressor(FORMULA).fit(X_with_id, y, groups=groups)


def test_no_warning_without_the_clash(data):
    X, y, groups = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MixedLinearRegressor(FORMULA).fit(X, y, groups=groups)


@pytest.mark.parametrize("by_name", ["Subject", ["Subject"]])
def test_groups_given_as_a_column_name_says_how(data, by_name):
    X, y, groups = data
    X_with_subject = X.assign(Subject=groups)
    with pytest.raises(ValueError, match=r"^groups=.*'Subject'.* names column\(s\) of X, but groups must hold the grouping labels.*X\.drop\(columns=\['Subject'\]\), y, groups=X\['Subject'\]\)"):
        MixedLinearRegressor(FORMULA).fit(X_with_subject, y, groups=by_name)
    model = MixedLinearRegressor(FORMULA).fit(X, y, groups=groups)
    with pytest.raises(ValueError, match=r"^groups=.*names column\(s\) of X"):
        model.predict(X_with_subject, groups=by_name)


def test_groups_given_as_a_name_that_is_not_a_column(data):
    X, y, groups = data
    with pytest.raises(ValueError, match=r"^groups='Subject' is a name, not grouping labels.*no column named 'Subject'"):
        MixedLinearRegressor(FORMULA).fit(X, y, groups="Subject")


def test_string_grouping_column_in_X_says_to_pass_it_as_groups(data):
    X, y, groups = data
    with pytest.raises(TypeError, match=r"X column 'Subject' has dtype .*random part names 'Subject' as a grouping factor.*Pass it as groups="):
        MixedLinearRegressor(FORMULA).fit(X.assign(Subject=groups), y)


def test_other_string_column_mentions_groups_too(data):
    X, y, groups = data
    with pytest.raises(TypeError, match=r"X column 'label' has dtype .*OneHotEncoder.*pass it as groups= instead of in X"):
        MixedLinearRegressor(FORMULA).fit(X.assign(label=groups), y, groups=groups)


def test_loader_groups_go_straight_into_group_kfold(data):
    X, y, groups = data
    assert isinstance(groups, pd.Series) and groups.name == "Subject"
    folds = list(GroupKFold(n_splits=3).split(X, y, groups=groups))
    for train, test in folds:
        assert not set(groups.iloc[train]) & set(groups.iloc[test])


def test_callers_data_unchanged_by_refused_calls(data):
    X, y, groups = data
    before = (X.copy(), y.copy(), groups.copy())
    shuffled = _shuffled(groups)
    shuffled_before = shuffled.copy()
    with pytest.raises(ValueError):
        MixedLinearRegressor(FORMULA).fit(X, y, groups=shuffled)
    pd.testing.assert_frame_equal(X, before[0])
    pd.testing.assert_series_equal(y, before[1])
    pd.testing.assert_series_equal(groups, before[2])
    pd.testing.assert_series_equal(shuffled, shuffled_before)


def test_sample_weight_given_as_a_name(data):
    X, y, groups = data
    with pytest.raises(TypeError, match=r"sample_weight='w' is a name; pass the weights themselves"):
        MixedLinearRegressor(FORMULA).fit(X, y, groups=groups, sample_weight="w")


def test_unnamed_groups_say_how_to_name_them(data):
    X, y, groups = data
    with pytest.raises(ValueError, match=r"grouping factor 'Subject'.*unnamed Series or array is called 'group': name it"):
        MixedLinearRegressor(FORMULA).fit(X, y, groups=groups.to_numpy())
