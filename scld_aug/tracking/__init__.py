"""Optional MLflow tracking of sampler fits and tuning studies (``pip install
"scld-aug[tracking]"``; MLflow is imported when something is logged).

Tracking never decides whether work succeeds: the first failure warns once, marks the run
FAILED when it can and stops logging, while the fit or study goes on and returns its
result. The package has one module per concern:

* ``scld_aug.tracking.transport``: where runs go (:func:`tracking_uri`) and
  :class:`RunLogger`, through which every call to MLflow goes;
* ``scld_aug.tracking.fits``: :func:`log_fit` and :func:`fit_resample_logged`;
* ``scld_aug.tracking.models``: the generator as a data-only MLflow model, and
  :func:`load_sampler`, which loads one safely (see ``scld_aug.tracking.models`` for
  what is safe to load from an untrusted store);
* ``scld_aug.tracking.flavor``: the pyfunc loader module a logged model names;
* ``scld_aug.tracking.studies``: the runs of a ``tune_guidance`` study;
* ``scld_aug.tracking.benchmarks``: the runs of a finished benchmark (``scld-aug benchmark``).
"""

from scld_aug.tracking.fits import fit_resample_logged, log_fit, plot_embedding
from scld_aug.tracking.models import load_sampler
from scld_aug.tracking.transport import RunLogger, metric_key, tracking_uri

__all__ = [
    "RunLogger",
    "fit_resample_logged",
    "load_sampler",
    "log_fit",
    "metric_key",
    "plot_embedding",
    "tracking_uri",
]
