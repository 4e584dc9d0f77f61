"""imbalanced-learn's and scikit-learn's estimator check suites, with a tiny configuration."""

import pytest
from imblearn.utils.estimator_checks import estimator_checks_generator
from sklearn.utils.estimator_checks import parametrize_with_checks as sklearn_checks

from scld_aug import SCLDSampler

from .conftest import TINY

# The suites pass small dense float data; a tiny network keeps each check to a second.
ESTIMATOR = SCLDSampler(random_state=0, **TINY)


# imblearn's own parametrize_with_checks hands pytest a generator (deprecated in pytest);
# the same checks, listed.
IMBLEARN_CHECKS = list(estimator_checks_generator(ESTIMATOR, mark="xfail"))


@pytest.mark.parametrize(
    "estimator, check", IMBLEARN_CHECKS, ids=[c.func.__name__ for _, c in IMBLEARN_CHECKS]
)
def test_imblearn_estimator_checks(estimator, check):
    check(estimator)


@sklearn_checks([ESTIMATOR])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
