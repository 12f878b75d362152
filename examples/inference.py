"""Inference after the fit, as lme4 gives it: summary, intervals, tests, simulation, plots.

Fits the sleepstudy model ``Reaction ~ Days + (1 + Days | Subject)`` and
walks through what an analyst asks next, checking each number against lme4
1.1-31 (values from tests/data/lme4_inference):

1. ``summary()``: lme4's printed summary, and its tables as DataFrames;
2. ``confint``: Wald, profile-likelihood and parametric-bootstrap intervals;
3. ``random_effects_cov_``: conditional variances of the random effects
   (lme4's ``condVar``) and ``predict_se``;
4. ``sklmm.anova``: likelihood-ratio test of the random slope (REML fits are
   refitted by ML, as lme4 does);
5. ``simulate``: new responses from the fitted model;
6. the caterpillar and residual plots (if matplotlib is installed).

Run: python examples/inference.py
"""

import numpy as np

from sklmm import MixedLinearRegressor, anova
from sklmm.datasets import load_sleepstudy

X, y, groups = load_sleepstudy(return_X_y_groups=True)
model = MixedLinearRegressor(random_effects="(1 + Days | Subject)").fit(X, y, groups=groups)

# 1. The summary reads as lme4's summary(fm1).
summary = model.summary()
print(summary)
assert summary.criterion["REML"] == np.float64(model.objective_)
assert abs(summary.criterion["REML"] - 1743.628) < 1e-3

# 2. Confidence intervals, named as lme4's confint(fm1, oldNames = FALSE).
wald = model.confint("wald")
print(wald.round(3))
assert abs(wald.loc["Days", "lower"] - 7.43759) < 1e-4  # lme4: 7.43759

profile = model.confint("profile")  # of the ML deviance, also for this REML fit (as lme4)
print(profile.round(3))
assert abs(profile.loc["sd_(Intercept)|Subject", "lower"] - 14.3814) < 1e-3  # lme4: 14.3814
assert abs(profile.loc["cor_Days.(Intercept)|Subject", "upper"] - 0.6850) < 1e-3  # lme4: 0.6850

boot = model.confint("bootstrap", n_boot=200, random_state=1)  # reproducible; n_jobs= runs it in parallel
print(boot.round(3))
print(boot.attrs["messages"])
assert boot.loc["Days", "lower"] < 10.467 < boot.loc["Days", "upper"]

# 3. Conditional variances of the random effects, per level, and prediction standard errors.
cov = model.random_effects_cov_["Subject"]  # (18 subjects, 2, 2)
print("condVar of subject 308:\n", cov[0].round(2))
assert abs(cov[0, 0, 0] - 145.71) < 0.05  # lme4's postVar: 145.71
print("standard errors, conditional:", model.predict_se(X.head(3), groups=groups.head(3)).round(3))
print("standard errors, population: ", model.predict_se(X.head(3)).round(3))

# 4. Does the random slope improve the fit?  lme4: Chisq 42.139 on 2 df, p = 7.07e-10.
intercept_only = MixedLinearRegressor(random_effects="(1 | Subject)").fit(X, y, groups=groups)
table = anova(intercept_only, model)
print(table)
assert abs(table.loc["m1", "Chisq"] - 42.139) < 1e-3 and table.attrs["note"].startswith("refitting")

# 5. New responses from the fitted model (new subjects' effects and new residuals).
draws = model.simulate(1000, random_state=0)
print("simulated responses:", draws.shape, "mean of day-0 means", draws[X["Days"].to_numpy() == 0].mean().round(1))

# 6. Plots (matplotlib is optional: pip install "sklmm[plot]").
try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sklmm import plot_caterpillar, plot_residuals

    figures = [plot_caterpillar(model), plot_residuals(model)]
    print("drew", len(figures), "figures")
    plt.close("all")
except ImportError:
    print("matplotlib is not installed: no plots")

print("inference example done")
