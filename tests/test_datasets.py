"""sklmm.datasets: the shipped CSV files load as documented, are lme4's data, and fit to
lme4's numbers.

Expected values: the row counts, columns and level counts are those of R's lme4 1.1-31
(``sleepstudy``, ``Dyestuff``, ``Penicillin``, ``Pastes``) and plm (``Gasoline``); each
dataset is compared with the copy of the same data in tests/data/lme4/<case>/data.csv,
and refitted to the REML criterion stored there by lme4 1.1-31 (tolerance 1e-5 relative,
as for the other lme4 reference tests).
"""

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sklmm.datasets as datasets
from sklmm import MixedLinearRegressor

REFERENCE = Path(__file__).parent / "data" / "lme4"

# loader, reference case, shape, response, fixed columns, grouping columns, levels per factor
CASES = [
    (datasets.load_sleepstudy, "sleepstudy", (180, 3), "Reaction", ["Days"], ["Subject"], {"Subject": 18}),
    (datasets.load_dyestuff, "dyestuff", (30, 2), "Yield", [], ["Batch"], {"Batch": 6}),
    (datasets.load_penicillin, "penicillin", (144, 3), "diameter", [], ["plate", "sample"], {"plate": 24, "sample": 6}),
    (datasets.load_pastes, "pastes", (60, 3), "strength", [], ["batch", "cask"], {"batch": 10, "cask": 3}),
    (
        datasets.load_gasoline, "gasoline", (342, 5), "lcarpcap", ["time", "lincomep", "lrpmg"], ["country"],
        {"country": 18},
    ),
]
IDS = [case[1] for case in CASES]


#: The GLMM datasets (tests/test_glmm_datasets below): loader, glmer reference case, shape.
GLMM_CASES = [
    (datasets.load_cbpp, "cbpp", (56, 7)),
    (datasets.load_contraception, "contraception", (1934, 11)),
    (datasets.load_grouseticks, "grouseticks", (403, 9)),
]


def test_every_loader_is_public():
    assert sorted(datasets.__all__) == sorted([case[0].__name__ for case in CASES] + [case[0].__name__ for case in GLMM_CASES])


@pytest.mark.parametrize("loader, case, shape", GLMM_CASES, ids=[c[1] for c in GLMM_CASES])
def test_glmm_datasets_are_the_glmer_reference_data(loader, case, shape):
    """The same numbers as the data lme4 1.1-31 fitted in tests/data/glmer/<case>."""
    frame = loader()
    assert frame.shape == shape
    reference = pd.read_csv(Path(__file__).parent / "data" / "glmer" / case / "data.csv")
    X, y, groups = loader(return_X_y_groups=True)
    response = json.loads((Path(__file__).parent / "data" / "glmer" / case / "spec.json").read_text())["response"]
    np.testing.assert_allclose(np.asarray(y == "Y", dtype=float) if pd.api.types.is_string_dtype(y) else y, reference[response])
    ref_fixed = reference[[c for c in reference.columns if c.startswith("x_")]].to_numpy()
    np.testing.assert_allclose(X.to_numpy(), ref_fixed, rtol=1e-12)


@pytest.mark.parametrize("loader, case, shape, response, fixed, groups, levels", CASES, ids=IDS)
def test_frame_has_the_documented_columns(loader, case, shape, response, fixed, groups, levels):
    frame = loader()
    assert isinstance(frame, pd.DataFrame)
    assert frame.shape == shape
    assert set(frame.columns) == {response, *fixed, *groups}
    assert not frame.isna().any().any()
    for name in [response, *fixed]:
        assert pd.api.types.is_numeric_dtype(frame[name]), name
    for name in groups:
        # grouping columns are labels, read as strings even when they look like numbers
        assert pd.api.types.is_string_dtype(frame[name]), name
        assert frame[name].nunique() == levels[name], name


@pytest.mark.parametrize("loader, case, shape, response, fixed, groups, levels", CASES, ids=IDS)
def test_return_X_y_groups(loader, case, shape, response, fixed, groups, levels):
    X, y, G = loader(return_X_y_groups=True)
    frame = loader()
    assert isinstance(X, pd.DataFrame) and list(X.columns) == fixed and X.shape == (shape[0], len(fixed))
    assert isinstance(y, pd.Series) and y.name == response
    pd.testing.assert_series_equal(y, frame[response])
    if len(groups) == 1:  # one factor: a Series, as scikit-learn's GroupKFold takes groups
        assert isinstance(G, pd.Series) and G.name == groups[0]
        pd.testing.assert_series_equal(G, frame[groups[0]])
    else:
        assert isinstance(G, pd.DataFrame) and list(G.columns) == groups
        pd.testing.assert_frame_equal(G, frame[groups])
    # copies: changing them leaves a later load untouched
    y.iloc[0] = -1.0
    assert loader()[response].iloc[0] == frame[response].iloc[0]


@pytest.mark.parametrize("loader, case, shape, response, fixed, groups, levels", CASES, ids=IDS)
def test_data_are_the_lme4_reference_data(loader, case, shape, response, fixed, groups, levels):
    frame = loader()
    reference = pd.read_csv(REFERENCE / case / "data.csv", dtype={g: str for g in groups})
    pd.testing.assert_frame_equal(frame[reference.columns], reference, check_exact=False, rtol=1e-12)


@pytest.mark.parametrize("loader, case, shape, response, fixed, groups, levels", CASES, ids=IDS)
def test_fit_reproduces_lme4_reml_criterion(loader, case, shape, response, fixed, groups, levels):
    spec = json.loads((REFERENCE / case / "spec.json").read_text())
    reference = json.loads((REFERENCE / case / "reference.json").read_text())
    X, y, G = loader(return_X_y_groups=True)
    model = MixedLinearRegressor(random_effects=spec["random_effects"]).fit(X, y, groups=G)
    assert model.objective_ == pytest.approx(reference["reml"]["objective"], rel=1e-5)


@pytest.mark.parametrize("loader", [case[0] for case in CASES], ids=IDS)
def test_docstring_says_what_it_is_and_where_it_comes_from(loader):
    doc = loader.__doc__
    assert "rows" in doc  # what it is: size and columns
    assert "Source:" in doc  # where it comes from
    assert "return_X_y_groups" in doc and "Examples" in doc


@pytest.mark.parametrize("case", IDS)
def test_csv_files_ship_inside_the_package(case):
    data = resources.files("sklmm.datasets").joinpath("data", f"{case}.csv")
    assert data.is_file()
    assert data.read_text().count("\n") == next(c[2][0] for c in CASES if c[1] == case) + 1  # header + rows


def test_sleepstudy_subjects_stay_labels():
    # Subject "308" must not become the number 308: a model fitted with these labels
    # predicts conditionally only for the same labels.
    X, y, G = datasets.load_sleepstudy(return_X_y_groups=True)
    assert G.iloc[0] == "308"
    model = MixedLinearRegressor("(1 | Subject)").fit(X, y, groups=G)
    assert list(model.random_effects_["Subject"].index[:3]) == ["308", "309", "310"]
    assert not np.allclose(model.predict(X, groups=G), model.predict(X))
