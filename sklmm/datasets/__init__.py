"""Classic mixed-model datasets, shipped with sklmm as small CSV files.

Each loader returns a pandas DataFrame, or with ``return_X_y_groups=True`` the
triple ``(X, y, groups)`` ready for :meth:`MixedLinearRegressor.fit`: ``groups``
is a Series (named after the factor) when the data have one grouping factor,
as scikit-learn's group splitters (``GroupKFold``) take it, and a DataFrame
with one column per factor when they have several.
Grouping columns are read as strings (labels, not numbers).
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

__all__ = [
    "load_cbpp",
    "load_contraception",
    "load_dyestuff",
    "load_gasoline",
    "load_grouseticks",
    "load_pastes",
    "load_penicillin",
    "load_sleepstudy",
]


def _load(name: str, response: str, fixed: list[str], groups: list[str], return_X_y_groups: bool):
    with resources.files(__package__).joinpath("data", f"{name}.csv").open("r") as handle:
        frame = pd.read_csv(handle, dtype={g: str for g in groups})
    if not return_X_y_groups:
        return frame
    # One grouping factor: a Series (named after it), as scikit-learn's splitters
    # (GroupKFold) take groups; several: a DataFrame with one column each.
    group_data = frame[groups[0]].copy() if len(groups) == 1 else frame[groups].copy()
    return frame[fixed].copy(), frame[response].copy(), group_data


def load_sleepstudy(return_X_y_groups: bool = False):
    """Reaction times in a sleep-deprivation study (lme4's ``sleepstudy``).

    180 rows: the average reaction time (``Reaction``, ms) of 18 subjects
    (``Subject``) on each of 10 days (``Days``, 0-9) of sleep restriction to
    three hours a night.  The classic random intercept and slope example,
    ``Reaction ~ Days + (Days | Subject)``.

    Source: Belenky et al. (2003), "Patterns of performance degradation and
    restoration during sleep restriction and subsequent recovery", Journal of
    Sleep Research 12, 1-12; as distributed with R's lme4.

    Parameters
    ----------
    return_X_y_groups : bool, default=False
        Return ``(X, y, groups)``: X the ``Days`` column, y ``Reaction``,
        groups the ``Subject`` column (all pandas objects).

    Returns
    -------
    DataFrame, or tuple of (DataFrame, Series, Series)

    Examples
    --------
    >>> from sklmm.datasets import load_sleepstudy
    >>> load_sleepstudy().shape
    (180, 3)
    """
    return _load("sleepstudy", "Reaction", ["Days"], ["Subject"], return_X_y_groups)


def load_dyestuff(return_X_y_groups: bool = False):
    """Yield of dyestuff from 6 batches of an intermediate product (lme4's ``Dyestuff``).

    30 rows: ``Yield`` (grams of standard colour) of 5 preparations from each
    of 6 batches (``Batch``, A-F).  The one-way random intercept model
    ``Yield ~ 1 + (1 | Batch)``.

    Source: Davies (ed.) (1947), Statistical Methods in Research and
    Production, Table 6.3; as distributed with R's lme4.

    Parameters
    ----------
    return_X_y_groups : bool, default=False
        Return ``(X, y, groups)``; X has no columns (intercept-only model).

    Returns
    -------
    DataFrame, or tuple of (DataFrame, Series, Series)

    Examples
    --------
    >>> from sklmm.datasets import load_dyestuff
    >>> X, y, groups = load_dyestuff(return_X_y_groups=True)
    >>> X.shape, groups.nunique()
    ((30, 0), 6)
    """
    return _load("dyestuff", "Yield", [], ["Batch"], return_X_y_groups)


def load_penicillin(return_X_y_groups: bool = False):
    """Potency of penicillin samples on assay plates (lme4's ``Penicillin``).

    144 rows: inhibition-zone ``diameter`` (mm) for 6 penicillin samples
    (``sample``, A-F) each applied to 24 plates (``plate``, a-x).  A fully
    crossed design: ``diameter ~ 1 + (1 | plate) + (1 | sample)``.

    Source: Davies and Goldsmith (eds.) (1972), Statistical Methods in
    Research and Production, 4th ed.; as distributed with R's lme4.

    Parameters
    ----------
    return_X_y_groups : bool, default=False
        Return ``(X, y, groups)``; X has no columns, groups has ``plate`` and
        ``sample``.

    Returns
    -------
    DataFrame, or tuple of (DataFrame, Series, DataFrame)

    Examples
    --------
    >>> from sklmm.datasets import load_penicillin
    >>> load_penicillin().shape
    (144, 3)
    """
    return _load("penicillin", "diameter", [], ["plate", "sample"], return_X_y_groups)


def load_pastes(return_X_y_groups: bool = False):
    """Strength of paste from casks within delivery batches (lme4's ``Pastes``).

    60 rows: ``strength`` of paste, two assays from each of 3 casks (``cask``,
    a-c) in each of 10 delivery batches (``batch``, A-J).  Casks are nested in
    batches: ``strength ~ 1 + (1 | batch/cask)``.

    Source: Davies and Goldsmith (eds.) (1972), Statistical Methods in
    Research and Production, 4th ed.; as distributed with R's lme4.

    Parameters
    ----------
    return_X_y_groups : bool, default=False
        Return ``(X, y, groups)``; X has no columns, groups has ``batch`` and
        ``cask``.

    Returns
    -------
    DataFrame, or tuple of (DataFrame, Series, DataFrame)

    Examples
    --------
    >>> from sklmm.datasets import load_pastes
    >>> int(load_pastes().groupby("batch")["cask"].nunique().max())
    3
    """
    return _load("pastes", "strength", [], ["batch", "cask"], return_X_y_groups)


def load_gasoline(return_X_y_groups: bool = False):
    """Car ownership in 18 OECD countries, 1960-1978 (plm's ``Gasoline``).

    342 rows, one per country (``country``) and year: log cars per capita
    (``lcarpcap``), log real income per capita (``lincomep``), log real
    motor-gasoline price (``lrpmg``) and ``time`` (year - 1965).  The panel
    of the article sklmm grew from: ``lcarpcap ~ time + lincomep + lrpmg +
    (1 | country)``.

    Source: Baltagi and Griffin (1983), "Gasoline demand in the OECD: an
    application of pooling and testing procedures", European Economic Review
    22, 117-137; as distributed with R's plm.

    Parameters
    ----------
    return_X_y_groups : bool, default=False
        Return ``(X, y, groups)``: X ``time``, ``lincomep``, ``lrpmg``; y
        ``lcarpcap``; groups ``country``.

    Returns
    -------
    DataFrame, or tuple of (DataFrame, Series, Series)

    Examples
    --------
    >>> from sklmm.datasets import load_gasoline
    >>> load_gasoline()["country"].nunique()
    18
    """
    return _load("gasoline", "lcarpcap", ["time", "lincomep", "lrpmg"], ["country"], return_X_y_groups)


def load_cbpp(return_X_y_groups: bool = False):
    """Contagious bovine pleuropneumonia in 15 herds of zebu cattle (lme4's ``cbpp``).

    56 rows: new cases (``incidence``) among the herd's cattle (``size``) in
    each of four periods (``period``, with the dummies ``period2`` to
    ``period4``) for each herd (``herd``).  The binomial GLMM example,
    ``cbind(incidence, size - incidence) ~ period + (1 | herd)``.

    Source: Lesnoff et al. (2004), American Journal of Veterinary Research
    65, 1281-1289; as distributed with R's lme4.

    Parameters
    ----------
    return_X_y_groups : bool, default=False
        Return ``(X, y, groups)``: X the period dummies, y the proportion
        ``incidence / size`` (fit with ``sample_weight=size``), groups ``herd``.

    Returns
    -------
    DataFrame, or tuple of (DataFrame, Series, DataFrame)

    Examples
    --------
    >>> from sklmm.datasets import load_cbpp
    >>> load_cbpp().shape
    (56, 7)
    """
    frame = _load("cbpp", "incidence", [], ["herd", "period"], False)
    if not return_X_y_groups:
        return frame
    return frame[["period2", "period3", "period4"]].copy(), (frame["incidence"] / frame["size"]).rename("prop"), frame["herd"].copy()


def load_contraception(return_X_y_groups: bool = False):
    """Contraceptive use of 1,934 women in 60 districts of Bangladesh (mlmRev's ``Contraception``).

    Columns: ``use`` ("Y"/"N"), ``age`` (centred, years), ``age2`` its
    square, ``livch`` living children ("0", "1", "2", "3+", with dummies
    ``livch1``-``livch3``), ``urban`` ("Y"/"N", dummy ``urbanY``),
    ``district`` and ``woman``.  The binary GLMM example of Bates' lme4
    book, ``use ~ age + I(age^2) + urban + livch + (1 | district)``.

    Source: the 1988 Bangladesh Fertility Survey (Huq and Cleland 1990); as
    distributed with R's mlmRev.

    Parameters
    ----------
    return_X_y_groups : bool, default=False
        Return ``(X, y, groups)``: X the numeric columns ``age``, ``age2``,
        ``urbanY``, ``livch1``-``livch3``; y ``use``; groups ``district``.

    Returns
    -------
    DataFrame, or tuple of (DataFrame, Series, DataFrame)

    Examples
    --------
    >>> from sklmm.datasets import load_contraception
    >>> load_contraception()["use"].value_counts().to_dict()
    {'N': 1175, 'Y': 759}
    """
    frame = _load("contraception", "use", [], ["district", "woman", "livch", "urban"], False)
    if not return_X_y_groups:
        return frame
    return frame[["age", "age2", "urbanY", "livch1", "livch2", "livch3"]].copy(), frame["use"].copy(), frame["district"].copy()


def load_grouseticks(return_X_y_groups: bool = False):
    """Ticks on red grouse chicks (lme4's ``grouseticks``).

    403 chicks (``INDEX``) in 118 broods (``BROOD``) at 63 locations
    (``LOCATION``) in three years (``YEAR``: "95", "96", "97", dummies
    ``YEAR96``, ``YEAR97``): the number of ticks (``TICKS``) and the height
    of the location (``HEIGHT``, ``cHEIGHT`` centred).  The Poisson GLMM
    example ``TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | LOCATION)``.

    Source: Elston et al. (2001), Parasitology 122, 563-569; as distributed
    with R's lme4.

    Parameters
    ----------
    return_X_y_groups : bool, default=False
        Return ``(X, y, groups)``: X ``YEAR96``, ``YEAR97``, ``cHEIGHT``;
        y ``TICKS``; groups ``BROOD`` and ``LOCATION``.

    Returns
    -------
    DataFrame, or tuple of (DataFrame, Series, DataFrame)

    Examples
    --------
    >>> from sklmm.datasets import load_grouseticks
    >>> load_grouseticks().shape
    (403, 9)
    """
    frame = _load("grouseticks", "TICKS", [], ["INDEX", "BROOD", "LOCATION", "YEAR"], False)
    if not return_X_y_groups:
        return frame
    return frame[["YEAR96", "YEAR97", "cHEIGHT"]].copy(), frame["TICKS"].copy(), frame[["BROOD", "LOCATION"]].copy()
