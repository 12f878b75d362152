"""Every warning sklmm emits, in one place, each saying what to do about it."""

from __future__ import annotations

import warnings

from sklearn.exceptions import ConvergenceWarning


def _external_stacklevel() -> int:
    """The stacklevel of the first frame outside the sklmm package: the caller's own line.

    Counted rather than fixed, so that warnings point at the user's ``fit``
    call whatever path inside sklmm led to them.
    """
    import os
    import sys

    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(2), 2  # 1: the warn_* function calling warnings.warn
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


class SingularFitWarning(UserWarning):
    """A variance component was estimated at (or next to) zero, or a correlation at +/-1.

    As lme4's ``isSingular``: some element of theta that is bounded below by
    zero is below 1e-4.  The fit is valid but on the boundary of the
    parameter space; the random-effects structure is likely more complex
    than the data support.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from sklmm import MixedLinearRegressor, SingularFitWarning
    >>> rng = np.random.default_rng(1)
    >>> g = np.repeat(np.arange(8), 6)
    >>> x = rng.normal(size=(48, 1))
    >>> y = 2.0 + x[:, 0] + rng.normal(size=48)        # no group effect in the data
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     model = MixedLinearRegressor("(1 | group)").fit(x, y, groups=g)
    >>> caught[0].category is SingularFitWarning, model.singular_
    (True, True)
    """


class RankDeficientWarning(UserWarning):
    """Fixed-effect columns were dropped because they are linear combinations of others.

    Examples
    --------
    >>> import warnings
    >>> from sklmm import MixedLinearRegressor, RankDeficientWarning
    >>> from sklmm.datasets import load_sleepstudy
    >>> X, y, groups = load_sleepstudy(return_X_y_groups=True)
    >>> X["Days2"] = 2 * X["Days"]                      # a copy of Days, rescaled
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     model = MixedLinearRegressor("(1 | Subject)").fit(X, y, groups=groups)
    >>> caught[0].category is RankDeficientWarning, model.coef_.round(3).tolist()
    (True, [10.467, 0.0])
    """


class ExactFitWarning(UserWarning):
    """The response is fitted exactly; the residual variance is zero.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from sklmm import ExactFitWarning, MixedLinearRegressor
    >>> x = np.arange(5.0).reshape(-1, 1)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     model = MixedLinearRegressor().fit(x, 1.0 + 2.0 * x[:, 0])    # no groups: least squares
    >>> caught[0].category is ExactFitWarning, model.sigma_
    (True, 0.0)
    """


class SeparationWarning(UserWarning):
    """Fitted probabilities numerically 0 or 1: the classes are (quasi-)completely separated.

    As R's ``glm.fit`` warning: some linear combination of the fixed-effect
    columns predicts the outcome perfectly, so the maximum-likelihood
    coefficients are infinite.  The reported coefficients are large and
    finite (where the iterations stopped) and their standard errors are
    meaningless.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from sklmm import MixedLogisticRegression, SeparationWarning
    >>> x = np.arange(10.0).reshape(-1, 1)
    >>> y = x[:, 0] > 4.5                               # x separates the classes
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     model = MixedLogisticRegression().fit(x, y)
    >>> any(w.category is SeparationWarning for w in caught)
    True
    """


def warn_singular(fit) -> None:
    """Warn about a boundary fit, naming the terms at the boundary."""
    from ._engine.fit import SINGULAR_TOLERANCE

    problems = []
    for term in fit.terms:
        diagonal = abs(term.lam.diagonal())
        for column, value in zip(term.columns, diagonal):
            if value < SINGULAR_TOLERANCE:
                problems.append(f"{column} | {term.factor_name}")
    where = "; ".join(problems) if problems else "a covariance factor"
    warnings.warn(
        f"boundary (singular) fit: the random-effects covariance is singular at {where} "
        "(a variance at zero or a correlation at +/-1). The estimates are valid, but "
        "consider a simpler random-effects structure, e.g. dropping that term or using "
        "'||' for uncorrelated effects.",
        SingularFitWarning,
        stacklevel=_external_stacklevel(),
    )


def warn_not_converged(message: str, n_evaluations: int, budget: int) -> None:
    warnings.warn(
        f"the optimiser did not converge after {n_evaluations} objective evaluations "
        f"(max_iter={budget}): {message}. Increase max_iter, rescale covariates to "
        "similar ranges, or simplify the random-effects structure.",
        ConvergenceWarning,
        stacklevel=_external_stacklevel(),
    )


def warn_rank_deficient(dropped: list[str], n_columns: int) -> None:
    warnings.warn(
        f"the fixed-effects model matrix is rank deficient, so {len(dropped)} of its "
        f"{n_columns} columns were dropped (as lme4 does): {dropped}. Their coefficients "
        "are reported as 0.0 and have no standard error; remove the redundant columns "
        "to silence this warning.",
        RankDeficientWarning,
        stacklevel=_external_stacklevel(),
    )


def warn_exact_fit(n_obs: int, n_params: int) -> None:
    warnings.warn(
        f"the fixed effects fit the {n_obs} observations exactly ({n_params} estimated "
        "coefficients): the residual variance is 0, so sigma_ is 0.0, the likelihood is "
        "unbounded (objective_ = -inf) and standard errors are undefined (NaN).",
        ExactFitWarning,
        stacklevel=_external_stacklevel(),
    )


def warn_exact_fit_by_random_effects(sigma: float, spread: float) -> None:
    warnings.warn(
        f"the fixed and random effects fit y (almost) exactly: the residual standard deviation "
        f"sigma_ = {sigma:.3g} is below 1e-7 of y's ({spread:.3g}). The likelihood is unbounded "
        "there, so theta_, sigma_ and the criterion are not meaningful estimates: the model has as "
        "many effects as the data have distinct values (e.g. one observation per level and slope).",
        ExactFitWarning,
        stacklevel=_external_stacklevel(),
    )


def warn_separation(n_extreme: int, n_obs: int) -> None:
    warnings.warn(
        f"fitted probabilities numerically 0 or 1 occurred for {n_extreme} of {n_obs} rows: "
        "the classes are (quasi-)completely separated by the fixed effects, so some coefficients "
        "diverge (their estimates and standard errors are meaningless, only their signs are). "
        "Remove or merge the separating covariate or level, or use a penalised model.",
        SeparationWarning,
        stacklevel=4,
    )


def warn_non_integer_counts(expression: str, n_rows: int, first: int) -> None:
    """R's ``binomial()$initialize`` warning "non-integer counts in a binomial glm!"."""
    warnings.warn(
        f"non-integer counts in a binomial glm! ({expression}: {n_rows} row(s), first at row {first}). "
        "lme4 warns the same and fits them; its log-likelihood then rounds the counts while the "
        "deviance does not, so objective_ and the estimates differ a little from lme4's "
        "(sklmm's objective is the deviance's, with R's binomial constant at the rounded counts)",
        UserWarning,
        stacklevel=_external_stacklevel(),
    )
