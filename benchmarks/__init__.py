"""sklmm's benchmarks: sklmm against lme4, statsmodels and mixedlm on the same problems.

A small package, run from the repository root:

``python -m benchmarks.run``
    every problem (:mod:`benchmarks.problems`) with every library
    (:mod:`benchmarks.adapters`): a table on stdout and CSV in
    ``benchmarks/results/``;
``python -m benchmarks.scaling``
    sklmm's fit time for n = 1e4 .. 1e7 at fixed structure against one
    least-squares pass over the same data;
``python -m benchmarks.plot``
    the figure for the docs (``docs/_static/benchmarks.png``);
``python benchmarks/optimizers.py``
    the choice of optimiser on the reference cases.

See ``benchmarks/README.md``.  Benchmarks print tables; they are never
timed assertions in the test suite.
"""
