"""Inference on fitted models: intervals, profiles, bootstrap, likelihood-ratio
tests, conditional variances and simulation."""
