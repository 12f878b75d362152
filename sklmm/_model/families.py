"""Families and links of generalised linear mixed models, as R's ``binomial()`` and ``poisson()``.

Each link holds R's ``linkfun``, ``linkinv`` and ``mu.eta`` (d mu / d eta),
including R's clamps that keep mu inside the family's range; each family
holds ``variance``, the deviance residuals ``dev.resids`` and the
saturated log-likelihood constant that turns the deviance into lme4's
``-2 log-likelihood`` (R's ``family$aic``)::

    -2 log p(y | mu) = sum dev_resid(y, mu, w) + saturated(y, w)

Binomial responses are proportions ``y`` with prior weights ``w`` the
number of trials (0/1 labels with ``w = 1``), as R reads ``weights=``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.special import expit, gammaln, ndtr, xlogy
from scipy.stats import norm

_EPS = np.finfo(float).eps
#: R's logit clamps (``THRESH``, ``MTHRESH`` in family.c).
_LOGIT_THRESH = 30.0
#: R's probit clamp: -qnorm(DBL_EPSILON).
_PROBIT_THRESH = -norm.ppf(_EPS)


@dataclass(frozen=True)
class Link:
    """A link function: ``eta = linkfun(mu)``, ``mu = linkinv(eta)``, ``mu_eta = d mu / d eta``."""

    name: str
    linkfun: Callable[[np.ndarray], np.ndarray]
    linkinv: Callable[[np.ndarray], np.ndarray]
    mu_eta: Callable[[np.ndarray], np.ndarray]
    #: d^2 mu / d eta^2 (without R's clamps): PIRLS's Newton weights for non-canonical links.
    mu_eta_derivative: Callable[[np.ndarray], np.ndarray] | None = None


def _logit_inv(eta):
    return np.clip(expit(eta), _EPS / (1.0 + _EPS), 1.0 / (1.0 + _EPS))


def _logit_mu_eta(eta):
    mu = expit(eta)
    out = mu * (1.0 - mu)
    return np.where(np.abs(eta) > _LOGIT_THRESH, _EPS, out)


def _cloglog_inv(eta):
    return np.clip(-np.expm1(-np.exp(eta)), _EPS, 1.0 - _EPS)


def _cloglog_mu_eta(eta):
    eta = np.minimum(eta, 700.0)
    return np.maximum(np.exp(eta - np.exp(eta)), _EPS)


def _logit_mu_eta_derivative(eta):
    mu = expit(eta)
    return mu * (1.0 - mu) * (1.0 - 2.0 * mu)


def _cloglog_mu_eta_derivative(eta):
    eta = np.minimum(eta, 700.0)
    return np.exp(eta - np.exp(eta)) * -np.expm1(eta)


_SQRT_2PI = np.sqrt(2.0 * np.pi)

LINKS = {
    "logit": Link("logit", lambda mu: np.log(mu / (1.0 - mu)), _logit_inv, _logit_mu_eta, _logit_mu_eta_derivative),
    "probit": Link(
        "probit",
        norm.ppf,
        lambda eta: ndtr(np.clip(eta, -_PROBIT_THRESH, _PROBIT_THRESH)),
        lambda eta: np.maximum(np.exp(-0.5 * eta * eta) / _SQRT_2PI, _EPS),  # norm.pdf, without its overhead
        lambda eta: -eta * np.exp(-0.5 * eta * eta) / _SQRT_2PI,
    ),
    "cloglog": Link("cloglog", lambda mu: np.log(-np.log1p(-mu)), _cloglog_inv, _cloglog_mu_eta, _cloglog_mu_eta_derivative),
    "log": Link("log", np.log, lambda eta: np.maximum(np.exp(eta), _EPS), lambda eta: np.maximum(np.exp(eta), _EPS), np.exp),
    "sqrt": Link("sqrt", np.sqrt, lambda eta: eta * eta, lambda eta: 2.0 * eta, lambda eta: np.full_like(eta, 2.0)),
    "identity": Link("identity", lambda mu: mu, lambda eta: eta, np.ones_like, np.zeros_like),
}


@dataclass(frozen=True)
class Family:
    """A response distribution with its link (R's ``family`` object).

    Attributes
    ----------
    name : str
        ``"binomial"`` or ``"poisson"``.
    link : Link
    """

    name: str
    link: Link

    def __reduce__(self):
        # Links hold functions (some lambdas): pickle by name.
        return (make_family, (self.name, self.link.name))

    def variance(self, mu: np.ndarray) -> np.ndarray:
        """R's ``family$variance``."""
        if self.name == "binomial":
            return mu * (1.0 - mu)
        return mu

    @property
    def canonical(self) -> bool:
        """Whether the link is the family's canonical one (Fisher scoring is then Newton's method)."""
        return self.link.name == FAMILY_LINKS[self.name][0]

    def observed_weights(self, y: np.ndarray, mu: np.ndarray, eta: np.ndarray, mu_eta: np.ndarray, w: np.ndarray, pw: np.ndarray) -> np.ndarray:
        """Newton's weights ``-d^2 log p(y | eta) / d eta^2`` per row, from Fisher's ``w``.

        ``w - pw (y - mu) d/d eta (mu_eta / V(mu))`` with ``V`` the variance
        function; equal to ``w`` for the canonical link.  They may be
        negative (far from the mode), where the caller uses ``w``.
        """
        V = self.variance(mu)
        dV = 1.0 - 2.0 * mu if self.name == "binomial" else 1.0
        derivative = self.link.mu_eta_derivative(eta) / V - mu_eta * mu_eta * dV / (V * V)
        return w - pw * (y - mu) * derivative

    def dev_resid(self, y: np.ndarray, mu: np.ndarray, w: np.ndarray) -> np.ndarray:
        """R's ``family$dev.resids``: each row's contribution to the deviance."""
        if self.name == "binomial":
            return 2.0 * w * (xlogy(y, y) - xlogy(y, mu) + xlogy(1.0 - y, 1.0 - y) - xlogy(1.0 - y, 1.0 - mu))
        return 2.0 * w * (xlogy(y, y) - xlogy(y, mu) - (y - mu))

    def dev_resid_function(self, y: np.ndarray, w: np.ndarray):
        """``mu -> dev_resid(y, mu, w)`` for a fixed response, its mu-free part computed once.

        PIRLS evaluates the deviance at many mu for one y; this is the same
        function, with the ``y log y`` terms hoisted out.
        """
        if self.name == "binomial":
            if np.all((y == 0.0) | (y == 1.0)):  # labels: one logarithm per row
                two_w = 2.0 * w
                event = y == 1.0
                return lambda mu: -two_w * np.log(np.where(event, mu, 1.0 - mu))
            const = xlogy(y, y) + xlogy(1.0 - y, 1.0 - y)
            two_w = 2.0 * w
            one_minus_y = 1.0 - y
            return lambda mu: two_w * (const - xlogy(y, mu) - xlogy(one_minus_y, 1.0 - mu))
        const = xlogy(y, y) - y
        two_w = 2.0 * w
        return lambda mu: two_w * (const - xlogy(y, mu) + mu)

    def saturated(self, y: np.ndarray, w: np.ndarray, trials: np.ndarray | None = None) -> float:
        """``-2 log p(y | mu = y)``, the constant between the deviance and -2 log-likelihood.

        Binomial: ``-2 sum log dbinom(w y; w, y)`` (trials ``w``), as R's
        ``binomial()$aic`` with ``weights=`` the numbers of trials.  With a
        ``cbind(successes, failures)`` response, ``trials`` are the row totals
        and ``w`` the totals times the ``weights=`` given: R's ``aic`` then
        counts each row's binomial log-density ``w / trials`` times,
        ``-2 sum (w / m) log dbinom(m y; m, y)`` with ``m = trials`` (``m = w``
        when no total exceeds 1, as R's).
        Poisson: ``-2 sum w log dpois(y; y)``, as ``poisson()$aic``.
        """
        if self.name == "binomial":
            m = w if trials is None or not np.any(trials > 1) else trials
            with np.errstate(divide="ignore", invalid="ignore"):
                times = np.where(m > 0, w / np.where(m > 0, m, 1.0), 0.0)
            # R: dbinom(round(m y), round(m), y, log = TRUE), counts rounded as R rounds them
            m, k = np.round(m), np.round(m * y)
            log_choose = gammaln(m + 1.0) - gammaln(k + 1.0) - gammaln(m - k + 1.0)
            return float(-2.0 * np.sum(times * (log_choose + xlogy(k, y) + xlogy(m - k, 1.0 - y))))
        return float(-2.0 * np.sum(w * (xlogy(y, y) - y - gammaln(y + 1.0))))

    def initial_mu(self, y: np.ndarray, w: np.ndarray) -> np.ndarray:
        """The IRLS start, as R's ``mustart`` for one trial (``(y + 0.5) / 2``; Poisson ``y + 0.1``).

        R's binomial start ``(w y + 0.5) / (w + 1)`` depends on the weights;
        this one does not, so that a row of weight 2 and two copies of it
        take the same path (which matters only where the path decides the
        result: separated classes, whose estimates diverge).
        """
        if self.name == "binomial":
            return (y + 0.5) / 2.0
        return y + 0.1

    def check_response(self, y: np.ndarray, w: np.ndarray, argument: str = "y") -> None:
        """Refuse responses outside the family's support, naming the first offending row."""
        if self.name == "binomial":
            bad = (y < 0) | (y > 1)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"{argument} must be a proportion in [0, 1] for family='binomial' (with sample_weight "
                    f"the number of trials); row {i} is {y[i]!r}"
                )
        else:
            bad = y < 0
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"{argument} must be a non-negative count for family='poisson'; row {i} is {y[i]!r}")

    def simulate(self, mu: np.ndarray, w: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A response drawn at mean mu (binomial: a proportion of ``w`` trials)."""
        if self.name == "binomial":
            trials = np.round(w).astype(np.int64)
            return rng.binomial(trials, mu) / np.maximum(trials, 1)
        return rng.poisson(mu).astype(float)


#: Links lme4 (R's families) accept for each family; the first is canonical.
FAMILY_LINKS = {
    "binomial": ("logit", "probit", "cloglog", "log"),
    "poisson": ("log", "sqrt", "identity"),
}


def make_family(family: str, link: str | None = None) -> Family:
    """The family with its link (canonical when ``link`` is None).

    Raises
    ------
    ValueError
        For an unknown family or a link the family does not take.
    """
    if family not in FAMILY_LINKS:
        raise ValueError(f"family must be one of {sorted(FAMILY_LINKS)}, got {family!r}")
    allowed = FAMILY_LINKS[family]
    link = allowed[0] if link is None else link
    if link not in allowed:
        raise ValueError(f"link {link!r} is not available for family={family!r}; choose one of {list(allowed)}")
    return Family(family, LINKS[link])
