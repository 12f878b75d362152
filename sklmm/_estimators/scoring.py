"""Scoring with group-conditional predictions.

scikit-learn's scorers (``scoring="r2"``, :func:`sklearn.metrics.make_scorer`)
call ``estimator.predict(X)`` and never pass ``groups``, so a mixed model
scored by them is always scored on its population-level predictions.  The
scorer made here calls ``estimator.predict(X, groups=groups)`` instead: rows
whose levels were seen in fit get their random effects, new levels get the
population-level prediction.

Where the groups come from:

- with metadata routing enabled (``sklearn.set_config(enable_metadata_routing=True)``),
  the scorer requests ``groups`` for its ``score`` method, so
  ``cross_validate(..., params={"groups": groups})``,
  ``GridSearchCV(...).fit(X, y, groups=groups)`` and
  ``GridSearchCV.score(X, y, groups=groups)`` hand it each test fold's rows;
- called directly: ``scorer(estimator, X, y, groups=groups)``;
- without routing, scikit-learn gives scorers no metadata; a scorer made with
  ``make_conditional_scorer(groups=all_groups)`` then looks the rows up by the
  index labels of ``X`` (a DataFrame, whose rows cross-validation keeps
  labelled).
"""

from __future__ import annotations

from inspect import Parameter, signature

import pandas as pd
from sklearn.metrics import r2_score
from sklearn.utils.metadata_routing import MetadataRequest

__all__ = ["ConditionalScorer", "make_conditional_scorer"]

_NO_GROUPS = (
    "{scorer} got no groups, so it cannot make group-conditional predictions. "
    "Enable metadata routing with sklearn.set_config(enable_metadata_routing=True) "
    "and pass the groups as metadata: cross_validate(..., params={{'groups': groups}}), "
    "GridSearchCV(...).fit(X, y, groups=groups), search.score(X, y, groups=groups); "
    "or call scorer(estimator, X, y, groups=groups). Without routing, scikit-learn "
    "passes no groups to scorers: build the scorer with "
    "make_conditional_scorer(groups=all_groups) and give X as a DataFrame whose "
    "index labels select the rows of all_groups."
)


class ConditionalScorer:
    """Scorer ``scorer(estimator, X, y, groups=..., sample_weight=...)`` that
    predicts conditional on ``groups``.  Made by :func:`make_conditional_scorer`.

    The score is ``sign * score_func(y, estimator.predict(X, groups=groups), **kwargs)``.
    Under metadata routing it requests ``groups`` (always) and, when
    ``score_func`` takes one, leaves ``sample_weight`` unset as scikit-learn's
    scorers do: change either with :meth:`set_score_request`.
    """

    def __init__(self, score_func, sign: int, kwargs: dict, groups=None):
        self._score_func = score_func
        self._sign = sign
        self._kwargs = kwargs
        self._groups = groups
        self._requests: dict = {"groups": True}
        if self._accept_sample_weight():
            self._requests["sample_weight"] = None

    def __call__(self, estimator, X, y_true, *, groups=None, sample_weight=None):
        """Score ``estimator`` on ``X, y_true`` with predictions conditional on ``groups``.

        Parameters
        ----------
        estimator : fitted estimator
            One whose ``predict`` takes ``groups``: a
            :class:`~sklmm.MixedLinearRegressor`, a Pipeline ending in one,
            or a fitted search over either.
        X : array-like or DataFrame of shape (n_samples, n_features)
        y_true : array-like of shape (n_samples,)
        groups : array-like, Series or DataFrame, default=None
            Grouping factors of the rows of X.  ``None``: looked up by X's
            index in the ``groups`` given to :func:`make_conditional_scorer`,
            an error if there are none.
        sample_weight : array-like of shape (n_samples,), default=None
            Passed to the metric.

        Returns
        -------
        float
        """
        if groups is None and _is_formula_model(estimator):
            y_pred = estimator.predict(X)  # a formula model takes its grouping columns from X
        else:
            if groups is None:
                groups = self._groups_by_index(X)
            y_pred = _predict_with_groups(estimator, X, groups)
        kwargs = dict(self._kwargs)
        if sample_weight is not None:
            kwargs["sample_weight"] = sample_weight
        return self._sign * self._score_func(y_true, y_pred, **kwargs)

    def set_score_request(self, **requests):
        """Set which metadata the scorer requests under metadata routing.

        Parameters
        ----------
        **requests : bool, None or str
            ``groups=`` and, when the metric takes it, ``sample_weight=``:
            ``True`` (requested), ``False`` (ignored), ``None`` (an error if
            passed) or a string alias.

        Returns
        -------
        self
        """
        for name, alias in requests.items():
            if name not in self._requests:
                raise TypeError(f"{self!r}.set_score_request got an unexpected argument {name!r}; it accepts {sorted(self._requests)}")
            self._requests[name] = alias
        return self

    def get_metadata_routing(self) -> MetadataRequest:
        """The metadata this scorer requests (scikit-learn's routing protocol)."""
        request = MetadataRequest(owner=type(self).__name__)
        for name, alias in self._requests.items():
            request.score.add_request(param=name, alias=alias)
        return request

    def _accept_sample_weight(self) -> bool:
        # scikit-learn's search estimators ask this when routing is disabled.
        return "sample_weight" in signature(self._score_func).parameters

    def _groups_by_index(self, X):
        if self._groups is None:
            raise ValueError(_NO_GROUPS.format(scorer=repr(self)))
        if not isinstance(X, pd.DataFrame):
            raise ValueError(
                f"{self!r} got no groups for this call and can look them up in the groups "
                "it was made with only by the index labels of X, but X is not a DataFrame "
                f"(got {type(X).__name__}). Pass X as a DataFrame indexed like those groups, "
                "or enable metadata routing and pass groups as metadata."
            )
        missing = X.index.difference(self._groups.index)
        if len(missing):
            raise ValueError(
                f"{len(missing)} index label(s) of X are not in the index of the groups "
                f"given to make_conditional_scorer (first: {missing[0]!r}); X's index must "
                "select rows of those groups"
            )
        return self._groups.loc[X.index]

    def __repr__(self) -> str:
        name = getattr(self._score_func, "__name__", repr(self._score_func))
        sign = "" if self._sign > 0 else ", greater_is_better=False"
        kwargs = "".join(f", {k}={v!r}" for k, v in self._kwargs.items())
        return f"make_conditional_scorer({name}{sign}{kwargs})"

    def _routing_repr(self) -> str:
        return repr(self)


def _is_formula_model(estimator) -> bool:
    """A fitted formula model, bare or as a Pipeline's last step or a search's best estimator."""
    model = getattr(estimator, "best_estimator_", estimator)
    if hasattr(model, "steps"):
        model = model.steps[-1][1]
    return getattr(model, "formula", None) is not None


def _predict_with_groups(estimator, X, groups):
    """``estimator.predict(X, groups=groups)``; a fitted search predicts with its
    best estimator, since the search's own ``predict`` takes no metadata."""
    parameters = signature(estimator.predict).parameters
    if "groups" in parameters or any(p.kind is Parameter.VAR_KEYWORD for p in parameters.values()):
        return estimator.predict(X, groups=groups)
    if hasattr(estimator, "best_estimator_"):
        return _predict_with_groups(estimator.best_estimator_, X, groups)
    raise TypeError(
        f"{type(estimator).__name__}.predict does not take groups, so it cannot be scored "
        "conditionally; make_conditional_scorer needs a MixedLinearRegressor or a "
        "Pipeline ending in one"
    )


def make_conditional_scorer(score_func=r2_score, *, greater_is_better: bool = True, groups=None, **kwargs) -> ConditionalScorer:
    """Make a scorer that scores group-conditional predictions.

    scikit-learn's scorers call ``estimator.predict(X)`` without ``groups``
    and so score a mixed model's population-level predictions.  This scorer
    calls ``estimator.predict(X, groups=groups)``: rows of levels seen in fit
    get their random effects (the conditional prediction), rows of new levels
    the population-level one.  Use it as ``scoring=`` in ``cross_validate``,
    ``cross_val_score``, ``GridSearchCV`` or ``RandomizedSearchCV``, alone or
    in a dict of several scorers.

    Under metadata routing (``sklearn.set_config(enable_metadata_routing=True)``)
    the scorer requests ``groups``, so the groups passed as metadata
    (``params={"groups": groups}``, ``search.fit(X, y, groups=groups)``)
    reach it, restricted to each test fold's rows.  With a Pipeline, its last
    step must request groups for predict:
    ``MixedLinearRegressor(...).set_predict_request(groups=True)``.

    Parameters
    ----------
    score_func : callable, default=sklearn.metrics.r2_score
        Metric ``score_func(y_true, y_pred, **kwargs)``, as for
        :func:`sklearn.metrics.make_scorer`.
    greater_is_better : bool, default=True
        ``False`` for a loss (``mean_squared_error``, ...): the scorer then
        returns its negative, as scikit-learn's ``neg_*`` scorers do.
    groups : Series or DataFrame, default=None
        Grouping factors for all the data, used only when a call brings no
        groups (metadata routing disabled): the rows are picked by the index
        labels of ``X``, which must then be a DataFrame indexed like
        ``groups``.  ``None``: a call without groups raises an error that says
        how to pass them.
    **kwargs
        Further arguments of ``score_func``.

    Returns
    -------
    ConditionalScorer
        Callable ``scorer(estimator, X, y, groups=None, sample_weight=None)``.

    See Also
    --------
    sklearn.metrics.make_scorer : the population-level counterpart.

    Examples
    --------
    >>> from sklmm import MixedLinearRegressor, make_conditional_scorer
    >>> from sklmm.datasets import load_sleepstudy
    >>> X, y, groups = load_sleepstudy(return_X_y_groups=True)
    >>> model = MixedLinearRegressor("(1 + Days | Subject)").fit(X, y, groups=groups)
    >>> scorer = make_conditional_scorer()
    >>> round(scorer(model, X, y, groups=groups), 2)      # conditional R^2
    0.83
    >>> round(model.score(X, y), 2)                        # population-level R^2
    0.29
    """
    if isinstance(score_func, str) or not callable(score_func):
        raise TypeError(
            f"score_func must be a metric function such as sklearn.metrics.r2_score or "
            f"mean_absolute_error (with greater_is_better=False), got {score_func!r}"
        )
    if groups is not None:
        if not isinstance(groups, (pd.Series, pd.DataFrame)):
            raise TypeError(
                "groups must be a Series or DataFrame (its index labels are matched to "
                f"X's), got {type(groups).__name__}"
            )
        if not groups.index.is_unique:
            raise ValueError("groups has repeated index labels; rows are looked up by X's index, so labels must be unique")
    return ConditionalScorer(score_func, 1 if greater_is_better else -1, kwargs, groups)
