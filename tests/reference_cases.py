"""Load the lme4 reference cases stored in tests/data and fit them with sklmm.

Cases: ``tests/data/lme4`` (the project's reference corpus) and
``tests/data/lme4_extra`` (more structures, made by ``make_reference.R``);
both were produced with lme4 1.1-31.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).parent / "data"
CASE_DIRS = sorted(p for root in ("lme4", "lme4_extra") for p in (DATA / root).iterdir() if (p / "spec.json").exists())
CASES = [p.name for p in CASE_DIRS]


@dataclass
class Case:
    name: str
    spec: dict
    reference: dict
    data: pd.DataFrame

    @property
    def weights_column(self) -> str | None:
        w = self.spec.get("weights")
        return w if isinstance(w, str) else None

    def arrays(self):
        """X (DataFrame of fixed columns), y, groups (DataFrame), weights."""
        d = self.data
        X = d[self.spec["fixed"]].astype(float)
        y = d[self.spec["response"]].to_numpy(float)
        groups = d[self.spec["groups"]].astype(str)
        w = None if self.weights_column is None else d[self.weights_column].to_numpy(float)
        return X, y, groups, w


@lru_cache(maxsize=None)
def load_case(name: str) -> Case:
    folder = next(p for p in CASE_DIRS if p.name == name)
    spec = json.loads((folder / "spec.json").read_text())
    reference = json.loads((folder / "reference.json").read_text())
    data = pd.read_csv(folder / "data.csv", dtype=str, keep_default_na=False)
    numeric = [spec["response"], *spec["fixed"]] + ([spec["weights"]] if isinstance(spec.get("weights"), str) else [])
    for column in numeric:
        data[column] = data[column].astype(float)
    return Case(name, spec, reference, data)


@lru_cache(maxsize=None)
def fitted(name: str, method: str):
    """sklmm's fit of a case (cached: several tests read the same fit)."""
    import warnings

    from sklmm import MixedLinearRegressor

    case = load_case(name)
    X, y, groups, w = case.arrays()
    model = MixedLinearRegressor(random_effects=case.spec["random_effects"], reml=(method == "reml"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, y, groups=groups, sample_weight=w)
    return model, caught


def as_list(value) -> list:
    """R's jsonlite writes length-one vectors as scalars."""
    return list(value) if isinstance(value, list) else [value]


def sklmm_group_name(r_name: str, factor_names: set[str]) -> str:
    """Map lme4's group name to sklmm's factor name.

    lme4 spells a second ``(x || g)`` term ``g.1``, and names a nested factor
    ``b:a`` for ``a/b``; sklmm keeps the factor's own name (``g``, ``a:b``).
    """
    if r_name in factor_names or r_name == "Residual":
        return r_name
    stripped = re.sub(r"\.\d+$", "", r_name)
    if stripped in factor_names:
        return stripped
    if r_name.replace("_", ":") in factor_names:  # pastes: lme4 was given batch_cask
        return r_name.replace("_", ":")
    reversed_name = ":".join(reversed(r_name.split(":")))
    if reversed_name in factor_names:
        return reversed_name
    raise KeyError(f"no sklmm factor for lme4 group {r_name!r} among {sorted(factor_names)}")


def sklmm_level(r_level: str, r_group: str, sk_group: str) -> str:
    """Level label in sklmm's spelling (components reversed when the group was)."""
    if r_group != sk_group and ":" in r_group and r_group.split(":") != sk_group.split(":"):
        return ":".join(reversed(r_level.split(":")))
    return r_level


def ranef_frames(reference: dict, factor_names: set[str]) -> dict[str, pd.DataFrame]:
    """lme4's ranef per factor as DataFrames, keyed and labelled as sklmm names them."""
    frames = {}
    for r_group, block in reference["ranef"].items():
        group = sklmm_group_name(r_group, factor_names)
        values = np.asarray(block["values"], dtype=float).reshape(len(as_list(block["levels"])), -1)
        levels = [sklmm_level(str(level), r_group, group) for level in as_list(block["levels"])]
        frames[group] = pd.DataFrame(values, index=levels, columns=as_list(block["columns"]))
    return frames
