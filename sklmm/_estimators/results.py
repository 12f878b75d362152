"""Package a fit in lme4's layouts: VarCorr, ranef, the fixed-effects table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._engine.fit import LmmFit


def variance_components_frame(fit: LmmFit) -> pd.DataFrame:
    """lme4's ``as.data.frame(VarCorr(fit))``.

    One row per variance (``var2`` missing, ``sdcor`` the standard deviation),
    then one per covariance of the same term (``sdcor`` the correlation), term
    by term in theta's order, and a last ``Residual`` row (none for a GLMM
    without a scale parameter).
    """
    rows = []
    sigma2 = fit.sigma**2
    for term in fit.terms:
        cov = sigma2 * (term.lam @ term.lam.T)
        sd = np.sqrt(np.diag(cov))
        for i, name in enumerate(term.columns):
            rows.append((term.factor_name, name, None, cov[i, i], sd[i]))
        for i in range(len(term.columns)):
            for j in range(i + 1, len(term.columns)):
                with np.errstate(invalid="ignore", divide="ignore"):
                    corr = cov[i, j] / (sd[i] * sd[j])
                rows.append((term.factor_name, term.columns[i], term.columns[j], cov[i, j], corr))
    if getattr(fit, "has_residual", True):  # binomial and Poisson GLMMs have no residual row
        rows.append(("Residual", None, None, sigma2, fit.sigma))
    group, var1, var2, vcov, sdcor = zip(*rows) if rows else ((), (), (), (), ())
    return pd.DataFrame(
        {
            "group": pd.Series(group, dtype=object),
            "var1": pd.Series(var1, dtype=object),  # None where lme4 has NA
            "var2": pd.Series(var2, dtype=object),
            "vcov": np.asarray(vcov, dtype=float),
            "sdcor": np.asarray(sdcor, dtype=float),
        }
    )


def random_effects_frames(fit: LmmFit) -> dict[str, pd.DataFrame]:
    """lme4's ``ranef``: one frame per grouping factor, indexed by level.

    Terms on the same factor (``(1 + x || g)``) are merged into one frame, as
    lme4 merges them.
    """
    frames: dict[str, pd.DataFrame] = {}
    for term in fit.terms:
        frame = pd.DataFrame(term.b, index=term.levels.copy(), columns=list(term.columns))
        if term.factor_name in frames:
            frames[term.factor_name] = frames[term.factor_name].join(frame)
        else:
            frames[term.factor_name] = frame
    return frames


def fixed_effects_frame(fit) -> pd.DataFrame:
    """Estimate, standard error and t value of each estimated fixed effect."""
    names = [fit.fixed_names[j] for j in fit.kept]
    estimate = fit.beta[fit.kept]
    std_error = np.sqrt(np.diag(fit.vcov)) if len(names) else np.empty(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_value = estimate / std_error
    return pd.DataFrame({"estimate": estimate, "std_error": std_error, "t_value": t_value}, index=pd.Index(names, dtype=object))


def fixed_effects_z_frame(fit) -> pd.DataFrame:
    """Estimate, standard error, z value and two-sided normal p-value (lme4's glmer table)."""
    from scipy.stats import norm

    frame = fixed_effects_frame(fit).rename(columns={"t_value": "z_value"})
    frame["p_value"] = 2.0 * norm.sf(np.abs(frame["z_value"].to_numpy()))
    return frame


def fixed_effects_cov_frame(fit: LmmFit) -> pd.DataFrame:
    """lme4's ``vcov``: covariance of the estimated fixed effects."""
    names = pd.Index([fit.fixed_names[j] for j in fit.kept], dtype=object)
    return pd.DataFrame(fit.vcov, index=names, columns=names)

