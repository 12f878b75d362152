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


def aligned_partitions(collections: dict) -> list:
    """Per partition, the pandas pieces of the named collections (``None`` kept), as dask arguments.

    Each element, passed to a ``dask.delayed`` function, arrives as a dict
    ``name -> pandas DataFrame (or None)``.  Every collection must have as
    many partitions as the first; the partitions' row counts are checked
    where they are read (:func:`check_lengths`).

    When the collections come from one frame (``df[columns]``, ``df["y"]``:
    Dask's "co-aligned"), they are joined into one frame first, so Dask's
    optimiser reads each partition once and only the columns used (column
    projection into Parquet).  Otherwise partitions are matched by position,
    on unoptimised graphs: inputs that share tasks still compute them once
    per pass, and no optimisation fuses one argument's partitions differently
    from another's.
    """
    present = {name: obj for name, obj in collections.items() if obj is not None}
    counts = {name: obj.npartitions for name, obj in present.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(
            f"the Dask inputs have different numbers of partitions ({counts}); pass X, y, groups and "
            "sample_weight partitioned alike, e.g. as columns of one Dask DataFrame (df[columns], df['y'], ...)"
        )
    if len(present) > 1 and _co_aligned(list(present.values())):
        layout, combined = {}, None
        for name, frame in present.items():
            new = [f"{name}\x1f{j}" for j in range(frame.shape[1])]
            layout[name] = (new, list(frame.columns))
            renamed = frame.rename(columns=dict(zip(frame.columns, new)))
            combined = renamed if combined is None else combined.assign(**{column: renamed[column] for column in new})
        split = dask.delayed(_split, pure=True)
        return [split(part, layout, list(collections)) for part in combined.to_delayed()]
    delayed = {name: obj.to_delayed(optimize_graph=False) for name, obj in present.items()}
    lengths = {name: len(parts) for name, parts in delayed.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"the Dask inputs have different numbers of partitions ({lengths}); pass them partitioned alike")
    n_parts = next(iter(lengths.values()))
    return [{name: (delayed[name][k] if name in delayed else None) for name in collections} for k in range(n_parts)]


def _co_aligned(frames) -> bool:
    """Whether Dask's expression system sees the frames as blockwise from the same source."""
    try:
        from dask.dataframe.dask_expr._expr import are_co_aligned
    except ImportError:  # another Dask version: match partitions by position
        return False
    try:
        return bool(are_co_aligned(*[frame.expr for frame in frames]))
    except Exception:
        return False


def _split(part, layout: dict, names: list) -> dict:
    """The pieces of a joined partition, with their own column names."""
    out = dict.fromkeys(names)
    for name, (new, original) in layout.items():
        out[name] = part[new].set_axis(original, axis=1)
    return out


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
