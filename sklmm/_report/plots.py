"""Diagnostic plots (matplotlib, an optional dependency: ``pip install sklmm[plot]``).

* :func:`plot_caterpillar`: the conditional modes of the random effects with
  intervals from their conditional variances, level by level, sorted, as
  lme4's ``dotplot(ranef(fit, condVar = TRUE))``.
* :func:`plot_residuals`: Pearson residuals against fitted values, as lme4's
  ``plot(fit)``.

Both return the matplotlib Figure.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'sklmm[plot]' (or pip install matplotlib)") from error
    return plt


def plot_caterpillar(est, factor=None, level: float = 0.95, max_labels: int = 60):
    """Caterpillar plot: each level's random effects with conditional intervals.

    Parameters
    ----------
    est : MixedLinearRegressor
        A fitted model with random effects (and its training data, for the
        conditional variances).
    factor : str or list of str, optional
        Grouping factors to plot (keys of ``est.random_effects_``); all by default.
    level : float, default=0.95
        Coverage of the intervals ``mode -/+ z sqrt(conditional variance)``.
    max_labels : int, default=60
        Level names are shown on the axis when a factor has at most this many levels.

    Returns
    -------
    matplotlib.figure.Figure
        One row of panels per factor, one panel per random-effects column;
        levels are sorted by their first column's mode.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklmm import MixedLinearRegressor, plot_caterpillar
    >>> from sklmm.datasets import load_sleepstudy
    >>> X, y, groups = load_sleepstudy(return_X_y_groups=True)
    >>> model = MixedLinearRegressor(random_effects="(1 + Days | Subject)").fit(X, y, groups=groups)
    >>> figure = plot_caterpillar(model)
    >>> [ax.get_title() for ax in figure.axes]
    ['Subject: (Intercept)', 'Subject: Days']
    """
    plt = _pyplot()
    if not est.random_effects_:
        raise ValueError("the model has no random effects to plot")
    factors = list(est.random_effects_) if factor is None else ([factor] if isinstance(factor, str) else list(factor))
    unknown = [f for f in factors if f not in est.random_effects_]
    if unknown:
        raise KeyError(f"unknown grouping factor(s) {unknown}; the model's are {list(est.random_effects_)}")
    covariances = est.random_effects_cov_
    z = norm.ppf(0.5 + level / 2.0)
    n_cols = max(est.random_effects_[f].shape[1] for f in factors)
    heights = [max(2.0, 0.18 * len(est.random_effects_[f]) + 0.8) for f in factors]
    figure, axes = plt.subplots(
        len(factors), n_cols, figsize=(3.2 * n_cols + 1.0, sum(heights)), squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for row, name in enumerate(factors):
        modes = est.random_effects_[name]
        sd = np.sqrt(np.einsum("lii->li", covariances[name]))
        order = np.argsort(modes.iloc[:, 0].to_numpy(), kind="stable")
        positions = np.arange(len(modes))
        labels = modes.index.astype(str).to_numpy()[order]
        for col in range(n_cols):
            ax = axes[row, col]
            if col >= modes.shape[1]:
                ax.set_visible(False)
                continue
            values = modes.iloc[:, col].to_numpy()[order]
            half = z * sd[order, col]
            ax.errorbar(values, positions, xerr=half, fmt="o", markersize=3, color="tab:blue", ecolor="0.5", elinewidth=1)
            ax.axvline(0.0, color="0.3", linewidth=0.8, linestyle="--")
            ax.set_title(f"{name}: {modes.columns[col]}")
            if len(modes) <= max_labels and col == 0:
                ax.set_yticks(positions, labels, fontsize=7)
            else:
                ax.set_yticks([])
            ax.set_ylim(-1, len(modes))
    figure.tight_layout()
    return figure


def plot_residuals(est, ax=None):
    """Pearson residuals (``sqrt(w) (y - fitted)``) against fitted values, as lme4's ``plot(fit)``.

    Parameters
    ----------
    est : MixedLinearRegressor
        A fitted model with its training data.
    ax : matplotlib Axes, optional
        Where to draw; a new figure by default.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklmm import MixedLinearRegressor, plot_residuals
    >>> from sklmm.datasets import load_sleepstudy
    >>> X, y, groups = load_sleepstudy(return_X_y_groups=True)
    >>> model = MixedLinearRegressor(random_effects="(1 + Days | Subject)").fit(X, y, groups=groups)
    >>> figure = plot_residuals(model)
    >>> figure.axes[0].get_xlabel()
    'Fitted values'
    """
    plt = _pyplot()
    from .summary import fitted_and_residuals

    fitted, residuals = fitted_and_residuals(est, est._require_training_data("the residual plot"))
    if ax is None:
        figure, ax = plt.subplots(figsize=(5.5, 4.0))
    else:
        figure = ax.figure
    ax.scatter(fitted, residuals, s=12, color="tab:blue", alpha=0.8)
    ax.axhline(0.0, color="0.3", linewidth=0.8, linestyle="--")
    ax.set_xlabel("Fitted values")
    ax.set_ylabel("Pearson residuals")
    ax.set_title("Residuals vs fitted")
    return figure
