"""sklmm: linear mixed-effects models for scikit-learn, fitted as lme4 fits them."""

from ._estimator import MixedLinearRegressor
from ._formula import FormulaError
from ._scoring import make_conditional_scorer
from ._warnings import ExactFitWarning, RankDeficientWarning, SingularFitWarning

__all__ = [
    "ExactFitWarning",
    "FormulaError",
    "MixedLinearRegressor",
    "RankDeficientWarning",
    "SingularFitWarning",
    "make_conditional_scorer",
]
__version__ = "0.1.0"
