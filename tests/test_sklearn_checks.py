"""scikit-learn's estimator checks, with no expected failures.

With ``groups=None`` (which is how the checks call ``fit``) the model has no
random effects: the linear model is fitted by weighted least squares, the
GLMMs as the plain GLM (IRLS).
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sklmm import MixedGLMRegressor, MixedLinearRegressor, MixedLogisticRegression


@parametrize_with_checks(
    [
        MixedLinearRegressor(),
        MixedLinearRegressor(reml=False, fit_intercept=False),
        MixedLogisticRegression(),
        MixedGLMRegressor(family="poisson"),
    ]
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
