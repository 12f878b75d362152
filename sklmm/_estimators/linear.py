"""MixedLinearRegressor: lme4's linear mixed models as a scikit-learn regressor."""

from __future__ import annotations

import functools
import warnings
from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from . import results as _results
from .._model.terms import lookup_levels
from .._engine.fit import TrainingData, fit_lmm
from .._model.bars import TermSpec, parse_random_effects
from .._dask import is_dask_input
from .._model.bars import FormulaError
from .._model.formula import FormulaDesign
from .._warnings import _external_stacklevel
from .._model.validation import (
    as_groups_frame,
    as_sample_weight,
    check_numeric,
    check_row_alignment,
    fingerprint,
    refuse_groups_by_name,
    shares_memory,
)


#: Fitted result tables built from the LmmFit on first access (MixedLinearRegressor.__getattr__).
_LAZY_TABLES = {
    "random_effects_": _results.random_effects_frames,
    "variance_components_": _results.variance_components_frame,
    "fixed_effects_": _results.fixed_effects_frame,
    "fixed_effects_cov_": _results.fixed_effects_cov_frame,
}


def _clean_float_inputs(X, y, min_features: int):
    """``(X, y)`` as float arrays when they need no conversion and pass every check, else None.

    The common case of a fit (a DataFrame of float64 columns with string
    names, a finite float response of the same length) is settled here in a
    few array operations; anything else, and every input that would be
    refused, goes through scikit-learn's ``validate_data`` (its messages).
    The arrays are what ``validate_data`` would return: X's values (a view
    where pandas holds them in one block), y as given when it is float64.
    """
    if isinstance(X, np.ndarray):  # e.g. an intercept-only model's (n, 0) array
        if X.ndim != 2 or X.dtype != np.float64 or len(X) < 2 or X.shape[1] < min_features:
            return None
    elif not isinstance(X, pd.DataFrame) or len(X) < 2 or X.shape[1] < min_features:
        return None
    elif not X.columns.is_unique or not all(isinstance(c, str) for c in X.columns):
        return None
    elif not all(dtype == np.float64 for dtype in X.dtypes):
        return None
    if isinstance(y, pd.Series):
        y = y.to_numpy()
    if not isinstance(y, np.ndarray) or y.ndim != 1 or y.dtype != np.float64 or len(y) != len(X):
        return None
    values = X if isinstance(X, np.ndarray) else X.to_numpy(dtype=np.float64)
    if not (np.isfinite(values).all() and np.isfinite(y).all()):
        return None
    return values, y


def _zero_columns_as_array(X):
    """An intercept-only model may get a frame with no columns; scikit-learn's
    validation cannot infer a dtype from one, so pass an empty float array."""
    shape = getattr(X, "shape", None)
    if isinstance(X, pd.DataFrame) and shape is not None and len(shape) == 2 and shape[1] == 0:
        return np.empty((shape[0], 0))
    return X


def _n_rows(X) -> int:
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape) >= 1:
        return int(shape[0])
    try:
        return len(X)
    except TypeError:
        return 0


def _warn_factor_columns_in_X(columns: list[str], specs: list[TermSpec]) -> None:
    """Warn when a column of X has the name of one of the model's grouping factors.

    Usually the group ids were left in X as well as passed as ``groups``:
    they are then also fitted as a numeric fixed-effect covariate.
    """
    factors = {name for spec in specs for name in spec.factors}
    clash = [c for c in columns if c in factors]
    if clash:
        warnings.warn(
            f"X column(s) {clash} have the name(s) of grouping factor(s) of the model, taken from "
            f"groups: each is also fitted as a numeric fixed-effect covariate (a slope on the "
            f"group ids), which is rarely meant. If they hold the group labels, drop them from X: "
            f"fit(X.drop(columns={clash!r}), y, groups=...).",
            UserWarning,
            stacklevel=_external_stacklevel(),
        )


@functools.lru_cache(maxsize=128)
def _parsed_terms_cached(random_effects: str) -> tuple[TermSpec, ...]:
    return tuple(parse_random_effects(random_effects))


def _parsed_terms(random_effects) -> list[TermSpec]:
    """:func:`parse_random_effects`, remembered per string (a fit reads it twice; refits many times)."""
    if not isinstance(random_effects, str):
        return parse_random_effects(random_effects)  # raises its TypeError
    return list(_parsed_terms_cached(random_effects))


class MixedLinearRegressor(RegressorMixin, BaseEstimator):
    """Linear mixed-effects model fitted as lme4's ``lmer`` fits it.

    The model is ``y = X beta + Z b + e`` with random effects
    ``b ~ N(0, sigma^2 Lambda Lambda')`` and residuals ``e ~ N(0, sigma^2 / w)``.
    The relative covariance parameters theta are estimated by minimising the
    profiled REML criterion (``reml=True``) or deviance (``reml=False``); the
    fixed effects and the conditional modes of the random effects (BLUPs) come
    out of a penalised least-squares solve at the optimum.

    Parameters
    ----------
    random_effects : str or None, default=None
        The random part in lme4's bar syntax: ``"(1 | g)"`` random intercept,
        ``"(1 + x | g)"`` correlated intercept and slope (``"(x | g)"`` is the
        same), ``"(1 + x || g)"`` uncorrelated, ``"(0 + x | g)"`` slope only,
        ``"(1 | a) + (1 | b)"`` crossed factors, ``"(1 | a/b)"`` nested
        (``a`` and ``a:b``), ``"(1 | a:b)"`` interaction.  Slope names are
        columns of ``X`` (``x0, x1, ...`` for arrays); factor names are
        columns of ``groups``.  ``None``: a random intercept for every column
        of ``groups``.
    reml : bool, default=True
        Estimate by REML (as lme4's default) or by maximum likelihood.
    fit_intercept : bool, default=True
        Include a fixed intercept.
    max_iter : int, default=10000
        Maximum number of objective evaluations by the optimiser.
    formula : str or None, default=None
        The model as a one-sided lme4 formula, ``"~ Days + (Days | Subject)"``:
        ``fit(X, y)`` then takes a DataFrame ``X`` holding every column the
        formula names, grouping factors included (so Pipelines and
        cross-validation need no metadata routing), builds the fixed part and
        the random terms' columns as lme4 does (factors, interactions,
        transforms; see :func:`sklmm.lmer`), and names every result as lme4
        does (``SexMale``, ``age:SexMale``, ``I(Days^2)``).  ``predict(X)``
        applies the training encodings to new rows.  Excludes
        ``random_effects``; the formula's intercept rules replace
        ``fit_intercept``; ``coef_`` follows ``fixed_effects_``' order.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
        Fixed-effect slopes, in the order of X's columns (0.0 for a column
        dropped as aliased).
    intercept_ : float
        Fixed intercept (0.0 when ``fit_intercept=False``).
    random_effects_ : dict of str to DataFrame
        Conditional modes (BLUPs) per grouping factor: index the factor's
        levels, columns the term names (``"(Intercept)"``, slope names).
    variance_components_ : DataFrame
        lme4's ``as.data.frame(VarCorr(fit))``: columns ``group``, ``var1``,
        ``var2``, ``vcov``, ``sdcor``.
    theta_ : ndarray
        Relative covariance parameters, lme4's order: terms by number of
        levels (largest first), each term's lower triangle column by column.
    sigma_ : float
        Residual standard deviation.
    objective_ : float
        REML criterion (REML fits) or deviance (ML fits), on lme4's scale.
    log_likelihood_ : float
        Log-likelihood (restricted for REML fits), as lme4's ``logLik``.
    aic_, bic_ : float
        As lme4's ``AIC`` and ``BIC``.
    fixed_effects_ : DataFrame
        ``estimate``, ``std_error``, ``t_value`` per estimated fixed effect.
    fixed_effects_cov_ : DataFrame
        Covariance of the fixed-effect estimates (lme4's ``vcov``).
    n_iter_ : int
        Objective evaluations used by the optimiser (1 without random effects).
    converged_ : bool
        Whether the optimiser met its tolerance.
    singular_ : bool
        Whether the fit is on the boundary (lme4's ``isSingular``).
    group_names_ : list of str
        Grouping factors the model uses.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Defined when X has string column names.

    See Also
    --------
    sklearn.linear_model.LinearRegression : the model without random effects.

    Examples
    --------
    >>> import numpy as np
    >>> from sklmm import MixedLinearRegressor
    >>> rng = np.random.default_rng(0)
    >>> g = np.repeat(np.arange(20), 10)
    >>> x = rng.normal(size=(200, 1))
    >>> y = 1.0 + 2.0 * x[:, 0] + rng.normal(size=20)[g] + rng.normal(size=200)
    >>> model = MixedLinearRegressor(random_effects="(1 | group)").fit(x, y, groups=g)
    >>> round(float(model.coef_[0]), 2)
    1.93
    >>> model.variance_components_["group"].tolist()
    ['group', 'Residual']

    With a formula, X is a DataFrame holding the grouping column too:

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"x": x[:, 0], "g": g})
    >>> formula_model = MixedLinearRegressor(formula="~ x + (1 | g)").fit(frame, y)
    >>> bool(abs(formula_model.coef_[0] - model.coef_[0]) < 1e-8)
    True
    """

    _parameter_constraints: dict = {
        "random_effects": [str, None],
        "formula": [str, None],
        "reml": ["boolean"],
        "fit_intercept": ["boolean"],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, random_effects=None, reml=True, fit_intercept=True, max_iter=10_000, formula=None):
        self.random_effects = random_effects
        self.reml = reml
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.formula = formula

    def fit(self, X, y, groups=None, sample_weight=None):
        """Fit the model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Fixed-effect covariates, no intercept column.  May have zero
            columns when the model has random effects.
        y : array-like of shape (n_samples,)
            Response.
        groups : array-like, Series or DataFrame, default=None
            Grouping factors: 1-D for one factor (named after the Series, else
            ``"group"``), 2-D for several (DataFrame column names, else
            ``group0, group1, ...``).  ``None`` fits least squares.
        sample_weight : array-like of shape (n_samples,), default=None
            Prior weights, as lme4's ``weights=``: the residual variance of
            row i is ``sigma^2 / w_i``.  Rows with weight 0 are left out.

        Returns
        -------
        self : MixedLinearRegressor
        """
        if is_dask_input(X, y, groups, sample_weight):  # the distributed pass: sklmm._dask
            from .._dask.fit import fit_estimator

            return fit_estimator(self, X, y, groups, sample_weight)
        self.__dict__.pop("_fitted_on_dask", None)
        if not self._plain_params():
            self._validate_params()
        if self.formula is not None:
            return self._fit_formula(X, y, groups, sample_weight)
        refuse_groups_by_name(groups, X, _n_rows(X))
        check_row_alignment(X, y=y, groups=groups, sample_weight=sample_weight)
        X = _zero_columns_as_array(X)
        check_numeric(X, y, factors=self._named_factors())
        columns_in = [str(c) for c in X.columns] if isinstance(X, pd.DataFrame) else []
        X_in, y_in = X, y
        clean = _clean_float_inputs(X, y, min_features=0 if groups is not None else 1)
        if clean is not None:  # what validate_data returns and sets, without its generic checks
            self.n_features_in_ = X.shape[1]
            if isinstance(X, pd.DataFrame):
                self.feature_names_in_ = np.asarray(columns_in, dtype=object)
            else:  # as validate_data: an array has no feature names
                self.__dict__.pop("feature_names_in_", None)
            X, y = clean
        else:  # anything else, including every input it refuses: scikit-learn's own checks and messages
            X, y = validate_data(
                self, X, y, dtype=np.float64, y_numeric=True, ensure_min_samples=2,
                ensure_min_features=0 if groups is not None else 1,
            )
        # Inference reuses the training data.  y is copied (n numbers); X, when it
        # is the caller's own array, is kept by reference with a fingerprint, so
        # that a fitted model does not hold a second copy of the data, and an
        # edit of X after the fit is detected rather than silently used.
        y = y.copy() if shares_memory(y, y_in) else y
        X_fingerprint = fingerprint(X) if shares_memory(X, X_in) else None
        n = X.shape[0]
        weights = as_sample_weight(sample_weight, n)
        frame = None if groups is None else as_groups_frame(groups, n)
        specs = self._term_specs(frame)
        names = self._slope_names(X.shape[1])
        self._check_slopes_without_column_names(specs, names)
        _warn_factor_columns_in_X(columns_in, specs)

        self._design = None
        self._training_fingerprint = X_fingerprint
        return self._fit_data(TrainingData(X, y, frame, weights, specs, names, self.fit_intercept))

    def _plain_params(self) -> bool:
        """Whether every parameter has a plain type that meets its constraint (then scikit-learn's
        ``_validate_params``, which inspects the signature at every call, has nothing to refuse).

        Only for this class itself: a subclass may constrain more parameters.
        """
        return (
            type(self) is MixedLinearRegressor
            and (self.random_effects is None or type(self.random_effects) is str)
            and (self.formula is None or type(self.formula) is str)
            and type(self.reml) is bool
            and type(self.fit_intercept) is bool
            and type(self.max_iter) is int
            and self.max_iter >= 1
        )

    def _fit_formula(self, X, y, groups, sample_weight, *, formula_text=None, weights_label=None):
        """fit() for a formula model: X holds every column the formula names."""
        if self.random_effects is not None:
            raise ValueError(
                f"formula={self.formula!r} and random_effects={self.random_effects!r} were both given; "
                "they exclude each other: put the random part in the formula, e.g. "
                "formula='~ Days + (Days | Subject)'"
            )
        if groups is not None:
            raise ValueError(
                "groups was passed to fit, but a formula model takes its grouping factors from the "
                "columns of X that the formula names (e.g. '(1 | Subject)' uses X['Subject']); "
                "pass groups=None and keep those columns in X"
            )
        if not isinstance(X, pd.DataFrame):
            raise TypeError(
                f"X must be a pandas DataFrame holding the columns that formula={self.formula!r} names "
                f"(grouping factors included), got {type(X).__name__}"
            )
        check_row_alignment(X, y=y, sample_weight=sample_weight)
        design = FormulaDesign.from_data(self.formula, X, one_sided=True)
        encoded = design.encode(X, "X" if formula_text is None else "data")
        n = len(encoded.X)
        if y is None:
            raise ValueError("y is required: the response, one value per row of X")
        check_numeric(np.empty((n, 0)), y)
        y = np.asarray(y, dtype=np.float64).copy()
        if y.ndim != 1:
            y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
        if y.ndim != 1 or len(y) != n:
            raise ValueError(f"y must be 1-D with one value per row of X ({n}), got shape {np.shape(y)}")
        bad = ~np.isfinite(y)
        if bad.any():
            raise ValueError(f"y has {int(bad.sum())} NaN or infinite value(s) (first at row {int(np.flatnonzero(bad)[0])})")
        weights = as_sample_weight(sample_weight, n)
        frame = None if encoded.groups is None else as_groups_frame(encoded.groups, n, argument="the grouping columns")
        if encoded.offset is not None:
            y = y - encoded.offset
        self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
        self.n_features_in_ = X.shape[1]
        self._design = design
        self._formula_text = formula_text
        self._weights_label = weights_label  # lmer(weights="w"): the summary's Weights line
        self._training_fingerprint = None
        names = design.fixed_columns_without_intercept()
        data = TrainingData(
            encoded.X, y, frame, weights, design.specs, names, design.has_intercept,
            slopes=encoded.slopes, offset=encoded.offset,
        )
        return self._fit_data(data)

    def _fit_data(self, data: TrainingData):
        """Fit validated training data and set the fitted attributes."""
        self._training_data = data
        fit = fit_lmm(data, reml=self.reml, max_evaluations=self.max_iter)
        return self._set_fitted(fit, data.fit_intercept, [] if data.groups is None else data.groups.columns.tolist())

    def _set_fitted(self, fit, fit_intercept: bool, group_columns: list[str]):
        """The fitted attributes from an LmmFit (in-memory or Dask fit alike)."""
        offset = 1 if fit_intercept else 0
        self.intercept_ = float(fit.beta[0]) if offset else 0.0
        self.coef_ = fit.beta[offset:].copy()
        self.theta_ = fit.theta.copy()
        self.sigma_ = float(fit.sigma)
        self.objective_ = float(fit.objective)
        self.log_likelihood_ = float(fit.log_likelihood)
        self.aic_ = float(fit.aic)
        self.bic_ = float(fit.bic)
        self.n_iter_ = int(fit.n_evaluations)
        self.converged_ = bool(fit.converged)
        self.singular_ = bool(fit.singular)
        # The result tables (random_effects_, variance_components_, fixed_effects_,
        # fixed_effects_cov_) are built from the fit on first access (__getattr__):
        # about a third of a small fit's time went into frames nobody might read.
        for name in _LAZY_TABLES:
            self.__dict__.pop(name, None)
        self._table_source = fit
        used = {name for term in fit.terms for name in term.factors}
        self.group_names_ = [name for name in group_columns if name in used]
        self.n_obs_ = int(fit.n_obs)
        self._fitted_terms = fit.terms
        return self

    def __getattr__(self, name):
        """Build a result table (see ``_LAZY_TABLES``) on first access; it is then an ordinary attribute."""
        build = _LAZY_TABLES.get(name)
        if build is not None:
            source = self.__dict__.get("_table_source")
            if source is not None:
                value = build(source)
                self.__dict__[name] = value
                return value
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def predict(self, X, groups=None):
        """Predict, conditional on the levels seen in fit.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        groups : array-like, Series or DataFrame, default=None
            Grouping factors as in :meth:`fit`.  A level not seen in fit (or
            ``groups=None``) contributes zero: the population-level
            prediction, as lme4's ``allow.new.levels=TRUE``.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        check_is_fitted(self)
        if is_dask_input(X, groups):  # lazy, per partition: sklmm._dask
            from .._dask.predict import predict

            return predict(self, X, groups)
        X, source, frame, offset = self._prediction_inputs(X, groups)
        return self._predict_arrays(X, source, frame, offset)

    def _prediction_inputs(self, X, groups):
        """(fixed columns without intercept, slope source, grouping frame or None, offset or None)."""
        design = getattr(self, "_design", None)
        if design is not None:
            if groups is not None:
                raise ValueError(
                    "groups was passed, but a formula model takes its grouping factors from the columns "
                    "of X that the formula names; pass groups=None and keep those columns in X"
                )
            encoded = design.encode(X, "X", require_groups=False)
            return encoded.X, encoded.slopes, encoded.groups, encoded.offset
        refuse_groups_by_name(groups, X, _n_rows(X))
        check_row_alignment(X, groups=groups)
        X = _zero_columns_as_array(X)
        X = validate_data(self, X, dtype=np.float64, reset=False, ensure_min_features=0)
        frame = None if groups is None or not self._fitted_terms else self._groups_for_predict(groups, X.shape[0])
        return X, X, frame, None

    def _predict_arrays(self, X, source, frame, offset):
        """X @ coef_ + intercept_ + the random effects of known levels (+ offset)."""
        prediction = X @ self.coef_ + self.intercept_
        if offset is not None:
            prediction = prediction + offset
        if frame is None or not self._fitted_terms:
            return prediction
        missing = [name for name in self._fit_group_columns if name not in frame.columns]
        if missing:
            warnings.warn(
                f"groups has no column for the grouping factor(s) {missing} of the model (its columns: "
                f"{list(frame.columns)}), so their random effects contribute nothing: the predictions "
                "are population-level for them. Pass those columns, named as in fit, to predict conditionally.",
                UserWarning,
                stacklevel=_external_stacklevel(),
            )
        for term in self._fitted_terms:
            if any(name not in frame.columns for name in term.factors):
                continue
            codes = lookup_levels(frame, term.factors, term.levels)
            known = codes >= 0
            if not known.any():
                continue
            effects = term.b[codes[known]]  # (n_known, p)
            for j, column in enumerate(term.slope_index):
                values = effects[:, j] if column is None else effects[:, j] * source[known, column]
                prediction[known] += values
        return prediction

    def score(self, X, y, sample_weight=None, groups=None):
        """R^2 of ``predict(X, groups=groups)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None
        groups : array-like, Series or DataFrame, default=None
            Without groups the score is that of the population-level
            prediction.

        Returns
        -------
        float
        """
        from sklearn.metrics import r2_score

        if is_dask_input(X, y, groups, sample_weight):  # a lazy Dask value: sklmm._dask
            from .._dask.predict import score

            return score(self, X, y, sample_weight=sample_weight, groups=groups)
        check_row_alignment(X, y=y, sample_weight=sample_weight)
        return r2_score(y, self.predict(X, groups=groups), sample_weight=sample_weight)

    # -- inference and reporting (sklmm._summary, _confint, _simulate, _condvar) ----

    def summary(self, ddf="satterthwaite"):
        """The model's summary, as lmerTest's ``summary(lmer)`` (or lme4's with ``ddf=None``).

        Parameters
        ----------
        ddf : {"satterthwaite", "kenward-roger"} or None, default="satterthwaite"
            Degrees of freedom of the fixed effects' t tests, as lmerTest:
            the table gains ``df`` and ``Pr(>|t|)`` columns (Kenward-Roger:
            standard errors adjusted as pbkrtest's ``vcovAdj``; REML fits
            only).  ``None``: lme4's table (estimate, standard error, t
            value), with nothing more to compute.

        Returns
        -------
        ModelSummary
            ``str()`` reads as lmerTest's (or lme4's) printed summary; the
            tables are attributes (DataFrames and Series), and notebooks
            show it as HTML.

        Examples
        --------
        >>> from sklmm import MixedLinearRegressor
        >>> from sklmm.datasets import load_sleepstudy
        >>> X, y, groups = load_sleepstudy(return_X_y_groups=True)
        >>> model = MixedLinearRegressor(random_effects="(1 + Days | Subject)").fit(X, y, groups=groups)
        >>> summary = model.summary()  # lmerTest: df 17.000, p 3.26e-06 for Days
        >>> summary.fixed_effects.round(3)
                     Estimate  Std. Error    df  t value  Pr(>|t|)
        (Intercept)   251.405       6.825  17.0   36.838       0.0
        Days           10.467       1.546  17.0    6.771       0.0
        >>> print(str(summary).splitlines()[3])
        REML criterion at convergence: 1743.6
        >>> model.summary(ddf=None).fixed_effects.round(3)  # lme4's table
                     Estimate  Std. Error  t value
        (Intercept)   251.405       6.825   36.838
        Days           10.467       1.546    6.771
        """
        from .._report.summary import summarize

        check_is_fitted(self)
        return summarize(self, ddf=ddf)

    def confint(self, method="profile", level=0.95, parm=None, *, n_boot=500, random_state=None, n_jobs=None):
        """Confidence intervals for the variance parameters and fixed effects (lme4's ``confint``).

        Parameters
        ----------
        method : {"profile", "wald", "bootstrap"}, default="profile"
            ``"profile"``: profile likelihood (lme4's default; always of the
            ML deviance, as lme4, also for a REML fit).  ``"wald"``:
            estimate -/+ z standard error, fixed effects only (the
            variance parameters' rows are NaN, as lme4's).
            ``"bootstrap"``: percentile intervals of a parametric bootstrap.
        level : float, default=0.95
        parm : None, str or list of str
            Parameters to report (lme4's ``parm``): ``None`` for all,
            ``"theta_"`` for the variance parameters and sigma, ``"beta_"``
            for the fixed effects, or parameter names.
        n_boot : int, default=500
            Bootstrap replicates.
        random_state : int, SeedSequence, Generator or None
            Bootstrap seed; the result is the same for any ``n_jobs``.
        n_jobs : int or None
            Parallel bootstrap workers (joblib).

        Returns
        -------
        DataFrame
            Indexed by lme4's parameter names (``sd_(Intercept)|Subject``,
            ``cor_Days.(Intercept)|Subject``, ``sd_Days|Subject``,
            ``sigma``, then the fixed effects), columns ``lower`` and
            ``upper``.

        Examples
        --------
        >>> from sklmm import MixedLinearRegressor
        >>> from sklmm.datasets import load_sleepstudy
        >>> X, y, groups = load_sleepstudy(return_X_y_groups=True)
        >>> model = MixedLinearRegressor(random_effects="(1 + Days | Subject)").fit(X, y, groups=groups)
        >>> model.confint("wald").round(3)  # lme4: 238.029 264.781 / 7.438 13.497
                                        lower    upper
        sd_(Intercept)|Subject            NaN      NaN
        cor_Days.(Intercept)|Subject      NaN      NaN
        sd_Days|Subject                   NaN      NaN
        sigma                             NaN      NaN
        (Intercept)                   238.029  264.781
        Days                            7.438   13.497
        >>> model.confint("profile", parm="beta_").round(3)  # lme4: 237.681 265.130 / 7.359 13.576
                       lower    upper
        (Intercept)  237.681  265.130
        Days           7.359   13.576
        """
        from .._inference.confint import confint

        check_is_fitted(self)
        return confint(self, method=method, level=level, parm=parm, n_boot=n_boot, random_state=random_state, n_jobs=n_jobs)

    def simulate(self, n_sim=1, random_state=None):
        """Responses drawn from the fitted model (lme4's ``simulate``): new random effects and residuals.

        Parameters
        ----------
        n_sim : int, default=1
        random_state : int, SeedSequence, Generator or None

        Returns
        -------
        ndarray of shape (n_samples, n_sim)
            One column per draw, one row per training row (NaN for rows
            with weight 0, whose residual variance is infinite).

        Examples
        --------
        >>> from sklmm import MixedLinearRegressor
        >>> from sklmm.datasets import load_sleepstudy
        >>> X, y, groups = load_sleepstudy(return_X_y_groups=True)
        >>> model = MixedLinearRegressor(random_effects="(1 + Days | Subject)").fit(X, y, groups=groups)
        >>> model.simulate(2, random_state=0).shape
        (180, 2)
        """
        from .._inference.simulate import simulate, simulation_model

        data = self._require_training_data("simulate")
        model = simulation_model(data, self.coef_, self.intercept_, self._fitted_terms, self.sigma_)
        return simulate(model, int(n_sim), random_state)

    @property
    def random_effects_cov_(self):
        """Conditional covariances of the random effects, per level (lme4's ``condVar``).

        dict of str to ndarray of shape (n_levels, p, p): keys, levels and
        columns as ``random_effects_``; ``[l, i, j]`` is the conditional
        covariance of columns i and j for level l, on the response scale.
        Computed on first access from the training data, then kept.

        Examples
        --------
        >>> from sklmm import MixedLinearRegressor
        >>> from sklmm.datasets import load_sleepstudy
        >>> X, y, groups = load_sleepstudy(return_X_y_groups=True)
        >>> model = MixedLinearRegressor(random_effects="(1 + Days | Subject)").fit(X, y, groups=groups)
        >>> cov = model.random_effects_cov_["Subject"]
        >>> cov.shape
        (18, 2, 2)
        >>> cov[0].round(2)  # subject 308; lme4's condVar: 145.71 -21.44 / -21.44 5.31
        array([[145.71, -21.44],
               [-21.44,   5.31]])
        """
        check_is_fitted(self)
        cached = self.__dict__.get("_random_effects_cov")
        if cached is None or cached[0] is not self.theta_:
            from .._inference.condvar import random_effects_covariances

            cached = (self.theta_, random_effects_covariances(self))
            self.__dict__["_random_effects_cov"] = cached
        return cached[1]

    def predict_se(self, X, groups=None):
        """Standard errors of :meth:`predict`'s predictions.

        Rows without known levels (or ``groups=None``): ``sqrt(x' V x)``, V
        the covariance of the fixed effects.  Rows with known levels: the
        root conditional mean squared error of ``x' beta_hat + z' b_hat``
        given the variance parameters (it includes the uncertainty of the
        fixed effects and of the random effects, not that of theta, nor the
        residual noise of a new observation).

        Returns
        -------
        ndarray of shape (n_samples,)

        Examples
        --------
        >>> from sklmm import MixedLinearRegressor
        >>> from sklmm.datasets import load_sleepstudy
        >>> X, y, groups = load_sleepstudy(return_X_y_groups=True)
        >>> model = MixedLinearRegressor(random_effects="(1 + Days | Subject)").fit(X, y, groups=groups)
        >>> model.predict_se(X.head(3), groups=groups.head(3)).round(3)  # subject 308, days 0-2
        array([12.255, 10.543,  9.114])
        >>> model.predict_se(X.head(3)).round(3)  # population level: sqrt(x' vcov x)
        array([6.825, 6.787, 7.094])
        """
        from .._inference.condvar import prediction_standard_errors

        check_is_fitted(self)
        X, source, frame, _ = self._prediction_inputs(X, groups)
        return prediction_standard_errors(self, X, source, frame)

    # -- persistence ---------------------------------------------------------------

    def __getstate__(self):
        """Pickle without the training data, so a saved model's size does not grow with n.

        Methods that need the data (profile and bootstrap intervals,
        simulation, likelihood-ratio refits) then ask for a refit.
        """
        state = dict(super().__getstate__())  # a copy: the default state is the live __dict__
        state.pop("_training_data", None)
        return state

    def _require_training_data(self, what: str) -> TrainingData:
        check_is_fitted(self)
        data = getattr(self, "_training_data", None)
        if data is None and getattr(self, "_fitted_on_dask", False):
            raise RuntimeError(
                f"{what} needs the rows the model was fitted to, and a fit on Dask collections keeps "
                "none of them on the client; fit the model in memory (on a sample that fits) to use it."
            )
        if data is None:
            raise RuntimeError(
                f"{what} needs the data the model was fitted to, which is not saved when a "
                "model is pickled; fit the model again on its data to use it."
            )
        expected = getattr(self, "_training_fingerprint", None)
        if expected is not None and not np.array_equal(fingerprint(data.X), expected):
            raise RuntimeError(
                f"{what} needs the data the model was fitted to, but the array X passed to fit "
                "has been modified since; fit the model again (or pass a copy of X to fit)."
            )
        return data

    # -- helpers --------------------------------------------------------------

    def _term_specs(self, frame: pd.DataFrame | None) -> list[TermSpec]:
        """Parsed random-effects terms; the default is an intercept per factor."""
        if self.random_effects is None:
            if frame is None:
                return []
            return [TermSpec(factors=(name,), columns=("(Intercept)",)) for name in frame.columns]
        specs = _parsed_terms(self.random_effects)
        if frame is None:
            factors = sorted({name for spec in specs for name in spec.factors})
            raise ValueError(
                f"random_effects={self.random_effects!r} needs grouping factors {factors}, "
                "but groups=None was passed to fit. Pass groups=... (a Series or DataFrame "
                "with those columns); in a Pipeline, cross-validation or a grid search, enable "
                "metadata routing with sklearn.set_config(enable_metadata_routing=True), call "
                "set_fit_request(groups=True) on the estimator and pass the groups as metadata: "
                "pipeline.fit(X, y, groups=groups), cross_validate(..., params={'groups': groups}), "
                "GridSearchCV(...).fit(X, y, groups=groups)."
            )
        return specs

    def _fixed_input_names(self) -> tuple[bool, list[str]]:
        """Whether the model has a fixed intercept, and the names of its other fixed-effect columns."""
        design = getattr(self, "_design", None)
        if design is not None:
            return design.has_intercept, design.fixed_columns_without_intercept()
        return self.fit_intercept, self._slope_names(self.n_features_in_)

    def _named_factors(self) -> tuple[str, ...]:
        """Grouping factor names the random part names (empty if it does not parse yet)."""
        if not isinstance(self.random_effects, str):
            return ()
        try:
            specs = _parsed_terms(self.random_effects)
        except FormulaError:
            return ()  # reported with its position where the terms are built
        return tuple(name for spec in specs for name in spec.factors)

    def _slope_names(self, n_features: int) -> list[str]:
        if hasattr(self, "feature_names_in_"):
            return [str(name) for name in self.feature_names_in_]
        return [f"x{j}" for j in range(n_features)]

    def _check_slopes_without_column_names(self, specs: list[TermSpec], names: list[str]) -> None:
        """A slope that X cannot name because X came without column names (an
        array, e.g. from a Pipeline step): say how to keep the names."""
        if hasattr(self, "feature_names_in_"):
            return  # a named slope missing from named columns is reported when the terms are built
        missing = [c for spec in specs for c in spec.columns if c != "(Intercept)" and c not in names]
        if missing:
            raise ValueError(
                f"random_effects names the slope(s) {missing}, which are not columns of X: X has "
                f"no column names (an array, e.g. a Pipeline step's output), so its columns are "
                f"{names}. Pass X as a DataFrame; in a Pipeline, make the steps return DataFrames "
                "with .set_output(transform='pandas') (a ColumnTransformer also prefixes names, "
                "e.g. 'num__Days', unless verbose_feature_names_out=False); or name the slopes "
                "x0, x1, ... by position."
            )

    def _groups_for_predict(self, groups, n_samples: int) -> pd.DataFrame:
        """Groups for prediction, matched to the fit's factor names.

        Unnamed input (an array or an unnamed Series) is matched by position
        when it has as many columns as the fit's groups had.
        """
        frame = as_groups_frame(groups, n_samples)
        unnamed = not isinstance(groups, pd.DataFrame) and not (isinstance(groups, pd.Series) and groups.name is not None)
        if unnamed and frame.shape[1] == len(self._fit_group_columns):
            frame.columns = self._fit_group_columns
        return frame

    @property
    def _fit_group_columns(self) -> list[str]:
        names = []
        for term in self._fitted_terms:
            for name in term.factors:
                if name not in names:
                    names.append(name)
        return names

    # -- tests of fixed effects (sklmm._inference.ddf, ftests) ------------------------------

    def test(self, L, ddf="satterthwaite"):
        """Test the linear hypothesis ``L beta = 0`` (lmerTest's ``contest``).

        Parameters
        ----------
        L : array-like of shape (p,) or (k, p), Series or DataFrame
            The contrast: one column per estimated fixed effect, in the
            order of ``fixed_effects_`` (a Series or DataFrame may name the
            fixed effects it uses; the others get 0).
        ddf : {"satterthwaite", "kenward-roger"}, default="satterthwaite"
            Denominator degrees of freedom, as lmerTest (Kenward-Roger as
            pbkrtest 0.5.2; REML fits only).

        Returns
        -------
        DataFrame
            One row (a 1-D ``L`` or one row): the t test, columns
            ``Estimate``, ``Std. Error``, ``df``, ``t value``, ``Pr(>|t|)``
            (Kenward-Roger: the adjusted standard error).  Several rows: the
            F test, columns ``Sum Sq``, ``Mean Sq``, ``NumDF``, ``DenDF``,
            ``F value``, ``Pr(>F)``, as lmerTest's ``contestMD``.

        Examples
        --------
        >>> from sklmm import MixedLinearRegressor
        >>> from sklmm.datasets import load_sleepstudy
        >>> X, y, groups = load_sleepstudy(return_X_y_groups=True)
        >>> model = MixedLinearRegressor(random_effects="(1 + Days | Subject)").fit(X, y, groups=groups)
        >>> model.test([0, 1]).round(3)  # lmerTest's contest1D: df 17.000, t 6.771
           Estimate  Std. Error    df  t value  Pr(>|t|)
        0    10.467       1.546  17.0    6.771       0.0
        >>> # lmerTest's contestMD(ddf = "Kenward-Roger"): NumDF 2, DenDF 16, F 705.836
        >>> model.test([[1, 0], [0, 1]], ddf="kenward-roger")[["NumDF", "DenDF", "F value"]].round(1)
           NumDF  DenDF  F value
        0      2   16.0    705.8
        """
        from .._inference.ftests import contrast_test

        check_is_fitted(self)
        return contrast_test(self, L, ddf=ddf)

    def predict_interval(self, X, groups=None, level=0.95):
        """Prediction intervals for new observations.

        Each row is predicted as :meth:`predict` predicts it and the
        interval is ``fit -/+ z sd`` (normal quantile), ``sd`` the standard
        deviation of the prediction error of a new observation:

        * rows whose levels were seen in fit: the residual variance plus the
          conditional mean squared error of the prediction (uncertainty of
          the fixed effects and of the level's conditional modes);
        * a term whose level is new (or ``groups=None``): its random effect
          is predicted by 0 and its variance (``z' Sigma z``, Sigma the
          term's covariance) is added, as is the uncertainty of the fixed
          effects and the residual variance.

        Not included: the uncertainty of the variance parameters (theta,
        sigma), so in small samples the intervals are somewhat too narrow.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        groups : array-like, Series or DataFrame, default=None
            Grouping factors as in :meth:`predict`.
        level : float, default=0.95

        Returns
        -------
        DataFrame
            Columns ``fit``, ``lower``, ``upper``, ``se`` (the prediction
            error's standard deviation), one row per row of X (X's index
            when X is a DataFrame).

        Examples
        --------
        >>> from sklmm import MixedLinearRegressor
        >>> from sklmm.datasets import load_sleepstudy
        >>> X, y, groups = load_sleepstudy(return_X_y_groups=True)
        >>> model = MixedLinearRegressor(random_effects="(1 + Days | Subject)").fit(X, y, groups=groups)
        >>> model.predict_interval(X.head(2), groups=groups.head(2)).round(1)  # subject 308
             fit  lower  upper    se
        0  253.7  198.1  309.3  28.4
        1  273.3  219.1  327.6  27.7
        >>> model.predict_interval(X.head(2)).round(1)  # a new subject: sqrt(6.825^2 + 612.09 + 654.94)
             fit  lower  upper    se
        0  251.4  180.4  322.4  36.2
        1  261.9  189.4  334.3  37.0
        """
        from .._inference.intervals import prediction_interval

        check_is_fitted(self)
        index = X.index if isinstance(X, pd.DataFrame) else None
        X, source, frame, offset = self._prediction_inputs(X, groups)
        return prediction_interval(self, X, source, frame, offset, level, index=index)
