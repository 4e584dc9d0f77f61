"""imbalanced-learn's and scikit-learn's estimator check suites, with a tiny configuration."""

from imblearn.utils.estimator_checks import parametrize_with_checks as imblearn_checks
from sklearn.utils.estimator_checks import parametrize_with_checks as sklearn_checks

from scld_aug import SCLDSampler

from .conftest import TINY

# The suites pass small dense float data; a tiny network keeps each check to a second.
ESTIMATOR = SCLDSampler(random_state=0, **TINY)


@imblearn_checks([ESTIMATOR])
def test_imblearn_estimator_checks(estimator, check):
    check(estimator)


@sklearn_checks([ESTIMATOR])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
