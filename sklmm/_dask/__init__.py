"""Exact fits on Dask collections: the one pass over the rows as a map-reduce.

sklmm's engine reads the rows once, to form the cross-product blocks of
[Z X y]' W [Z X y] (:mod:`sklmm._engine.blocks`); everything after works on
those blocks, whose size depends on the numbers of levels and fixed effects,
not on n.  On a Dask collection that pass runs where the partitions live:

1. a first, cheap pass over y, the weights and the grouping columns
   (:mod:`sklmm._dask.fit`): row counts, validation, the weighted mean of y
   (for centring) and every grouping factor's levels, so that all partitions
   code a level the same way (global codes);
2. the blocks of each partition on its worker, holding only the levels its
   rows have (compact blocks, so a task's memory follows its rows, not the
   number of levels), summed level by level in a tree reduction;
3. the optimisation and the conditional modes on the client, from the
   reduced blocks (:meth:`ProfiledDeviance.from_blocks`).

No n-sized array reaches the client.  Formula models (``formula=``,
:func:`sklmm.lmer` on a Dask DataFrame) learn their design from the first
pass as well (:mod:`sklmm._dask.formula`).  ``predict`` and ``score`` map over the
partitions lazily (:mod:`sklmm._dask.predict`).

This package is imported only when Dask input arrives (``dask[dataframe]``
is the optional extra ``sklmm[dask]``); :func:`is_dask_input` itself imports
nothing from Dask.
"""

from __future__ import annotations


def is_dask_input(*objects) -> bool:
    """Whether any argument is a Dask collection (the ``__dask_graph__`` protocol)."""
    return any(obj is not None and hasattr(type(obj), "__dask_graph__") for obj in objects)
