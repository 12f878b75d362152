"""The benchmark problems: a registry of named functions, each returning a :class:`Problem`.

A problem is a data frame and a model specification that every library can
read: the response, the fixed-effect columns, the grouping columns, the random
part in sklmm's syntax and the same model as an lme4 formula.

==========================  ==========  ============================================
name                        rows        model
==========================  ==========  ============================================
the lme4 reference cases    30-31,022   as in ``tests/data/lme4/<case>/spec.json``
                                        (sleepstudy, chem97, penicillin, ...)
random_intercept_2m         2,000,000   ``y ~ 1 + x0..x9 + (1 | g)``, 100,000 groups
random_slope_400k           400,000     ``y ~ 1 + time + x1 + x2 + (1 + time | g)``,
                                        20,000 groups, correlated
crossed_500k                500,000     ``y ~ 1 + x1 + x2 + (1 | user) + (1 | item)``,
                                        50,000 users x 2,000 items
insteval                    73,421      ``y ~ 1 + (1 | s) + (1 | d) + (1 | dept)``,
                                        lme4's InstEval (2,972 x 1,128 x 14)
crossed_600k_60k_30k        600,000     ``y ~ 1 + x1 + x2 + (1 | user) + (1 | item)``,
                                        60,000 users x 30,000 items (by name only)
ml_latest_shape             27,716,748  ``y ~ 1 + (1 | user) + (1 | item)``, MovieLens
                                        ml-latest's shape: 266,980 x 53,883 (by name only)
==========================  ==========  ============================================

All problems are fitted by REML (lme4's default).  Simulated problems use
fixed seeds, so every run and every library sees the same numbers.
``scale < 1`` shrinks the simulated problems (``--quick``) keeping their
structure (rows per group, crossing).

A problem travels to a library's subprocess as a folder of raw column files
(:meth:`Problem.save`, :meth:`Problem.load`): ``<column>.f64`` (little-endian
float64) for numbers and ``<column>.i32`` (int32 level codes, 0-based) for
factors, plus ``problem.json``.  R reads them with ``readBin``, needing no
extra package.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DATA = ROOT / "tests" / "data" / "lme4"
CACHE = Path(__file__).resolve().parent / ".cache"

#: The reference cases, in the order the table shows them.
REFERENCE_CASES = [
    "sleepstudy", "sleepstudy_zerocorr", "sleepstudy_weighted", "dyestuff", "dyestuff2",
    "gasoline", "penicillin", "pastes", "hsb82", "chem97",
]


@dataclass
class Problem:
    """A data set and a linear mixed model, stated for every library.

    Attributes
    ----------
    name : str
    description : str
        One line for the table and the README.
    data : DataFrame
        Numeric columns are float64; grouping columns are categoricals.
    response : str
    fixed : list of str
        Fixed-effect covariates (an intercept is always added).
    groups : list of str
        Grouping factors named in ``random_effects``.
    random_effects : str
        sklmm's ``random_effects`` (``"(1 + time | g)"``).
    lme4_formula : str
        The same model for lme4 and mixedlm.
    reml : bool
        REML (True) or maximum likelihood.
    weights : str or None
        Column of prior weights.
    source : str
        Where the data come from.
    """

    name: str
    description: str
    data: pd.DataFrame
    response: str
    fixed: list[str]
    groups: list[str]
    random_effects: str
    lme4_formula: str
    reml: bool = True
    weights: str | None = None
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.data)

    def spec(self) -> dict:
        """Everything but the data, as JSON-able values."""
        spec = {k: v for k, v in self.__dict__.items() if k != "data"}
        spec["n"] = self.n
        return spec

    def n_levels(self) -> dict[str, int]:
        return {g: int(self.data[g].nunique()) for g in self.groups}

    # -- hand-over to a subprocess ---------------------------------------------

    def save(self, folder: Path) -> Path:
        """Write the columns as raw binary files and the spec as problem.json."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        columns = {}
        for name in self.data.columns:
            column = self.data[name]
            if isinstance(column.dtype, pd.CategoricalDtype):
                column.cat.codes.to_numpy().astype("<i4").tofile(folder / f"{name}.i32")
                columns[name] = "i32"
            else:
                column.to_numpy(dtype="<f8").tofile(folder / f"{name}.f64")
                columns[name] = "f64"
        spec = self.spec()
        spec["columns"] = columns
        (folder / "problem.json").write_text(json.dumps(spec, indent=1))
        return folder

    @classmethod
    def load(cls, folder: Path) -> "Problem":
        """Read a problem written by :meth:`save`; factors come back as categoricals of their codes."""
        folder = Path(folder)
        spec = json.loads((folder / "problem.json").read_text())
        data = {}
        for name, kind in spec.pop("columns").items():
            if kind == "i32":
                codes = np.fromfile(folder / f"{name}.i32", dtype="<i4")
                data[name] = pd.Categorical.from_codes(codes, categories=np.arange(codes.max() + 1))
            else:
                data[name] = np.fromfile(folder / f"{name}.f64", dtype="<f8")
        spec.pop("n")
        return cls(data=pd.DataFrame(data), **spec)


def _as_factors(data: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    for name in columns:
        data[name] = pd.Categorical(data[name].astype(str))
    return data


# -- the lme4 reference cases ----------------------------------------------------


def reference_case(case: str) -> Problem:
    """One folder of tests/data/lme4: data.csv and spec.json, fitted by REML."""
    folder = REFERENCE_DATA / case
    spec = json.loads((folder / "spec.json").read_text())
    data = pd.read_csv(folder / "data.csv", dtype={g: str for g in spec["groups"]})
    factors = list(spec["groups"])
    # lme4 was given explicit interaction columns (pastes: batch_cask = batch:cask).
    for name in set(re.findall(r"\|\s*([A-Za-z0-9_.]+)\s*\)", spec["lme4_formula"])):
        if name not in data.columns and "_" in name:
            parts = name.split("_")
            if all(p in data.columns for p in parts):
                data[name] = data[parts].astype(str).agg(":".join, axis=1)
                factors.append(name)
    for name in data.columns:
        if name not in factors:
            data[name] = data[name].astype(float)
    weights = spec["weights"] if isinstance(spec.get("weights"), str) else None
    return Problem(
        name=case,
        description=f"lme4 reference case {case}",
        data=_as_factors(data, factors),
        response=spec["response"],
        fixed=list(spec["fixed"]),
        groups=list(spec["groups"]),
        random_effects=spec["random_effects"],
        lme4_formula=spec["lme4_formula"],
        reml=True,
        weights=weights,
        source=f"tests/data/lme4/{case}",
    )


# -- simulated problems -------------------------------------------------------------


def _group_codes(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    """n rows in m groups, every group used, sizes varying around n / m, shuffled."""
    codes = np.concatenate([np.arange(m), rng.integers(0, m, size=n - m)])
    return rng.permutation(codes)


def random_intercept_2m(scale: float = 1.0) -> Problem:
    """2,000,000 rows, 100,000 groups (20 rows on average), 10 covariates, random intercept.

    Three covariates have a between-group component (as real panel covariates
    do); ICC of the group effect about 0.3: sd(b) = 0.7, sigma = 1.
    """
    rng = np.random.default_rng(20240601)
    n, m = int(2_000_000 * scale), int(100_000 * scale)
    g = _group_codes(rng, n, m)
    X = rng.standard_normal((n, 10))
    X[:, :3] += rng.standard_normal((m, 3))[g] * 0.8
    beta = np.round(rng.uniform(-1.0, 1.0, size=10), 2)
    y = 1.5 + X @ beta + 0.7 * rng.standard_normal(m)[g] + rng.standard_normal(n)
    fixed = [f"x{j}" for j in range(10)]
    data = pd.DataFrame(X, columns=fixed)
    data.insert(0, "y", y)
    data["g"] = pd.Categorical.from_codes(g.astype(np.int32), categories=np.arange(m))
    return Problem(
        name="random_intercept_2m" if scale == 1 else f"random_intercept_2m@{scale:g}",
        description=f"simulated: {n:,} rows, {m:,} groups, 10 covariates, (1 | g)",
        data=data, response="y", fixed=fixed, groups=["g"], random_effects="(1 | g)",
        lme4_formula="y ~ 1 + " + " + ".join(fixed) + " + (1 | g)", source="simulated, seed 20240601",
    )


def random_slope_400k(scale: float = 1.0) -> Problem:
    """400,000 rows, 20,000 groups of 20 repeated measures, correlated random intercept and slope.

    ``time`` runs 0, 0.5, ..., 9.5 within each group (a sleepstudy-like
    design); sd(intercept) = 1, sd(slope) = 0.25, correlation 0.3, sigma = 1.
    """
    rng = np.random.default_rng(20240602)
    m = int(20_000 * scale)
    per = 20
    n = m * per
    g = np.repeat(np.arange(m), per)
    time = np.tile(np.arange(per) * 0.5, m)
    x1 = rng.standard_normal(n)
    x2 = rng.standard_normal(m)[g]  # a group-level covariate
    sd = np.array([1.0, 0.25])
    corr = np.array([[1.0, 0.3], [0.3, 1.0]])
    b = rng.multivariate_normal(np.zeros(2), corr * np.outer(sd, sd), size=m)
    y = 2.0 + 0.4 * time + 0.5 * x1 - 0.3 * x2 + b[g, 0] + b[g, 1] * time + rng.standard_normal(n)
    order = rng.permutation(n)  # rows need not arrive sorted by group
    data = pd.DataFrame({"y": y, "time": time, "x1": x1, "x2": x2}).iloc[order].reset_index(drop=True)
    data["g"] = pd.Categorical.from_codes(g[order].astype(np.int32), categories=np.arange(m))
    return Problem(
        name="random_slope_400k" if scale == 1 else f"random_slope_400k@{scale:g}",
        description=f"simulated: {n:,} rows, {m:,} groups, (1 + time | g) correlated",
        data=data, response="y", fixed=["time", "x1", "x2"], groups=["g"],
        random_effects="(1 + time | g)", lme4_formula="y ~ 1 + time + x1 + x2 + (1 + time | g)",
        source="simulated, seed 20240602",
    )


def crossed_500k(scale: float = 1.0) -> Problem:
    """500,000 ratings: 50,000 users (10 each) x 2,000 items (popularity skewed).

    Item popularity falls as (rank + 10)^-0.8 (the least popular item has
    about 75 ratings); sd(user) = 0.8, sd(item) = 0.5, sigma = 1.
    """
    rng = np.random.default_rng(20240603)
    users, items = int(50_000 * scale), max(50, int(2_000 * scale))
    n = users * 10
    user = rng.permutation(np.repeat(np.arange(users), 10))
    popularity = (np.arange(items) + 10.0) ** -0.8
    item = rng.choice(items, size=n, p=popularity / popularity.sum())
    item[:items] = np.arange(items)  # every item rated at least once
    x1 = rng.standard_normal(users)[user]  # a user-level covariate
    x2 = rng.standard_normal(n)
    y = 3.0 + 0.3 * x1 - 0.2 * x2 + 0.8 * rng.standard_normal(users)[user] + 0.5 * rng.standard_normal(items)[item] + rng.standard_normal(n)
    data = pd.DataFrame({"y": y, "x1": x1, "x2": x2})
    data["user"] = pd.Categorical.from_codes(user.astype(np.int32), categories=np.arange(users))
    data["item"] = pd.Categorical.from_codes(item.astype(np.int32), categories=np.arange(items))
    return Problem(
        name="crossed_500k" if scale == 1 else f"crossed_500k@{scale:g}",
        description=f"simulated: {n:,} rows, {users:,} users x {items:,} items, (1 | user) + (1 | item)",
        data=data, response="y", fixed=["x1", "x2"], groups=["user", "item"],
        random_effects="(1 | user) + (1 | item)", lme4_formula="y ~ 1 + x1 + x2 + (1 | user) + (1 | item)",
        source="simulated, seed 20240603",
    )


def crossed_600k_60k_30k(scale: float = 1.0) -> Problem:
    """600,000 ratings: 60,000 users (10 each) x 30,000 items, recommender-shaped.

    Half the ratings pick their item uniformly, half by Zipf popularity
    (probability proportional to 1 / rank); sd(user) = 0.8, sd(item) = 0.5,
    sigma = 1.  The item block has 30,000 random effects: beyond a dense
    rest block (sklmm's ``DENSE_REST_MAX``).
    """
    rng = np.random.default_rng(20261129)
    users, items = int(60_000 * scale), max(50, int(30_000 * scale))
    n = users * 10
    user = rng.permutation(np.repeat(np.arange(users), 10))
    zipf = 1.0 / np.arange(1, items + 1)
    item = np.where(rng.random(n) < 0.5, rng.integers(0, items, size=n), rng.choice(items, size=n, p=zipf / zipf.sum()))
    item[:items] = rng.permutation(items)  # every item rated at least once
    x1 = rng.standard_normal(users)[user]
    x2 = rng.standard_normal(n)
    y = 3.0 + 0.3 * x1 - 0.2 * x2 + 0.8 * rng.standard_normal(users)[user] + 0.5 * rng.standard_normal(items)[item] + rng.standard_normal(n)
    data = pd.DataFrame({"y": y, "x1": x1, "x2": x2})
    data["user"] = pd.Categorical.from_codes(user.astype(np.int32), categories=np.arange(users))
    data["item"] = pd.Categorical.from_codes(item.astype(np.int32), categories=np.arange(items))
    return Problem(
        name="crossed_600k_60k_30k" if scale == 1 else f"crossed_600k_60k_30k@{scale:g}",
        description=f"simulated: {n:,} rows, {users:,} users x {items:,} items (half uniform, half Zipf), (1 | user) + (1 | item)",
        data=data, response="y", fixed=["x1", "x2"], groups=["user", "item"],
        random_effects="(1 | user) + (1 | item)", lme4_formula="y ~ 1 + x1 + x2 + (1 | user) + (1 | item)",
        source="simulated, seed 20261129",
    )


#: MovieLens ml-latest as MixedModels.jl fitted it (EmbraceUncertainty, data/sizespeed.csv, mc=1, uc=5).
ML_LATEST_ROWS, ML_LATEST_USERS, ML_LATEST_ITEMS = 27_716_748, 266_980, 53_883
#: Ratings per user at least this (MixedModels.jl's user cutoff, uc=5).
ML_LATEST_MIN_PER_USER = 5


def _ml_latest_counts(rng: np.random.Generator, users: int, items: int, n: int) -> np.ndarray:
    """Ratings per user: 5 + a multinomial share of the rest by lognormal weights (sigma 1.55).

    Heavy-tailed as ml-latest's (median about a third of the mean of 104, a
    few users with many thousands); a user's expected count is capped at half
    the items (it only binds at small scales).  Sums to n exactly.
    """
    weights = rng.lognormal(0.0, 1.55, size=users)
    rest = n - ML_LATEST_MIN_PER_USER * users
    cap = max(1.0, items / 2 - ML_LATEST_MIN_PER_USER)
    for _ in range(50):  # clip at the cap and renormalise until (almost) no share is above it
        weights = np.minimum(weights / weights.sum() * rest, cap)
        if weights.sum() >= rest * (1 - 1e-9):
            break
    return ML_LATEST_MIN_PER_USER + rng.multinomial(rest, weights / weights.sum())


def ml_latest_popularity(items: int) -> np.ndarray:
    """Item probabilities, Zipf-Mandelbrot: proportional to (rank + 500 s)^-2.45, s = items / 53,883.

    At scale 1 with 27.7 million ratings drawn with replacement: about 80,000
    for the most rated item (ml-latest's most rated film has about 98,000), a
    median of 4-5 and 56% of the items with 6 or fewer (the book, of the
    25M data: "over half of the movies were rated 6 or fewer times").  As
    generated (each user rates an item once, :func:`ml_latest_pairs`;
    measured at scale 1): the most rated item 51,268, median 12, 34% of the
    items with 6 or fewer ratings, 1.9% with one.  The offset grows with the
    scale, so an item's expected ratings depend only on its relative rank;
    at small scales an item cannot have more raters than there are users, so
    the head is capped and the tail fuller (scale 0.05: median 118).
    """
    offset = 500.0 * items / ML_LATEST_ITEMS
    popularity = (np.arange(1, items + 1) + offset) ** -2.45
    return popularity / popularity.sum()


#: Rounds in which repeated (user, item) pairs are redrawn by popularity before uniformly.
POPULAR_ROUNDS = 50
#: Users with more ratings than this draw them without replacement at once (Gumbel top-k).
HEAVY_USER = 1_000


def _top_k_by_popularity(rng: np.random.Generator, counts: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Item codes for users with ``counts`` ratings each, drawn without replacement by popularity.

    Gumbel top-k (the k largest of log p_i + Gumbel noise are a sample
    without replacement with probabilities proportional to p), in chunks of
    users so that a chunk's keys hold about 2e7 numbers.
    """
    items = len(popularity)
    log_p = np.log(popularity)
    chunk = max(1, int(2e7 // items))
    out = []
    for a in range(0, len(counts), chunk):
        k = counts[a:a + chunk]
        keys = log_p[None, :] + rng.gumbel(size=(len(k), items))
        order = np.argsort(-keys, axis=1)
        out.append(order[np.arange(items)[None, :] < k[:, None]])  # row by row, each row's first k
    return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


def ml_latest_pairs(scale: float = 1.0, seed: int = 20261130) -> tuple[np.ndarray, np.ndarray, int]:
    """(user, item) codes of ml_latest_shape(scale), one row per distinct pair, rows in random order.

    No Python loop over rows; memory O(rows) (plus a bounded chunk): counts
    per user (:func:`_ml_latest_counts`); a user rates an item at most once,
    items drawn by popularity (:func:`ml_latest_popularity`) without
    replacement.  Heavy users (more than ``HEAVY_USER`` ratings, or a
    twentieth of the items at small scales) draw theirs by Gumbel top-k
    (:func:`_top_k_by_popularity`); the others draw with replacement, and a
    repeated (user, item) pair is dropped and redrawn by popularity until
    none is missing (uniformly after ``POPULAR_ROUNDS`` rounds; each round a
    sort of the int64 keys).  Every item is rated once first (a permutation
    spread over the other users' rows).  Returns user codes, item codes
    (int32) and the number of redraw rounds.
    """
    rng = np.random.default_rng(seed)
    users = max(20, round(ML_LATEST_USERS * scale))
    items = max(20, round(ML_LATEST_ITEMS * scale))
    # At tiny scales (below 0.005) 104 ratings a user would not fit in the items: at most a quarter of them.
    n = max(users * (ML_LATEST_MIN_PER_USER + 1), min(round(ML_LATEST_ROWS * scale), users * items // 4))
    counts = _ml_latest_counts(rng, users, items, n)
    popularity = ml_latest_popularity(items)
    heavy = counts > max(50, min(HEAVY_USER, items // 20))
    if counts[~heavy].sum() < items:  # the permutation needs rows of the other users
        heavy[:] = False
    light_users = np.flatnonzero(~heavy).astype(np.int64)
    user = np.repeat(light_users, counts[light_users])
    item = rng.choice(items, size=len(user), p=popularity)
    item[rng.choice(len(user), size=items, replace=False)] = rng.permutation(items)  # every item rated
    heavy_users = np.flatnonzero(heavy).astype(np.int64)
    heavy_keys = np.repeat(heavy_users, counts[heavy_users]) * items + _top_k_by_popularity(rng, counts[heavy_users], popularity)
    keys = np.unique(np.concatenate([user * items + item, heavy_keys]))  # sorted, distinct
    del user, item, heavy_keys
    rounds = 0
    while True:
        missing = counts - np.bincount(keys // items, minlength=users)
        if not missing.any():
            break
        rounds += 1
        extra_user = np.repeat(np.arange(users, dtype=np.int64), missing)
        redraw = rng.choice(items, size=len(extra_user), p=popularity) if rounds <= POPULAR_ROUNDS else rng.integers(0, items, size=len(extra_user))
        extra = np.unique(extra_user * items + redraw)
        at = np.minimum(np.searchsorted(keys, extra), len(keys) - 1)
        extra = extra[keys[at] != extra]  # not rated yet
        keys = np.sort(np.concatenate([keys, extra]), kind="stable")
        if rounds > 200:
            raise RuntimeError("ml_latest_pairs: redrawing repeated pairs did not finish")
    keys = keys[rng.permutation(len(keys))]
    return (keys // items).astype(np.int32), (keys % items).astype(np.int32), rounds


def ml_latest_shape(scale: float = 1.0) -> Problem:
    """A synthetic MovieLens ml-latest: 27.7 million ratings, 266,980 users x 53,883 items at scale 1.

    ``y ~ 1 + (1 | user) + (1 | item)``, the model MixedModels.jl fits to
    ml-latest (``rating ~ 1 + (1 | userId) + (1 | movieId)``).  Users rate
    at least 5 items, 104 on average, median 35, the top 1% above 1,100, the
    heaviest 27,006 (half the items), heavy-tailed (lognormal weights); item
    popularity is Zipf-like (:func:`ml_latest_popularity`); a user rates an
    item once (:func:`ml_latest_pairs`).  ``scale`` shrinks users, items and
    rows alike (ratings per user and per item keep their distributions,
    except that a user's share is capped at half the items).  y = 3.5 +
    b_user + b_item + e with sd 0.45, 0.5 and sigma 0.85, continuous.

    Examples
    --------
    >>> from benchmarks.problems import ml_latest_shape
    >>> small = ml_latest_shape(0.002)
    >>> small.n_levels(), small.n
    ({'user': 534, 'item': 108}, 14418)
    """
    user, item, _ = ml_latest_pairs(scale)
    users, items = int(user.max()) + 1, int(item.max()) + 1
    rng = np.random.default_rng(20261131)
    n = len(user)
    y = 3.5 + 0.45 * rng.standard_normal(users)[user] + 0.5 * rng.standard_normal(items)[item] + 0.85 * rng.standard_normal(n)
    data = pd.DataFrame({"y": y})
    data["user"] = pd.Categorical.from_codes(user, categories=np.arange(users))
    data["item"] = pd.Categorical.from_codes(item, categories=np.arange(items))
    return Problem(
        name="ml_latest_shape" if scale == 1 else f"ml_latest_shape@{scale:g}",
        description=f"simulated with MovieLens ml-latest's shape: {n:,} rows, {users:,} users x {items:,} items (Zipf-like popularity), (1 | user) + (1 | item)",
        data=data, response="y", fixed=[], groups=["user", "item"],
        random_effects="(1 | user) + (1 | item)", lme4_formula="y ~ 1 + (1 | user) + (1 | item)",
        source="simulated, seeds 20261130 (design) and 20261131 (response)",
    )


def _insteval_frame() -> tuple[pd.DataFrame, str]:
    """lme4's InstEval (s, d, dept, service, y): cached export from R, else mixedlm's copy."""
    cached = CACHE / "InstEval.csv"
    if not cached.exists() and shutil.which("Rscript"):
        CACHE.mkdir(parents=True, exist_ok=True)
        script = (
            "suppressMessages(library(lme4)); data(InstEval, package = 'lme4'); "
            f"write.csv(InstEval[, c('s', 'd', 'dept', 'service', 'y')], '{cached}', row.names = FALSE)"
        )
        subprocess.run(["Rscript", "-e", script], check=False, capture_output=True, timeout=300)
    if cached.exists():
        return pd.read_csv(cached, dtype=str), "lme4::InstEval (exported by Rscript to benchmarks/.cache)"
    try:
        import mixedlm

        frame = mixedlm.load_insteval()[["s", "d", "dept", "service", "y"]].astype(str)
        return frame, "lme4's InstEval as shipped by the mixedlm package"
    except Exception:
        return None, ""


def insteval(scale: float = 1.0) -> Problem:
    """lme4's InstEval: 73,421 ratings of 1,128 lecturers (d) by 2,972 students (s) in 14 departments.

    Model: ``y ~ 1 + (1 | s) + (1 | d) + (1 | dept)`` (crossed, REML).  When
    neither R with lme4 nor mixedlm can supply the data, a simulated data set
    of the same shape stands in (its source says so).
    """
    frame, source = _insteval_frame()
    if frame is None:
        rng = np.random.default_rng(20240604)
        n, ns, nd, ndept = 73_421, 2_972, 1_128, 14
        s, d = _group_codes(rng, n, ns), _group_codes(rng, n, nd)
        dept_of_d = np.concatenate([np.arange(ndept), rng.integers(0, ndept, nd - ndept)])
        y = 3.2 + 0.3 * rng.standard_normal(ns)[s] + 0.5 * rng.standard_normal(nd)[d] + 0.1 * rng.standard_normal(ndept)[dept_of_d[d]] + 1.2 * rng.standard_normal(n)
        frame = pd.DataFrame({"s": s, "d": d, "dept": dept_of_d[d], "y": np.clip(np.round(y), 1, 5)}).astype(str)
        source = "simulated with InstEval's shape (neither Rscript+lme4 nor mixedlm available)"
    if scale < 1:
        frame = frame.iloc[: int(len(frame) * scale)].reset_index(drop=True)
    data = pd.DataFrame({"y": frame["y"].astype(float)})
    for name in ("s", "d", "dept"):
        data[name] = pd.Categorical(frame[name])
    return Problem(
        name="insteval" if scale == 1 else f"insteval@{scale:g}",
        description=f"InstEval: {len(data):,} rows, students x lecturers x departments, crossed",
        data=data, response="y", fixed=[], groups=["s", "d", "dept"],
        random_effects="(1 | s) + (1 | d) + (1 | dept)", lme4_formula="y ~ 1 + (1 | s) + (1 | d) + (1 | dept)",
        source=source,
    )


# -- the registry -------------------------------------------------------------------

#: name -> function(scale) -> Problem, in the order of the table.
PROBLEMS: dict[str, Callable[[float], Problem]] = {
    **{case: (lambda scale, case=case: reference_case(case)) for case in REFERENCE_CASES},
    "insteval": insteval,
    "random_slope_400k": random_slope_400k,
    "crossed_500k": crossed_500k,
    "random_intercept_2m": random_intercept_2m,
    "crossed_600k_60k_30k": crossed_600k_60k_30k,
    "ml_latest_shape": ml_latest_shape,
}
#: Problems run only when named (``all`` leaves them out): lme4 and mixedlm do not finish them.
BY_NAME_ONLY = {"crossed_600k_60k_30k", "ml_latest_shape"}

#: --quick: the simulated problems shrunk to this fraction of their rows and groups.
QUICK_SCALE = 0.02


def get_problem(name: str, quick: bool = False) -> Problem:
    """The registered problem ``name`` (shrunk when ``quick`` and simulated)."""
    if name not in PROBLEMS:
        raise KeyError(f"unknown problem {name!r}; known: {', '.join(PROBLEMS)}")
    return PROBLEMS[name](QUICK_SCALE if quick else 1.0)
