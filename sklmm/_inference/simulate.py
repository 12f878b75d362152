"""Draw responses from a fitted linear mixed model, as lme4's ``simulate``.

Each draw takes new random effects and new residuals (lme4's default,
``use.u = FALSE``)::

    y* = X beta + sum over terms Z_t b*_t + e*,
    b*_t (per level) ~ N(0, sigma^2 lambda_t lambda_t'),   e*_i ~ N(0, sigma^2 / w_i)

The parametric bootstrap (:mod:`sklmm._bootstrap`) refits the model to such
draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._model.terms import build_terms


def as_generator(random_state) -> np.random.Generator:
    """A numpy Generator from an int, None, SeedSequence, Generator or legacy RandomState."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1, size=4))
    return np.random.default_rng(random_state)


def as_seed_sequence(random_state) -> np.random.SeedSequence:
    """One SeedSequence from which independent per-task seeds are spawned."""
    if isinstance(random_state, np.random.SeedSequence):
        return random_state
    if isinstance(random_state, (np.random.Generator, np.random.RandomState)):
        entropy = as_generator(random_state).integers(0, 2**63 - 1, size=2)
        return np.random.SeedSequence([int(v) for v in entropy])
    return np.random.SeedSequence(random_state)


@dataclass
class SimulationModel:
    """What a draw needs, for every training row.

    Attributes
    ----------
    mean : ndarray of shape (n,)
        The fixed part, ``X beta``.
    terms : list of (refs, z, factor)
        Per random-effects term: level code of each row, the term's columns
        (n x p) and ``sigma * lambda_t`` (p x p), so that ``b = u factor'``
        with ``u`` standard normal has the term's covariance.
    n_levels : list of int
    residual_sd : ndarray of shape (n,)
        ``sigma / sqrt(w)``; ``nan`` for rows with weight 0 (left out of the
        fit, their residual variance is infinite).
    """

    mean: np.ndarray
    terms: list
    n_levels: list
    residual_sd: np.ndarray

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One simulated response vector."""
        y = self.mean.copy()
        for (refs, z, factor), m in zip(self.terms, self.n_levels):
            b = rng.standard_normal((m, factor.shape[0])) @ factor.T
            y += np.einsum("ij,ij->i", z, b[refs])
        y += self.residual_sd * rng.standard_normal(len(y))
        return y


def simulation_model(data, coef: np.ndarray, intercept: float, fitted_terms, sigma: float) -> SimulationModel:
    """The fitted model's distribution on its training rows.

    Parameters
    ----------
    data : sklmm._fit.TrainingData
    coef, intercept : the fixed effects (aliased columns have coefficient 0)
    fitted_terms : list of sklmm._fit.FittedTerm
    sigma : float
    """
    mean = data.X @ coef + intercept
    if data.offset is not None:
        mean = mean + data.offset
    terms, n_levels = [], []
    if data.specs and data.groups is not None:
        built = build_terms(data.specs, data.X, list(data.feature_names), data.groups, data.slopes)
        remaining = list(fitted_terms)
        for term in built:
            # match by factor and columns: the fit may have ordered terms
            # differently if rows with weight 0 carried levels of their own
            match = next(t for t in remaining if t.factor_name == term.factor_name and t.columns == term.columns)
            remaining.remove(match)
            terms.append((term.refs, term.z_values(), sigma * match.lam))
            n_levels.append(term.n_levels)
    if data.weights is None:
        residual_sd = np.full(len(mean), sigma)
    else:
        with np.errstate(divide="ignore"):
            residual_sd = np.where(data.weights > 0, sigma / np.sqrt(np.where(data.weights > 0, data.weights, 1.0)), np.nan)
    return SimulationModel(mean, terms, n_levels, residual_sd)


def simulate(model: SimulationModel, n_sim: int, random_state=None) -> np.ndarray:
    """``n_sim`` draws, one per column: an array of shape (n, n_sim).

    Examples
    --------
    >>> import numpy as np
    >>> model = SimulationModel(np.zeros(4), [], [], np.ones(4))
    >>> simulate(model, 3, random_state=0).shape
    (4, 3)
    """
    rng = as_generator(random_state)
    out = np.empty((len(model.mean), n_sim))
    for k in range(n_sim):
        out[:, k] = model.draw(rng)
    return out


@dataclass
class GlmmSimulationModel:
    """A fitted GLMM's distribution on its training rows (lme4's ``simulate`` of a glmer fit).

    Attributes
    ----------
    linear : SimulationModel
        The linear predictor's part: ``mean`` is ``offset + X beta`` and the
        terms' factors are ``lambda_t`` (sigma is 1).
    family : Family
    trials : ndarray of shape (n,)
        Binomial: the rows' numbers of trials (the prior weights, 1 for
        labels); Poisson: the prior weights (not used by the draw).
    """

    linear: SimulationModel
    family: object
    trials: np.ndarray

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One response: new random effects, then the family at ``mu = linkinv(eta)``; NaN where the weight is 0."""
        eta = self.linear.mean.copy()
        for (refs, z, factor), m in zip(self.linear.terms, self.linear.n_levels):
            b = rng.standard_normal((m, factor.shape[0])) @ factor.T
            eta += np.einsum("ij,ij->i", z, b[refs])
        y = self.family.simulate(self.family.link.linkinv(eta), self.trials, rng)
        y[self.trials == 0] = np.nan
        return y


def glmm_simulation_model(est, data) -> GlmmSimulationModel:
    """The :class:`GlmmSimulationModel` of a fitted GLMM estimator on its training data."""
    from .._model.families import make_family

    family = make_family(est.family_, est.link_)
    linear = simulation_model(data, est.coef_, est.intercept_, est._fitted_terms, 1.0)  # mean includes the offset
    trials = np.ones(len(linear.mean)) if data.weights is None else np.asarray(data.weights, dtype=float)
    return GlmmSimulationModel(linear, family, trials)


def simulate_glmm(est, data, n_sim: int, random_state=None) -> np.ndarray:
    """Draws from a fitted GLMM on its training rows, as lme4's ``simulate`` of a glmer fit.

    Each draw takes new random effects (``use.u = FALSE``), then the
    response from the family at ``mu = linkinv(offset + X beta + Z b*)``:
    binomial proportions of the row's trials (``sample_weight``, 1 for
    labels), Poisson counts.  Rows with weight 0 are NaN.
    """
    model = glmm_simulation_model(est, data)
    rng = as_generator(random_state)
    out = np.empty((len(model.trials), n_sim))
    for k in range(n_sim):
        out[:, k] = model.draw(rng)
    return out
