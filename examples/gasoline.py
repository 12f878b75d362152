"""The Gasoline panel: car ownership in 18 OECD countries, 1960-1978, as a mixed model.

Makes the four figures of the user guide's page "What a mixed model is"
(docs/mixed-models.md), which shows this code section by section:

* gasoline_trajectories.png: cars per capita over time, one line per country;
* gasoline_between_within.png: the income effect between and within countries;
* gasoline_covariates.png: cars per capita against income and gasoline price;
* gasoline_predictions.png: observed values, conditional (country known) and
  population-level (country new) predictions of the random-intercept model.

Needs matplotlib (``python -m pip install matplotlib``, or the ``docs`` extra).

Run: python examples/gasoline.py [OUTPUT_FOLDER]    (default: docs/_static)
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write files; no window needed
import matplotlib.pyplot as plt
import numpy as np

from sklmm import MixedLinearRegressor
from sklmm.datasets import load_gasoline

output = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs" / "_static"
output.mkdir(parents=True, exist_ok=True)
PNG = {"dpi": 110, "metadata": {"Software": None}}  # no version stamp: the files change only when the figure does

# [load]
df = load_gasoline()                      # one row per country and year
df["year"] = df["time"] + 1965            # time is year - 1965
countries = list(df["country"].unique())  # 18 countries, 19 years each
# [/load]

# [trajectories]
fig, ax = plt.subplots(figsize=(8, 4))
for country, rows in df.groupby("country"):
    ax.plot(rows["year"], rows["lcarpcap"], color="tab:blue", alpha=0.45)
    if country in ("U.S.A.", "TURKEY", "JAPAN", "SWEDEN"):
        ax.annotate(country, (rows["year"].iloc[-1], rows["lcarpcap"].iloc[-1]), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8)
ax.set(xlabel="Year", ylabel="Cars per capita (log scale)", xlim=(1959, 1982),
       title="Variation at baseline and over time")
fig.tight_layout()
fig.savefig(output / "gasoline_trajectories.png", **PNG)
# [/trajectories]

# [between_within]
means = df.groupby("country")[["lincomep", "lcarpcap"]].mean()                 # one point per country
changes = df[["lincomep", "lcarpcap"]] - df.groupby("country")[["lincomep", "lcarpcap"]].transform("mean")
between_slope = np.polyfit(means["lincomep"], means["lcarpcap"], 1)[0]
within_slope = np.polyfit(changes["lincomep"], changes["lcarpcap"], 1)[0]

fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.6))
left.scatter(means["lincomep"], means["lcarpcap"], color="tab:blue")
left.set(xlabel="Mean income per capita (log)", ylabel="Mean cars per capita (log)",
         title=f"Between countries: slope {between_slope:.2f}")
right.scatter(changes["lincomep"], changes["lcarpcap"], s=8, color="tab:orange")
right.set(xlabel="Income minus the country's mean (log)", ylabel="Cars minus the country's mean (log)",
          title=f"Within countries: slope {within_slope:.2f}")
fig.tight_layout()
fig.savefig(output / "gasoline_between_within.png", **PNG)
# [/between_within]

# [covariates]
fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.6), sharey=True)
left.scatter(df["lincomep"], df["lcarpcap"], s=8)
left.set(xlabel="Income per capita (log)", ylabel="Cars per capita (log)")
right.scatter(df["lrpmg"], df["lcarpcap"], s=8)
right.set(xlabel="Real gasoline price (log)")
fig.suptitle("Cars per capita against the covariates, 18 countries, 1960-1978")
fig.tight_layout()
fig.savefig(output / "gasoline_covariates.png", **PNG)
# [/covariates]

# [predictions]
X, y, groups = load_gasoline(return_X_y_groups=True)
model = MixedLinearRegressor(random_effects="(1 | country)").fit(X, y, groups=groups)
df["conditional"] = model.predict(X, groups=groups)   # each country's random intercept added
df["population"] = model.predict(X)                   # fixed effects only: a country never seen

fig, axes = plt.subplots(3, 6, figsize=(11, 6), sharex=True, sharey=True)
for ax, country in zip(axes.flat, countries):
    rows = df[df["country"] == country]
    ax.plot(rows["year"], rows["lcarpcap"], "o", ms=2.5, color="black", label="observed")
    ax.plot(rows["year"], rows["conditional"], color="tab:blue", label="conditional (country known)")
    ax.plot(rows["year"], rows["population"], "--", color="tab:red", label="population-level (new country)")
    ax.set_title(country, fontsize=8)
    ax.tick_params(labelsize=7)
fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="upper center", ncol=3, fontsize=8)
fig.supxlabel("Year")
fig.supylabel("Cars per capita (log scale)")
fig.tight_layout(rect=(0, 0, 1, 0.95))
fig.savefig(output / "gasoline_predictions.png", **PNG)
# [/predictions]

plt.close("all")
print(f"between-country slope {between_slope:.2f}, within-country slope {within_slope:.2f}")
print(f"wrote 4 figures to {output}")
