"""The glmer reference cases of tests/data/glmer, fitted through the estimators on their x_* columns.

Cases: cbpp, epil, grouseticks from the project's reference corpus
(/work/shared/reference-formula-glmm), and the cases made by
``tests/data/glmer/make_glmer_cases.R`` (other links, nAGQ > 1, a random
slope, an offset, an observation-level effect, crossed binary data); all
fitted with lme4 1.1-31.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pandas as pd

DATA = Path(__file__).parent / "data" / "glmer"
CASES = sorted(p.name for p in DATA.iterdir() if (p / "spec.json").exists())
#: Cases that take more than a few seconds (run with the slow marker): crossed factors with
#: many levels (each PIRLS step rebuilds the dense rest blocks), and the larger slope model.
SLOW = {"verbagg", "grouseticks_obs", "contraception_slope"}
#: Random-effects terms in X-form where a slope is a factor's dummy column.
X_FORM_RANDOM_EFFECTS = {"contraception_slope": "(1 + urbanY | district)"}


@dataclass
class GlmerCase:
    name: str
    spec: dict
    reference: dict
    data: pd.DataFrame

    def arrays(self):
        """X (DataFrame, the x_ columns without the prefix), y, groups, weights, offset."""
        d = self.data
        X = d[self.spec["fixed"]].astype(float)
        X.columns = [c[2:] for c in X.columns]
        y = d[self.spec["response"]].to_numpy(float)
        groups = d[self.spec["groups"]]
        weights = d[self.spec["weights"]].to_numpy(float) if self.spec.get("weights") else None
        offset = d[self.spec["offset"]].to_numpy(float) if self.spec.get("offset") else None
        return X, y, groups, weights, offset

    @property
    def random_effects(self) -> str:
        return X_FORM_RANDOM_EFFECTS.get(self.name, self.spec["random_effects"])

    def estimator(self):
        from sklmm import MixedGLMRegressor, MixedLogisticRegression, MixedPoissonRegressor

        spec = self.spec
        common = dict(random_effects=self.random_effects, nagq=int(spec["nAGQ"]))
        if spec["family"] == "poisson":
            return MixedPoissonRegressor(link=spec["link"], **common)
        if spec.get("weights"):
            return MixedGLMRegressor(family="binomial", link=spec["link"], **common)
        return MixedLogisticRegression(link=spec["link"], **common)


@lru_cache(maxsize=None)
def load(name: str) -> GlmerCase:
    folder = DATA / name
    spec = json.loads((folder / "spec.json").read_text())
    reference = json.loads((folder / "reference.json").read_text())["fit"]
    data = pd.read_csv(folder / "data.csv", dtype={g: str for g in spec["groups"]})
    return GlmerCase(name, spec, reference, data)


@lru_cache(maxsize=None)
def fitted(name: str):
    case = load(name)
    X, y, groups, weights, offset = case.arrays()
    return case.estimator().fit(X, y, groups=groups, sample_weight=weights, offset=offset)
