"""sklmm: linear mixed-effects models for scikit-learn, fitted as lme4 fits them."""

from ._anova import AnovaTable, anova
from ._bootstrap import BootstrapResult
from ._bootstrap import parametric_bootstrap as bootstrap
from ._estimator import MixedLinearRegressor
from ._formula import FormulaError
from ._plots import plot_caterpillar, plot_residuals
from ._scoring import make_conditional_scorer
from ._summary import ModelSummary
from ._warnings import ExactFitWarning, RankDeficientWarning, SingularFitWarning

__all__ = [
    "AnovaTable",
    "BootstrapResult",
    "ExactFitWarning",
    "FormulaError",
    "MixedLinearRegressor",
    "ModelSummary",
    "RankDeficientWarning",
    "SingularFitWarning",
    "anova",
    "bootstrap",
    "make_conditional_scorer",
    "plot_caterpillar",
    "plot_residuals",
]
__version__ = "0.1.0"
