"""The GLMM engine against dense brute force: the Laplace objective and adaptive quadrature.

* Laplace: at several (theta, beta), PIRLS's objective equals
  ``-2 log p(y | u*) + ||u*||^2 + log det(Lambda' Z' W Z Lambda + I)`` computed
  densely, u* found by a generic optimiser and the log-likelihood by
  scipy.stats (binomial, Poisson pmf): to 1e-7.
* AGQ: with many nodes it converges to the exact marginal likelihood,
  ``-2 sum_l log integral prod_i p(y_i | u) phi(u) du``, integrated per level by
  scipy.integrate.quad: to 1e-6 at 25 nodes; nagq = 1 equals the Laplace value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, optimize, stats

from sklmm._engine.pirls import GlmmData, gauss_hermite_normal, prepare_glmm
from sklmm._model.bars import parse_random_effects
from sklmm._model.families import make_family


def _problem(family, link, random_effects, seed=0, n_groups=12, per=8, slope=False):
    rng = np.random.default_rng(seed)
    n = n_groups * per
    g = np.repeat(np.arange(n_groups), per)
    h = rng.integers(0, 5, size=n)
    x = rng.normal(size=(n, 2))
    eta = 0.2 + 0.5 * x[:, 0] - 0.3 * x[:, 1] + rng.normal(scale=0.7, size=n_groups)[g]
    if slope:
        eta += rng.normal(scale=0.4, size=n_groups)[g] * x[:, 0]
    offset = rng.normal(scale=0.1, size=n)
    if family == "binomial":
        trials = rng.integers(1, 6, size=n).astype(float)
        y = rng.binomial(trials.astype(int), 1 / (1 + np.exp(-eta))) / trials
        weights = trials
    else:
        y = rng.poisson(np.exp(eta)).astype(float)
        weights = None
    groups = pd.DataFrame({"g": g.astype(str), "h": h.astype(str)})
    data = GlmmData(x, y, groups, weights, offset, parse_random_effects(random_effects), ["x0", "x1"], True)
    return prepare_glmm(data, make_family(family, link)).problem


def _dense_z(problem):
    """Z (n x q) dense, columns term by term, level-major within a term."""
    blocks = []
    for term in problem.terms:
        z = term.z_values()
        Z = np.zeros((problem.n, term.q))
        for c in range(term.n_columns):
            Z[np.arange(problem.n), term.refs * term.n_columns + c] = z[:, c]
        blocks.append(Z)
    return np.hstack(blocks)


def _dense_lambda(problem, theta):
    from scipy.linalg import block_diag

    return block_diag(*[np.kron(np.eye(t.n_levels), lam) for t, lam in zip(problem.terms, problem.template.lambdas(theta))])


def _minus2_loglik(problem, mu):
    fam, y, w = problem.family, problem.y, problem.pw
    if fam.name == "binomial":
        return -2.0 * np.sum(stats.binom.logpmf(np.round(w * y), np.round(w), mu))
    return -2.0 * np.sum(w * stats.poisson.logpmf(y, mu))


def _dense_laplace(problem, theta, beta):
    Z = _dense_z(problem)
    ZL = Z @ _dense_lambda(problem, theta)
    fixed = problem.offset + problem.X @ beta
    fam, link = problem.family, problem.family.link

    def f(u):
        mu = link.linkinv(fixed + ZL @ u)
        return np.sum(fam.dev_resid(problem.y, mu, problem.pw)) + u @ u

    u = optimize.minimize(f, np.zeros(ZL.shape[1]), method="BFGS", options={"gtol": 1e-10}).x
    u = optimize.minimize(f, u, method="Nelder-Mead", options={"xatol": 1e-12, "fatol": 1e-14, "maxfev": 20000}).x if ZL.shape[1] < 4 else u
    eta = fixed + ZL @ u
    mu = link.linkinv(eta)
    w = problem.pw * link.mu_eta(eta) ** 2 / fam.variance(mu)
    M = ZL.T @ (ZL * w[:, None]) + np.eye(ZL.shape[1])
    return _minus2_loglik(problem, mu) + u @ u + np.linalg.slogdet(M)[1]


CASES = [
    ("binomial", "logit", "(1 | g)", False),
    ("binomial", "probit", "(1 | g) + (1 | h)", False),
    ("binomial", "cloglog", "(1 + x0 | g)", True),
    ("poisson", "log", "(1 + x0 | g) + (1 | h)", True),
    ("poisson", "sqrt", "(1 | g)", False),
]


@pytest.mark.parametrize("family, link, random_effects, slope", CASES)
def test_laplace_objective_matches_dense(family, link, random_effects, slope):
    problem = _problem(family, link, random_effects, slope=slope)
    rng = np.random.default_rng(1)
    beta0 = np.array([0.2, 0.5, -0.3]) if link != "sqrt" else np.array([1.2, 0.2, -0.1])
    for _ in range(3):
        theta = problem.template.initial_theta() * rng.uniform(0.3, 1.5, size=problem.n_theta)
        theta[problem.template.lower_bounds() != 0] = rng.normal(scale=0.2, size=np.sum(problem.template.lower_bounds() != 0))
        beta = beta0 + rng.normal(scale=0.1, size=3)
        state = problem.pirls(theta, beta, problem.zero_u(), joint=False)
        assert state.converged
        expected = _dense_laplace(problem, theta, beta)
        assert problem.laplace(state) == pytest.approx(expected, abs=1e-7 * max(1.0, abs(expected)))


def _exact_marginal(problem, theta, beta):
    """-2 log of prod_l integral prod_{i in l} p(y_i | u) phi(u) du (one scalar intercept term)."""
    term = problem.terms[0]
    lam = problem.template.lambdas(theta)[0][0, 0]
    fixed = problem.offset + problem.X @ beta
    fam, link = problem.family, problem.family.link
    total = 0.0
    for level in range(term.n_levels):
        rows = term.refs == level
        y, w, f0 = problem.y[rows], problem.pw[rows], fixed[rows]

        def loglik(u):
            mu = link.linkinv(f0 + lam * u)
            if fam.name == "binomial":
                return np.sum(stats.binom.logpmf(np.round(w * y), np.round(w), mu))
            return np.sum(w * stats.poisson.logpmf(y, mu))

        # Centre the integrand at its mode for an accurate quadrature.
        mode = optimize.minimize_scalar(lambda u: -loglik(u) + 0.5 * u * u).x
        peak = loglik(mode) - 0.5 * mode * mode
        # The integrand is below exp(-50) of its peak beyond +/-12 of the mode (u is standard normal).
        value = integrate.quad(lambda u: np.exp(loglik(u) - 0.5 * u * u - peak), mode - 12, mode + 12, epsabs=0, epsrel=1e-12, limit=200)[0]
        total += -2.0 * (np.log(value / np.sqrt(2 * np.pi)) + peak)
    return total


@pytest.mark.parametrize("family, link", [("binomial", "logit"), ("poisson", "log"), ("binomial", "cloglog")])
def test_agq_converges_to_the_integral(family, link):
    problem = _problem(family, link, "(1 | g)", seed=3, per=5)
    theta, beta = np.array([0.9]), np.array([0.1, 0.4, -0.2])
    state = problem.pirls(theta, beta, problem.zero_u(), joint=False)
    exact = _exact_marginal(problem, theta, beta)
    assert problem.agq(state, theta, 25) == pytest.approx(exact, abs=1e-6)
    # nagq = 1 is the Laplace approximation, and more nodes get closer to the integral.
    assert problem.agq(state, theta, 1) == pytest.approx(problem.laplace(state), abs=1e-10)
    assert abs(problem.agq(state, theta, 7) - exact) < abs(problem.laplace(state) - exact)


def test_gauss_hermite_rule_integrates_normal_moments():
    nodes, weights = gauss_hermite_normal(9)
    assert weights.sum() == pytest.approx(1.0, abs=1e-14)
    assert np.sum(weights * nodes**2) == pytest.approx(1.0, abs=1e-12)
    assert np.sum(weights * nodes**4) == pytest.approx(3.0, abs=1e-11)


@pytest.mark.parametrize(
    "family, link",
    [("binomial", "logit"), ("binomial", "probit"), ("binomial", "cloglog"), ("poisson", "log"), ("poisson", "sqrt"), ("poisson", "identity")],
)
def test_newton_weights_are_the_second_derivative(family, link):
    """PIRLS's Newton weights (non-canonical links) equal -d^2 log p(y | eta) / d eta^2.

    Against central second differences of half the deviance residuals (step
    1e-4, eta in the links' unclamped range): to 1e-6 relative.  For the
    canonical links they equal Fisher's weights exactly.
    """
    rng = np.random.default_rng(11)
    fam = make_family(family, link)
    n = 200
    if family == "binomial":
        eta = rng.uniform(-2.5, 1.5, size=n)  # cloglog: 1 - mu cancels (and so do its differences) above
        pw = rng.integers(1, 6, size=n).astype(float)
        y = rng.binomial(pw.astype(int), 0.4) / pw
    else:
        eta = rng.uniform(0.5, 3.0, size=n) if link != "log" else rng.uniform(-1.0, 2.0, size=n)
        pw = np.ones(n)
        y = rng.poisson(3.0, size=n).astype(float)

    def half_deviance(e):
        return 0.5 * fam.dev_resid(y, fam.link.linkinv(e), pw)

    h = 1e-4
    numeric = (half_deviance(eta + h) - 2.0 * half_deviance(eta) + half_deviance(eta - h)) / h**2
    mu = fam.link.linkinv(eta)
    mu_eta = fam.link.mu_eta(eta)
    w = pw * mu_eta**2 / fam.variance(mu)
    observed = fam.observed_weights(y, mu, eta, mu_eta, w, pw)
    np.testing.assert_allclose(observed, numeric, rtol=1e-6, atol=1e-6 * np.max(np.abs(numeric)))
    if fam.canonical:
        np.testing.assert_allclose(observed, w, rtol=1e-12)


def test_fixed_effects_covariance_when_the_placeholder_response_is_a_column_of_X(monkeypatch):
    """A singular fit takes (R_X' R_X)^-1 from a factorisation of [X y] with a placeholder y.

    A column of X equal to the first placeholder draw (a user who generated X
    from the same seed) makes that factorisation fail (it raised LinAlgError
    when the placeholder was one fixed draw); the next draw is used, and the
    covariance (which does not depend on y) is the same as when only that
    draw is tried.  Reference: the same fit with the colliding seed left out.
    """
    import warnings

    from sklmm import MixedLogisticRegression
    from sklmm._engine import pirls

    rng = np.random.default_rng(4)
    n, m = 300, 30
    seed = pirls._PLACEHOLDER_SEEDS[0]
    X = pd.DataFrame({"x": np.random.default_rng(seed).normal(size=n), "z": rng.normal(size=n)})
    g = pd.DataFrame({"g": rng.integers(0, m, size=n).astype(str)})
    y = (rng.random(n) < 1 / (1 + np.exp(-(0.3 + 0.8 * X["x"])))).astype(int)  # no group effect
    model = MixedLogisticRegression(random_effects="(1 | g)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the singular fit's warning
        fitted = model.fit(X, y, groups=g)
        assert fitted.singular_
        colliding = fitted.fixed_effects_["std_error"].to_numpy()
        monkeypatch.setattr(pirls, "_PLACEHOLDER_SEEDS", pirls._PLACEHOLDER_SEEDS[1:])
        reference = model.fit(X, y, groups=g).fixed_effects_["std_error"].to_numpy()
    assert np.all(np.isfinite(colliding))
    np.testing.assert_allclose(colliding, reference, rtol=1e-10)
