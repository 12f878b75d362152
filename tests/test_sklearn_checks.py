"""scikit-learn's estimator checks, with no expected failures.

With ``groups=None`` (which is how the checks call ``fit``) the model has no
random effects and is fitted by weighted least squares.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sklmm import MixedLinearRegressor


@parametrize_with_checks([MixedLinearRegressor(), MixedLinearRegressor(reml=False, fit_intercept=False)])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
