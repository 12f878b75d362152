"""sklmm: linear mixed-effects models for scikit-learn, fitted as lme4 fits them."""

from ._inference.anova import AnovaTable, anova
from ._inference.emmeans import EMMeans, emmeans
from ._inference.bootstrap import BootstrapResult
from ._inference.bootstrap import parametric_bootstrap as bootstrap
from ._estimators.formula import lmer
from ._estimators.glm import MixedGLMRegressor, MixedLogisticRegression, MixedPoissonRegressor, glmer
from ._estimators.linear import MixedLinearRegressor
from ._model.bars import FormulaError
from ._report.plots import plot_caterpillar, plot_residuals
from ._estimators.scoring import make_conditional_scorer
from ._report.summary import ModelSummary
from ._warnings import ExactFitWarning, RankDeficientWarning, SeparationWarning, SingularFitWarning

__all__ = [
    "AnovaTable",
    "BootstrapResult",
    "EMMeans",
    "ExactFitWarning",
    "FormulaError",
    "MixedGLMRegressor",
    "MixedLinearRegressor",
    "MixedLogisticRegression",
    "MixedPoissonRegressor",
    "ModelSummary",
    "RankDeficientWarning",
    "SeparationWarning",
    "SingularFitWarning",
    "anova",
    "bootstrap",
    "emmeans",
    "glmer",
    "lmer",
    "make_conditional_scorer",
    "plot_caterpillar",
    "plot_residuals",
]
__version__ = "0.1.0"
