"""sklmm: linear mixed-effects models for scikit-learn, fitted as lme4 fits them."""

from ._estimator import MixedLinearRegressor
from ._formula import FormulaError
from ._warnings import ExactFitWarning, RankDeficientWarning, SingularFitWarning

__all__ = [
    "ExactFitWarning",
    "FormulaError",
    "MixedLinearRegressor",
    "RankDeficientWarning",
    "SingularFitWarning",
]
__version__ = "0.1.0"
