"""The numbers: cross-product blocks (first term, rest, cross), the blocked
Cholesky factor, the profiled criterion, the optimiser and the fit pipeline.
Takes arrays, never an estimator."""
