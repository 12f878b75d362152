"""Subprocess entry point: ``python -m benchmarks.adapters._worker LIBRARY FOLDER REPEAT BUDGET``.

Loads the problem saved in FOLDER, warms the library up on a small fit, fits
up to REPEAT times (fewer once the fits took BUDGET seconds) and prints the :class:`~benchmarks.adapters.Result` as one JSON
line on stdout.  An exception becomes a result with status ``error``.
"""

from __future__ import annotations

import os
import resource
import sys
import traceback
import warnings
from pathlib import Path

# Measure another sklmm source tree (``run.py --sklmm-src``): it must come
# before the repository root on the path, before anything imports sklmm.
if os.environ.get("SKLMM_BENCH_SRC"):
    sys.path.insert(0, os.environ["SKLMM_BENCH_SRC"])

from . import Result, adapter  # noqa: E402
from ..problems import Problem  # noqa: E402


def main(library: str, folder: str, repeat: int, budget: float) -> None:
    warnings.simplefilter("ignore")
    problem = Problem.load(Path(folder))
    problem.extra["folder"] = folder
    module = adapter(library)
    try:
        module.warm_up()
        result = module.fit(problem, repeat=repeat, budget=budget)
    except Exception as error:  # one row of the table, not the whole run
        last = traceback.format_exc().strip().splitlines()[-1]
        result = Result(library=library, problem=problem.name, n=problem.n, status="error", message=f"{type(error).__name__}: {last}"[:500])
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Rscript
    result.peak_mb = max(own, children) / 1024.0
    print(result.to_json(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
