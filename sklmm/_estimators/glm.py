"""Generalised linear mixed models as scikit-learn estimators: lme4's ``glmer``.

:class:`MixedLogisticRegression` (a classifier for two-class labels),
:class:`MixedGLMRegressor` (binomial proportions with trials, or Poisson
counts) and :class:`MixedPoissonRegressor`.  The fit is
:func:`sklmm._engine.pirls.fit_glmm`; validation, the parsing of
``random_effects``, conditional prediction and result packaging are the
linear model's (:mod:`sklmm._estimators.linear`, :mod:`.results`).
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from . import results as _results
from .. import _warnings
from .linear import MixedLinearRegressor, _zero_columns_as_array
from .._engine.pirls import GlmmData, fit_glmm
from .._model.families import FAMILY_LINKS, make_family
from .._model.validation import as_groups_frame, as_sample_weight, check_numeric, fingerprint, shares_memory


def _as_offset(offset, n_samples: int, argument: str = "offset") -> np.ndarray | None:
    """A finite (n_samples,) offset on the linear-predictor scale, or None."""
    if offset is None:
        return None
    values = np.asarray(offset, dtype=np.float64).copy()
    if values.ndim == 0:
        values = np.full(n_samples, float(values))
    if values.shape != (n_samples,):
        raise ValueError(f"{argument} must have one value per row of X ({n_samples}), got shape {values.shape}")
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"{argument} has {int(bad.sum())} NaN or infinite value(s) (first at row {int(np.flatnonzero(bad)[0])})")
    return values


def _numeric_response(y) -> np.ndarray:
    """y as floats (a copy); booleans as 0/1."""
    return np.array(y, dtype=np.float64)


class _MixedGLMBase(BaseEstimator):
    """What the GLMM estimators share: the fit, the linear predictor, inference.

    The linear model's helpers are reused as they are (they read only the
    attributes both kinds of model have).
    """

    _term_specs = MixedLinearRegressor._term_specs
    _slope_names = MixedLinearRegressor._slope_names
    _check_slopes_without_column_names = MixedLinearRegressor._check_slopes_without_column_names
    _groups_for_predict = MixedLinearRegressor._groups_for_predict
    _prediction_inputs = MixedLinearRegressor._prediction_inputs
    _fixed_input_names = MixedLinearRegressor._fixed_input_names
    _predict_arrays = MixedLinearRegressor._predict_arrays
    _fit_group_columns = MixedLinearRegressor._fit_group_columns
    _require_training_data = MixedLinearRegressor._require_training_data

    def __getstate__(self):
        """Pickle without the training data (as :class:`MixedLinearRegressor`)."""
        state = dict(super().__getstate__())
        state.pop("_training_data", None)
        return state

    def _fit(self, X, y, groups, sample_weight, offset, family):
        """Validate, fit with :func:`fit_glmm`, set the fitted attributes.  ``y`` is already numeric."""
        n = X.shape[0]
        weights = as_sample_weight(sample_weight, n)
        offset = _as_offset(offset, n)
        frame = None if groups is None else as_groups_frame(groups, n)
        specs = self._term_specs(frame)
        names = self._slope_names(X.shape[1])
        self._check_slopes_without_column_names(specs, names)
        data = GlmmData(X, y, frame, weights, offset, specs, names, self.fit_intercept)
        return self._fit_data(data, family)

    def _fit_data(self, data: GlmmData, family):
        """Fit validated data with :func:`fit_glmm` and set the fitted attributes."""
        frame = data.groups
        fit = fit_glmm(data, family, nagq=self.nagq, max_evaluations=self.max_iter)
        self._training_data = data
        self._fit_result = fit
        self.family_ = family.name
        self.link_ = family.link.name
        start = 1 if data.fit_intercept else 0
        self.intercept_ = float(fit.beta[0]) if data.fit_intercept else 0.0
        self.coef_ = fit.beta[start:].copy()
        self.theta_ = fit.theta.copy()
        self.sigma_ = 1.0  # no scale parameter for binomial and Poisson: lme4's sigma() is 1
        self.objective_ = float(fit.objective)
        self.log_likelihood_ = float(fit.log_likelihood)
        self.aic_ = float(fit.aic)
        self.bic_ = float(fit.bic)
        self.deviance_ = float(fit.deviance)
        self.n_iter_ = int(fit.n_evaluations)
        self.converged_ = bool(fit.converged)
        self.singular_ = bool(fit.singular)
        self.random_effects_ = _results.random_effects_frames(fit)
        self.variance_components_ = _results.variance_components_frame(fit)
        self.fixed_effects_ = _results.fixed_effects_z_frame(fit)
        self.fixed_effects_cov_ = _results.fixed_effects_cov_frame(fit)
        self.group_names_ = sorted({name for term in fit.terms for name in term.factors}, key=list(frame.columns).index) if frame is not None else []
        self.n_obs_ = int(fit.n_obs)
        self._fitted_terms = fit.terms
        return self

    def _validated_X_y(self, X, y, groups):
        X = _zero_columns_as_array(X)
        check_numeric(X, None)
        X_in = X
        X, y = validate_data(
            self, X, y, dtype=np.float64, ensure_min_samples=2,
            ensure_min_features=0 if groups is not None else 1,
        )
        self._training_fingerprint = fingerprint(X) if shares_memory(X, X_in) else None
        return X, y

    def _linear_predictor(self, X, groups=None, offset=None) -> np.ndarray:
        """eta = offset + X beta (+ Z b for levels seen in fit); a formula's offset() included."""
        X, source, frame, formula_offset = self._prediction_inputs(X, groups)
        eta = self._predict_arrays(X, source, frame, formula_offset)
        offset = _as_offset(offset, len(eta))
        return eta if offset is None else eta + offset

    def _fit_any(self, X, y, groups, sample_weight, offset, family, numeric_y):
        """fit(): the formula path (X a DataFrame holding the formula's columns) or the X path."""
        if self.formula is None:
            X, y = self._validated_X_y(X, y, groups)
            self._design = None
            self._formula_text = None
            return self._fit(X, numeric_y(y), groups, sample_weight, offset, family)
        return self._fit_formula(X, y, groups, sample_weight, offset, family, numeric_y)

    def _fit_formula(self, X, y, groups, sample_weight, offset, family, numeric_y, *, formula_text=None, trials=None, weights_label=None):
        """fit() for a formula model, as :meth:`MixedLinearRegressor._fit_formula`."""
        import pandas as pd

        from .._model.formula import FormulaDesign

        if self.random_effects is not None:
            raise ValueError(
                f"formula={self.formula!r} and random_effects={self.random_effects!r} were both given; "
                "they exclude each other: put the random part in the formula"
            )
        if groups is not None:
            raise ValueError(
                "groups was passed to fit, but a formula model takes its grouping factors from the "
                "columns of X that the formula names; pass groups=None and keep those columns in X"
            )
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"X must be a pandas DataFrame holding the columns that formula={self.formula!r} names, got {type(X).__name__}")
        design = FormulaDesign.from_data(self.formula, X, one_sided=True)
        encoded = design.encode(X, "X" if formula_text is None else "data")
        n = len(encoded.X)
        if y is None:
            raise ValueError("y is required: the response, one value per row of X")
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != n:
            raise ValueError(f"y must be 1-D with one value per row of X ({n}), got shape {np.shape(y)}")
        y = numeric_y(y)
        if not np.all(np.isfinite(y)):
            raise ValueError("y has NaN or infinite values")
        weights = as_sample_weight(sample_weight, n)
        frame = None if encoded.groups is None else as_groups_frame(encoded.groups, n, argument="the grouping columns")
        offset = _as_offset(offset, n)
        if encoded.offset is not None:
            offset = encoded.offset if offset is None else offset + encoded.offset
        self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
        self.n_features_in_ = X.shape[1]
        self._design = design
        self._formula_text = formula_text
        self._weights_label = weights_label  # glmer(weights="w"): the summary's Weights line
        self._training_fingerprint = None
        names = design.fixed_columns_without_intercept()
        data = GlmmData(encoded.X, y, frame, weights, offset, design.specs, names, design.has_intercept, slopes=encoded.slopes, trials=trials)
        return self._fit_data(data, family)

    def _mean(self, eta: np.ndarray) -> np.ndarray:
        return make_family(self.family_, self.link_).link.linkinv(eta)

    # -- inference and reporting ------------------------------------------------------

    def summary(self):
        """The model's summary, as lme4's ``summary(glmer)``.

        Returns
        -------
        ModelSummary
            ``str()`` reads as lme4's printed summary (family and link,
            AIC/BIC/logLik/deviance, random effects, the z table).
        """
        from .._report.summary import summarize_glmm

        check_is_fitted(self)
        return summarize_glmm(self)

    def confint(self, method="wald", level=0.95, parm=None, *, n_boot=500, random_state=None, n_jobs=None):
        """Confidence intervals for the random-effect standard deviations and the fixed effects (lme4's ``confint``).

        Parameters
        ----------
        method : {"wald", "profile", "bootstrap"}, default="wald"
            ``"wald"``: estimate -/+ z standard error, fixed effects only
            (the variance parameters' rows are NaN, as lme4's).
            ``"profile"``: profile likelihood, as lme4's ``confint(method =
            "profile")`` of a glmer fit: the Laplace (or quadrature)
            deviance minimised over every other parameter, fixed effects
            included; not for ``nagq=0`` fits.  ``"bootstrap"`` (or
            ``"boot"``): percentile intervals of a parametric bootstrap
            (lme4's ``bootMer``): responses drawn from the fitted model, each
            refitted.  The default stays Wald (lme4's is the profile).
        level : float, default=0.95
        parm : None, str or list of str
            ``None`` for all, ``"theta_"`` for the variance parameters,
            ``"beta_"`` for the fixed effects, or parameter names.
        n_boot : int, default=500
            Bootstrap replicates.
        random_state : int, SeedSequence, Generator or None
            Bootstrap seed; the result is the same for any ``n_jobs``.
        n_jobs : int or None
            Parallel workers (joblib) for the bootstrap and the profiles.

        Returns
        -------
        DataFrame
            ``lower`` and ``upper`` per parameter, indexed by lme4's
            ``oldNames = FALSE`` names (``sd_(Intercept)|herd``, then the
            fixed effects); no ``sigma`` row for binomial and Poisson.

        Examples
        --------
        >>> import sklmm
        >>> from sklmm.datasets import load_cbpp
        >>> herds = load_cbpp()
        >>> model = sklmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", herds, family="binomial")
        >>> model.confint("profile").round(3)  # lme4: 0.346 1.100 / -1.901 -0.948 / -1.617 -0.408 / ...
                             lower  upper
        sd_(Intercept)|herd  0.346  1.100
        (Intercept)         -1.901 -0.948
        period2             -1.617 -0.408
        period3             -1.801 -0.512
        period4             -2.501 -0.801
        """
        from .._inference.confint import confint

        check_is_fitted(self)
        return confint(self, method=method, level=level, parm=parm, n_boot=n_boot, random_state=random_state, n_jobs=n_jobs)

    def simulate(self, n_sim=1, random_state=None):
        """Responses drawn from the fitted model (lme4's ``simulate``): new random effects, then the family.

        Parameters
        ----------
        n_sim : int, default=1
        random_state : int, SeedSequence, Generator or None

        Returns
        -------
        ndarray of shape (n_samples, n_sim)
            Binomial: proportions of the rows' trials (0/1 for labels);
            Poisson: counts.  NaN for rows with weight 0.
        """
        from .._inference.simulate import simulate_glmm

        data = self._require_training_data("simulate")
        return simulate_glmm(self, data, int(n_sim), random_state)

    @property
    def random_effects_cov_(self):
        """Conditional covariances of the random effects per level (lme4's ``condVar``).

        dict of str to ndarray of shape (n_levels, p, p), as
        ``random_effects_``: ``Lambda (Lambda' Z' W Z Lambda + I)^-1 Lambda'``
        at the modes' working weights.
        """
        check_is_fitted(self)
        out = {}
        for term, cov in zip(self._fitted_terms, self._fit_result.conditional_covariances):
            if term.factor_name in out:  # (1 + x || g): merge the blocks of one factor
                prev = out[term.factor_name]
                m, a, b = prev.shape[0], prev.shape[1], cov.shape[1]
                merged = np.zeros((m, a + b, a + b))
                merged[:, :a, :a] = prev
                merged[:, a:, a:] = cov
                out[term.factor_name] = merged
            else:
                out[term.factor_name] = cov
        return out


_COMMON_CONSTRAINTS = {
    "random_effects": [str, None],
    "formula": [str, None],
    "fit_intercept": ["boolean"],
    "nagq": [Interval(Integral, 0, 25, closed="both")],
    "max_iter": [Interval(Integral, 1, None, closed="left")],
}


class MixedLogisticRegression(ClassifierMixin, _MixedGLMBase):
    """Logistic (binomial) mixed-effects classifier, fitted as lme4's ``glmer(family = binomial)``.

    The model is ``P(y = classes_[1] | b) = linkinv(offset + X beta + Z b)``
    with random effects ``b ~ N(0, Lambda Lambda')``.  theta and beta
    maximise the Laplace approximation to the likelihood (``nagq=1``) or its
    adaptive Gauss-Hermite quadrature (``nagq > 1``); the random effects are
    the conditional modes.

    Parameters
    ----------
    random_effects : str or None, default=None
        The random part in lme4's bar syntax, as :class:`MixedLinearRegressor`'s
        (``"(1 | g)"``, ``"(1 + x | g)"``, ...); ``None``: a random intercept
        for every column of ``groups``.
    link : {"logit", "probit", "cloglog"}, default="logit"
    nagq : int, default=1
        1: Laplace approximation; > 1: adaptive Gauss-Hermite quadrature with
        that many nodes (one scalar random-effects term only); 0: lme4's
        ``nAGQ = 0`` (beta from PIRLS, not optimised with theta).
    fit_intercept : bool, default=True
    max_iter : int, default=10000
        Maximum objective evaluations per optimisation stage.
    formula : str or None, default=None
        The model as a one-sided lme4 formula, ``"~ age + urban + (1 | district)"``
        (factors, interactions, transforms and ``offset(x)`` as
        :func:`sklmm.lmer` reads them); X is then a DataFrame holding every
        column it names, grouping factors included, and ``groups`` is not
        passed.  Excludes ``random_effects``.

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
    coef_, intercept_ : fixed effects (log-odds scale for the logit link)
    random_effects_ : dict of str to DataFrame
        Conditional modes per grouping factor.
    variance_components_ : DataFrame
        lme4's ``as.data.frame(VarCorr(fit))``, without a residual row.
    theta_ : ndarray
    objective_ : float
        lme4's ``-2 * logLik`` at the Laplace / quadrature approximation.
    log_likelihood_, aic_, bic_, deviance_ : float
    fixed_effects_ : DataFrame
        ``estimate``, ``std_error``, ``z_value``, ``p_value``.
    fixed_effects_cov_ : DataFrame
    n_iter_ : int
    converged_, singular_ : bool

    Examples
    --------
    >>> import numpy as np
    >>> from sklmm import MixedLogisticRegression
    >>> rng = np.random.default_rng(0)
    >>> g = np.repeat(np.arange(30), 20)
    >>> x = rng.normal(size=(600, 1))
    >>> eta = -0.5 + 1.0 * x[:, 0] + rng.normal(scale=0.8, size=30)[g]
    >>> y = rng.random(600) < 1 / (1 + np.exp(-eta))
    >>> model = MixedLogisticRegression("(1 | group)").fit(x, y, groups=g)
    >>> model.classes_.tolist(), model.predict_proba(x[:2], groups=g[:2]).shape
    ([False, True], (2, 2))
    """

    _parameter_constraints: dict = {**_COMMON_CONSTRAINTS, "link": [StrOptions({"logit", "probit", "cloglog"})]}

    def __init__(self, random_effects=None, link="logit", nagq=1, fit_intercept=True, max_iter=10_000, formula=None):
        self.random_effects = random_effects
        self.formula = formula
        self.link = link
        self.nagq = nagq
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def fit(self, X, y, groups=None, sample_weight=None, offset=None):
        """Fit the model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Two-class labels; ``classes_[1]`` is the event modelled.
        groups : array-like, Series or DataFrame, default=None
            Grouping factors (as :meth:`MixedLinearRegressor.fit`); ``None``
            fits the plain logistic regression (a GLM).
        sample_weight : array-like of shape (n_samples,), default=None
            Prior weights (lme4's ``weights=``): row i counts ``w_i`` times.
        offset : array-like of shape (n_samples,), default=None
            Added to the linear predictor (log-odds scale).

        Returns
        -------
        self

        Examples
        --------
        >>> import numpy as np
        >>> from sklmm import MixedLogisticRegression
        >>> g = np.repeat(np.arange(6), 10)
        >>> x = np.tile(np.linspace(-2, 2, 10), 6).reshape(-1, 1)
        >>> y = (x[:, 0] + np.repeat([-1, 0, 1, -1, 0, 1], 10) * 0.8 + np.tile([0.9, -0.9], 30)) > 0
        >>> model = MixedLogisticRegression("(1 | group)").fit(x, y, groups=g)
        >>> model.classes_.tolist()
        [False, True]
        """
        self._validate_params()
        return self._fit_any(X, y, groups, sample_weight, offset, make_family("binomial", self.link), self._class_codes)

    def _class_codes(self, y):
        """0/1 codes of the two classes (``classes_[1]`` the event), setting ``classes_``."""
        check_classification_targets(y)
        y_type = type_of_target(y, input_name="y", raise_unknown=True)
        if y_type not in ("binary", "unknown") and len(np.unique(y)) > 2:
            raise ValueError(
                f"Only binary classification is supported. The type of the target is {y_type}: "
                f"MixedLogisticRegression needs two classes, got {len(np.unique(y))}"
            )
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) != 2:
            raise ValueError(
                f"MixedLogisticRegression needs two classes in y, got {len(self.classes_)} class: "
                f"{self.classes_.tolist()}"
            )
        return codes.astype(np.float64)

    def decision_function(self, X, groups=None, offset=None):
        """The linear predictor (log-odds for the logit link), conditional on the levels seen in fit.

        Returns
        -------
        ndarray of shape (n_samples,)

        Examples
        --------
        >>> import numpy as np
        >>> from sklmm import MixedLogisticRegression
        >>> g = np.repeat(np.arange(6), 10)
        >>> x = np.tile(np.linspace(-2, 2, 10), 6).reshape(-1, 1)
        >>> y = (x[:, 0] + np.repeat([-1, 0, 1, -1, 0, 1], 10) * 0.8 + np.tile([0.9, -0.9], 30)) > 0
        >>> model = MixedLogisticRegression("(1 | group)").fit(x, y, groups=g)
        >>> model.decision_function(x[:2], groups=g[:2]).round(0).tolist()
        [-6.0, -5.0]
        """
        check_is_fitted(self)
        return self._linear_predictor(X, groups, offset)

    def predict_proba(self, X, groups=None, offset=None):
        """Class probabilities ``[P(classes_[0]), P(classes_[1])]``.

        Returns
        -------
        ndarray of shape (n_samples, 2)

        Examples
        --------
        >>> import numpy as np
        >>> from sklmm import MixedLogisticRegression
        >>> g = np.repeat(np.arange(6), 10)
        >>> x = np.tile(np.linspace(-2, 2, 10), 6).reshape(-1, 1)
        >>> y = (x[:, 0] + np.repeat([-1, 0, 1, -1, 0, 1], 10) * 0.8 + np.tile([0.9, -0.9], 30)) > 0
        >>> model = MixedLogisticRegression("(1 | group)").fit(x, y, groups=g)
        >>> model.predict_proba(x[:2], groups=g[:2]).round(2).tolist()
        [[1.0, 0.0], [0.99, 0.01]]
        """
        p = self._mean(self.decision_function(X, groups, offset))
        return np.column_stack([1.0 - p, p])

    def predict_log_proba(self, X, groups=None, offset=None):
        """Logarithm of :meth:`predict_proba`.

        Examples
        --------
        >>> import numpy as np
        >>> from sklmm import MixedLogisticRegression
        >>> g = np.repeat(np.arange(6), 10)
        >>> x = np.tile(np.linspace(-2, 2, 10), 6).reshape(-1, 1)
        >>> y = (x[:, 0] + np.repeat([-1, 0, 1, -1, 0, 1], 10) * 0.8 + np.tile([0.9, -0.9], 30)) > 0
        >>> model = MixedLogisticRegression("(1 | group)").fit(x, y, groups=g)
        >>> model.predict_log_proba(x[:1], groups=g[:1]).round(0).tolist()
        [[-0.0, -6.0]]
        """
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X, groups, offset))

    def predict(self, X, groups=None, offset=None):
        """The more probable class per row.

        Returns
        -------
        ndarray of shape (n_samples,)

        Examples
        --------
        >>> import numpy as np
        >>> from sklmm import MixedLogisticRegression
        >>> g = np.repeat(np.arange(6), 10)
        >>> x = np.tile(np.linspace(-2, 2, 10), 6).reshape(-1, 1)
        >>> y = (x[:, 0] + np.repeat([-1, 0, 1, -1, 0, 1], 10) * 0.8 + np.tile([0.9, -0.9], 30)) > 0
        >>> model = MixedLogisticRegression("(1 | group)").fit(x, y, groups=g)
        >>> model.predict(x[:3]).tolist()
        [False, False, False]
        """
        p = self.predict_proba(X, groups, offset)[:, 1]
        return self.classes_[(p > 0.5).astype(np.intp)]

    def score(self, X, y, sample_weight=None, groups=None, offset=None):
        """Accuracy of :meth:`predict` (conditional on ``groups`` when given).

        Examples
        --------
        >>> import numpy as np
        >>> from sklmm import MixedLogisticRegression
        >>> g = np.repeat(np.arange(6), 10)
        >>> x = np.tile(np.linspace(-2, 2, 10), 6).reshape(-1, 1)
        >>> y = (x[:, 0] + np.repeat([-1, 0, 1, -1, 0, 1], 10) * 0.8 + np.tile([0.9, -0.9], 30)) > 0
        >>> model = MixedLogisticRegression("(1 | group)").fit(x, y, groups=g)
        >>> 0.5 < model.score(x, y, groups=g) <= 1.0
        True
        """
        from sklearn.metrics import accuracy_score

        return accuracy_score(y, self.predict(X, groups=groups, offset=offset), sample_weight=sample_weight)


class MixedGLMRegressor(RegressorMixin, _MixedGLMBase):
    """Generalised linear mixed model for proportions or counts, fitted as lme4's ``glmer``.

    Parameters
    ----------
    family : {"binomial", "poisson"}, default="binomial"
        Binomial: ``y`` a proportion in [0, 1] and ``sample_weight`` the
        number of trials (lme4's ``weights=``).  Poisson: ``y`` a count.
    link : str or None, default=None
        The family's canonical link when None (logit, log); binomial also
        takes ``"probit"``, ``"cloglog"``, ``"log"``; Poisson ``"sqrt"``,
        ``"identity"``.
    random_effects, nagq, fit_intercept, max_iter, formula
        As :class:`MixedLogisticRegression`.

    Attributes
    ----------
    Those of :class:`MixedLogisticRegression`, except ``classes_``.

    Examples
    --------
    >>> from sklmm import MixedGLMRegressor
    >>> from sklmm.datasets import load_cbpp
    >>> df = load_cbpp()
    >>> X = df[["period2", "period3", "period4"]]
    >>> model = MixedGLMRegressor(family="binomial", random_effects="(1 | herd)")
    >>> model = model.fit(X, df["incidence"] / df["size"], groups=df["herd"], sample_weight=df["size"])
    >>> round(model.objective_, 3)  # lme4's -2 logLik: 184.053
    184.053
    """

    _parameter_constraints: dict = {
        **_COMMON_CONSTRAINTS,
        "family": [StrOptions(set(FAMILY_LINKS))],
        "link": [str, None],
    }

    def __init__(self, family="binomial", link=None, random_effects=None, nagq=1, fit_intercept=True, max_iter=10_000, formula=None):
        self.family = family
        self.link = link
        self.random_effects = random_effects
        self.formula = formula
        self.nagq = nagq
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = True
        return tags

    def fit(self, X, y, groups=None, sample_weight=None, offset=None):
        """Fit the model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Binomial: proportions; Poisson: non-negative counts.
        groups : array-like, Series or DataFrame, default=None
            ``None`` fits the plain GLM.
        sample_weight : array-like of shape (n_samples,), default=None
            Prior weights; for the binomial family the numbers of trials.
        offset : array-like of shape (n_samples,), default=None
            Added to the linear predictor (e.g. log exposure for counts).

        Returns
        -------
        self

        Examples
        --------
        >>> from sklmm import MixedGLMRegressor
        >>> from sklmm.datasets import load_cbpp
        >>> X, y, groups = load_cbpp(return_X_y_groups=True)
        >>> size = load_cbpp()["size"]
        >>> model = MixedGLMRegressor(random_effects="(1 | herd)").fit(X, y, groups=groups, sample_weight=size)
        >>> round(model.objective_, 3)  # lme4: 184.053
        184.053
        """
        self._validate_params()
        family = make_family(self.family, self.link)
        if self.formula is None:
            check_numeric(None if X is None else _zero_columns_as_array(X), y)
        return self._fit_any(X, y, groups, sample_weight, offset, family, _numeric_response)

    def predict(self, X, groups=None, offset=None):
        """The mean response (proportion or rate), conditional on the levels seen in fit.

        Returns
        -------
        ndarray of shape (n_samples,)

        Examples
        --------
        >>> from sklmm import MixedGLMRegressor
        >>> from sklmm.datasets import load_cbpp
        >>> X, y, groups = load_cbpp(return_X_y_groups=True)
        >>> size = load_cbpp()["size"]
        >>> model = MixedGLMRegressor(random_effects="(1 | herd)").fit(X, y, groups=groups, sample_weight=size)
        >>> model.predict(X.head(2), groups=groups.head(2)).round(3).tolist()  # lme4: 0.308 0.142
        [0.308, 0.142]
        """
        check_is_fitted(self)
        return self._mean(self._linear_predictor(X, groups, offset))

    def predict_linear(self, X, groups=None, offset=None):
        """The linear predictor eta (lme4's ``predict(type = "link")``).

        Examples
        --------
        >>> from sklmm import MixedGLMRegressor
        >>> from sklmm.datasets import load_cbpp
        >>> X, y, groups = load_cbpp(return_X_y_groups=True)
        >>> size = load_cbpp()["size"]
        >>> model = MixedGLMRegressor(random_effects="(1 | herd)").fit(X, y, groups=groups, sample_weight=size)
        >>> model.predict_linear(X.head(2)).round(3).tolist()  # log-odds, population level
        [-1.399, -2.391]
        """
        check_is_fitted(self)
        return self._linear_predictor(X, groups, offset)

    def score(self, X, y, sample_weight=None, groups=None, offset=None):
        """R^2 of :meth:`predict` (conditional on ``groups`` when given).

        Examples
        --------
        >>> from sklmm import MixedGLMRegressor
        >>> from sklmm.datasets import load_cbpp
        >>> X, y, groups = load_cbpp(return_X_y_groups=True)
        >>> size = load_cbpp()["size"]
        >>> model = MixedGLMRegressor(random_effects="(1 | herd)").fit(X, y, groups=groups, sample_weight=size)
        >>> round(model.score(X, y, groups=groups), 2)
        0.49
        """
        from sklearn.metrics import r2_score

        return r2_score(y, self.predict(X, groups=groups, offset=offset), sample_weight=sample_weight)


class MixedPoissonRegressor(MixedGLMRegressor):
    """Poisson mixed model for counts: :class:`MixedGLMRegressor` with ``family="poisson"``.

    Parameters
    ----------
    link : {"log", "sqrt", "identity"} or None, default=None
        None: the log link.
    random_effects, nagq, fit_intercept, max_iter, formula
        As :class:`MixedGLMRegressor`.

    Examples
    --------
    >>> import numpy as np
    >>> from sklmm import MixedPoissonRegressor
    >>> rng = np.random.default_rng(0)
    >>> g = np.repeat(np.arange(20), 15)
    >>> x = rng.normal(size=(300, 1))
    >>> y = rng.poisson(np.exp(0.5 + 0.3 * x[:, 0] + rng.normal(scale=0.5, size=20)[g]))
    >>> model = MixedPoissonRegressor(random_effects="(1 | group)").fit(x, y, groups=g)
    >>> model.variance_components_["group"].tolist()
    ['group']
    """

    _parameter_constraints: dict = {k: v for k, v in MixedGLMRegressor._parameter_constraints.items() if k != "family"}

    def __init__(self, link=None, random_effects=None, nagq=1, fit_intercept=True, max_iter=10_000, formula=None):
        self.link = link
        self.random_effects = random_effects
        self.formula = formula
        self.nagq = nagq
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter

    @property
    def family(self):
        """The family: always ``"poisson"`` (not a parameter of this class).

        Examples
        --------
        >>> from sklmm import MixedPoissonRegressor
        >>> MixedPoissonRegressor().family
        'poisson'
        """
        return "poisson"


def glmer(formula, data, *, family, link=None, weights=None, nagq=1, max_iter=10_000):
    """Fit a generalised linear mixed model from an lme4 formula, as lme4's ``glmer``.

    Parameters
    ----------
    formula : str
        A two-sided lme4 formula, ``"response ~ fixed + (random | group)"``,
        with ``offset(x)`` terms as lme4 (see :func:`sklmm.lmer` for the
        syntax).  Binomial responses: a proportion (with ``weights`` the
        numbers of trials), 0/1 numbers, booleans, a two-level factor
        (the first level, in sorted order, is failure, as R's factors), or
        counts ``cbind(successes, failures)`` (each an expression of the
        columns, ``cbind(incidence, size - incidence)``): the proportion of
        successes, with the totals times ``weights`` as prior weights, as
        lme4; a row with a total of 0 has weight 0.
    data : DataFrame
    family : {"binomial", "poisson"}
    link : str or None, default=None
        The canonical link when None.
    weights : str, array-like or None, default=None
        Prior weights (binomial: numbers of trials): a column of ``data`` or an array.
    nagq : int, default=1
        1: Laplace; > 1: adaptive Gauss-Hermite quadrature (one scalar term); 0: lme4's nAGQ = 0.
    max_iter : int, default=10000

    Returns
    -------
    MixedGLMRegressor
        Fitted, with ``formula`` the one-sided right-hand side; ``predict(newdata)``
        returns the mean response.

    Examples
    --------
    >>> import sklmm
    >>> from sklmm.datasets import load_cbpp
    >>> herds = load_cbpp()
    >>> herds["prop"] = herds["incidence"] / herds["size"]
    >>> model = sklmm.glmer("prop ~ period + (1 | herd)", herds, family="binomial", weights="size")
    >>> model.fixed_effects_.index.tolist()
    ['(Intercept)', 'period2', 'period3', 'period4']
    >>> round(model.objective_, 3)  # lme4: 184.053
    184.053
    >>> counts = sklmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", herds, family="binomial")
    >>> round(counts.objective_, 3)  # the same model
    184.053
    """
    import pandas as pd

    from .._model.formula import cbind_arguments, split_formula
    from .formula import _response, _weights

    parts = split_formula(formula)
    if parts.response is None:
        raise ValueError(f"glmer needs a two-sided formula 'response ~ terms', got {formula!r}")
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    rhs = formula.split("~", 1)[1].strip()
    estimator = MixedGLMRegressor(family=family, link=link, formula="~ " + rhs, nagq=nagq, max_iter=max_iter)
    estimator._validate_params()
    sample_weight = _weights(weights, data)
    counts = cbind_arguments(parts.response)
    trials = None
    if counts is None:
        response = _glmer_response(_response(parts.response, data), family)
    else:
        response, sample_weight, trials = _cbind_response(counts, parts.response, data, family, sample_weight)
    fam = make_family(family, link)
    return estimator._fit_formula(
        data, response, None, sample_weight, None, fam, _numeric_response, formula_text=formula.strip(), trials=trials,
        weights_label=weights if isinstance(weights, str) else None,
    )


def _cbind_response(counts: tuple[str, str], expression: str, data, family: str, weights):
    """lme4's reading of ``cbind(successes, failures)`` (R's ``binomial()$initialize``).

    The response is the proportion ``successes / (successes + failures)``
    (0 where the total is 0), the prior weights the totals times
    ``weights`` (the row of a zero total then has weight 0: it is left out
    of the fit, and counted in ``n_obs_`` as lme4's ``nobs``).  Returns
    (proportion, prior weights, trials): ``trials`` are the totals (the
    log-likelihood's binomial constant counts them when ``weights`` scale
    the prior weights; the summary prints no weights line unless
    ``weights`` was given, as lme4).
    """
    from .formula import _response

    if family != "binomial":
        raise ValueError(
            f"a cbind(successes, failures) response ({expression}) needs family='binomial', got "
            f"family={family!r}; for counts with family='poisson' write the count column alone"
        )
    columns = []
    for argument in counts:
        values = np.asarray(_response(argument, data))
        if values.dtype.kind not in "biuf":
            raise TypeError(f"{expression}: {argument!r} must be numeric counts, got dtype {values.dtype}")
        values = values.astype(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(f"{expression}: {argument!r} has {int(bad.sum())} NaN or infinite value(s) (first at row {int(np.flatnonzero(bad)[0])})")
        negative = values < 0
        if negative.any():
            i = int(np.flatnonzero(negative)[0])
            raise ValueError(
                f"{expression}: {argument!r} has {int(negative.sum())} negative count(s) (first at row {i}: "
                f"{values[i]:g}); successes and failures must be >= 0"
            )
        columns.append(values)
    successes, failures = columns
    fractional = (successes != np.round(successes)) | (failures != np.round(failures))
    if fractional.any():
        _warnings.warn_non_integer_counts(expression, int(fractional.sum()), int(np.flatnonzero(fractional)[0]))
    totals = successes + failures
    if not np.any(totals > 0):
        raise ValueError(f"{expression}: every row has zero trials (successes + failures = 0)")
    proportion = np.where(totals > 0, successes / np.where(totals > 0, totals, 1.0), 0.0)
    if weights is None:
        return proportion, totals, totals
    given = as_sample_weight(weights, len(totals))
    return proportion, totals * given, totals


def _glmer_response(values, family: str) -> np.ndarray:
    """A factor, string or boolean binomial response as R's glm reads it: first level 0, the others 1."""
    values = np.asarray(values)
    if family == "binomial" and values.dtype.kind not in "iuf":
        levels = np.unique(values.astype(str)) if values.dtype.kind != "b" else np.array([False, True])
        if values.dtype.kind == "b":
            return values.astype(np.float64)
        return (values.astype(str) != levels[0]).astype(np.float64)
    return values
