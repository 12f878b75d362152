"""The caterpillar and residual plots, drawn headless (matplotlib's Agg backend).

The numbers they draw are checked against the estimator (whose conditional
variances and fitted values are checked against lme4 in test_condvar.py and
test_lme4_reference.py); here: figure, panels, error-bar half-widths and points.
"""

from __future__ import annotations

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from reference_cases import fitted  # noqa: E402
from sklmm import MixedLinearRegressor, plot_caterpillar, plot_residuals  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_caterpillar_draws_modes_with_conditional_intervals():
    model, _ = fitted("sleepstudy", "reml")
    figure = plot_caterpillar(model, level=0.95)
    assert isinstance(figure, Figure)
    axes = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["Subject: (Intercept)", "Subject: Days"]
    modes = model.random_effects_["Subject"]
    sd = np.sqrt(np.einsum("lii->li", model.random_effects_cov_["Subject"]))
    order = np.argsort(modes["(Intercept)"].to_numpy(), kind="stable")
    for col, ax in enumerate(axes):
        points = ax.lines[0].get_xdata()
        np.testing.assert_allclose(points, modes.iloc[:, col].to_numpy()[order])
        segments = ax.collections[0].get_segments()  # the error bars
        half = np.array([abs(s[1][0] - s[0][0]) / 2 for s in segments])
        np.testing.assert_allclose(half, 1.959963984540054 * sd[order, col], rtol=1e-9)
    assert [t.get_text() for t in axes[0].get_yticklabels()] == list(modes.index.astype(str)[order])


def test_caterpillar_several_factors_and_selection():
    model, _ = fitted("penicillin", "reml")
    figure = plot_caterpillar(model)
    assert [ax.get_title() for ax in figure.axes] == ["plate: (Intercept)", "sample: (Intercept)"]
    figure = plot_caterpillar(model, factor="sample")
    assert [ax.get_title() for ax in figure.axes] == ["sample: (Intercept)"]
    with pytest.raises(KeyError, match="unknown grouping factor"):
        plot_caterpillar(model, factor="nope")


def test_caterpillar_mixed_widths_hide_empty_panels():
    model, _ = fitted("nested_slope", "reml")
    figure = plot_caterpillar(model)
    visible = [ax.get_title() for ax in figure.axes if ax.get_visible()]
    assert visible == ["a:b: (Intercept)", "a: (Intercept)", "a: x"]


def test_residual_plot():
    model, _ = fitted("sleepstudy", "reml")
    figure = plot_residuals(model)
    ax = figure.axes[0]
    points = ax.collections[0].get_offsets()
    data = model._training_data
    import pandas as pd

    fitted_values = model.predict(pd.DataFrame(data.X, columns=model.feature_names_in_), groups=data.groups)
    np.testing.assert_allclose(points[:, 0], fitted_values)
    np.testing.assert_allclose(points[:, 1], data.y - fitted_values)
    assert ax.get_xlabel() == "Fitted values" and ax.get_ylabel() == "Pearson residuals"
    figure2, ax2 = plt.subplots()
    assert plot_residuals(model, ax=ax2) is figure2


def test_no_random_effects_to_plot():
    rng = np.random.default_rng(0)
    model = MixedLinearRegressor().fit(rng.normal(size=(10, 1)), rng.normal(size=10))
    with pytest.raises(ValueError, match="no random effects"):
        plot_caterpillar(model)
