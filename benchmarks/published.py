"""Peers' published figures for the large crossed models, as data (no imports).

``crossed_large`` reports its fits beside these, and the documentation's
benchmarks page (``docs/_ext/sklmm_docs.py``) puts them in the same table as
sklmm's measured runs.  Each entry names its source; nothing here is measured
on this machine.
"""

#: MixedModels.jl on MovieLens ml-latest, ``rating ~ 1 + (1 | userId) + (1 | movieId)``:
#: the first row of ``data/sizespeed.csv`` in Bates et al., *Embrace Uncertainty*,
#: chapter "A large-scale observational study" (``largescaleobserved.qmd``,
#: https://github.com/JuliaMixedModels/EmbraceUncertainty, commit 50974dd9); every
#: movie, the users with at least 5 ratings.  The shape ``problems.ml_latest_shape``
#: simulates.  Fitted on "compute servers with generous amounts of memory
#: (128 GiB/node) and numbers of compute cores (48/node)".
MIXEDMODELS_JL_ML_LATEST = dict(
    library="MixedModels.jl (published)",
    problem="ml_latest_shape",
    rows=27_716_748,
    levels={"user": 266_980, "item": 53_883},
    evaluations=20,
    fit_seconds=7_352.6,
    seconds_per_evaluation=303.9,
    model_gib=24.34,
    machine="48 cores, 128 GiB per node",
    source="Bates et al., Embrace Uncertainty, data/sizespeed.csv (commit 50974dd9)",
)

#: Published figures by the problem of ``benchmarks/problems.py`` they correspond to.
PUBLISHED = {"ml_latest_shape": [MIXEDMODELS_JL_ML_LATEST]}
