"""The scikit-learn classes and scorers: glue between the user's data and the engine."""
