"""Dask inputs as aligned partitions, and the tree reduction of per-partition results."""

from __future__ import annotations

import dask
import dask.dataframe as dd

#: Partial results combined per node of the tree reduction (as Dask's ``split_every``).
SPLIT_EVERY = 8


def as_frame(obj, argument: str, default_name: str):
    """A Dask DataFrame from a Dask DataFrame or Series (a Series becomes one named column)."""
    if isinstance(obj, dd.DataFrame):
        return obj
    if isinstance(obj, dd.Series):
        return obj.to_frame(name=default_name if obj.name is None else obj.name)
    raise TypeError(
        f"{argument} is a {type(obj).__name__}; with Dask input sklmm takes dask.dataframe "
        "DataFrames and Series (convert a Dask array with dask.dataframe.from_dask_array)"
    )


def aligned_partitions(collections: dict) -> list[dict]:
    """Per partition, a dict of delayed pandas objects, one per named collection (``None`` kept).

    Every collection must have as many partitions as the first; the
    partitions' row counts are checked where they are read (:func:`check_lengths`).
    """
    present = {name: obj for name, obj in collections.items() if obj is not None}
    counts = {name: obj.npartitions for name, obj in present.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(
            f"the Dask inputs have different numbers of partitions ({counts}); pass X, y, groups and "
            "sample_weight partitioned alike, e.g. as columns of one Dask DataFrame (df[columns], df['y'], ...)"
        )
    # Unoptimised graphs: X, y, groups taken from one frame then share its tasks (a
    # partition is read or generated once per pass, not once per argument), and no
    # optimisation fuses the partitions of one argument differently from another's.
    delayed = {name: obj.to_delayed(optimize_graph=False) for name, obj in present.items()}
    lengths = {name: len(parts) for name, parts in delayed.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"the Dask inputs have different numbers of partitions ({lengths}); pass them partitioned alike")
    n_parts = next(iter(lengths.values()))
    return [{name: (delayed[name][k] if name in delayed else None) for name in collections} for k in range(n_parts)]


def check_lengths(parts: dict) -> int:
    """The partition's row count; raises if its pieces (X, y, groups, ...) differ in length."""
    lengths = {name: len(obj) for name, obj in parts.items() if hasattr(obj, "__len__")}
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"a partition has different row counts in the Dask inputs ({lengths}); X, y, groups and "
            "sample_weight must be partitioned alike, row for row"
        )
    return next(iter(lengths.values()))


def tree_reduce(parts: list, combine, split_every: int = SPLIT_EVERY):
    """Delayed ``combine`` over ``parts`` in a tree: ``combine(list)`` -> one value; returns a Delayed."""
    node = dask.delayed(combine, pure=False)
    level = list(parts)
    if len(level) == 1:
        return node(level)
    while len(level) > 1:
        level = [node(level[i : i + split_every]) for i in range(0, len(level), split_every)]
    return level[0]
