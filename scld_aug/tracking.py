"""Optional MLflow tracking of sampler fits and tuning studies.

Tracking never decides whether work succeeds: every call to MLflow goes through
:class:`RunLogger`, which turns the first failure (unreachable server, server dying
mid-run, bad URI, a failed upload) into one clear warning, marks the run FAILED when it can
and stops logging, while the fit or study goes on and returns its result. :func:`log_fit`
does the same for its own plots and metrics: it never throws a fit away.

Where runs go: the ``tracking_uri`` argument, else ``MLFLOW_TRACKING_URI``, else a SQLite
store ``mlflow.db`` in the working directory (``mlflow ui --backend-store-uri
sqlite:///mlflow.db`` shows it).

Logged models are data only: the sampler file (tensors and JSON) and an ``MLmodel`` that
names the pyfunc loader module ``scld_aug.mlflow_flavor``, whose code comes from the
installed scld-aug package (the model's requirements pin its version). No code and no
pickle is stored with a model.

What is safe to load from an untrusted store. :func:`load_sampler` reads tensors and JSON
only: it downloads the model, refuses it unless its ``MLmodel`` names
``scld_aug.mlflow_flavor`` as the loader and the folder holds no code or pickle file (so
models of other flavors, models from code and pickled Python models are refused), and
reads the sampler file with ``torch.load(weights_only=True)``. It runs nothing that is
stored in the tracking store. ``mlflow.pyfunc.load_model`` on a model from a store you do
not trust is unsafe in general: MLflow imports whatever loader module the ``MLmodel`` names
(after putting any code stored with the model on ``sys.path``), and other flavors unpickle
objects, which runs code. Use :func:`load_sampler` for untrusted stores.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_URI = "sqlite:///mlflow.db"
FIT_EXPERIMENT = "scld-aug"
# Loss values per network are logged every `LOSS_LOG_EVERY` optimizer steps (as the mean
# over those steps): per-step curves of thousands of points add nothing but storage.
LOSS_LOG_EVERY = 10
MODEL_NAME = "generator"
# What an environment needs to load a logged model, besides scld-aug itself (pinned to the
# version that logged it by `_model_requirements`).
MODEL_REQUIREMENTS = ["torch>=2.2", "numpy", "scipy", "pandas", "scikit-learn"]
# How long the best-effort "mark the run FAILED" call may take against a tracking server.
FAIL_TIMEOUT = 5
# Model URI schemes that are resolved through the tracking server.
TRACKING_SCHEMES = ("runs", "models", "mlflow-artifacts")


def tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``MLFLOW_TRACKING_URI``, else a SQLite store in the working directory.

    Examples
    --------
    >>> tracking_uri("sqlite:///runs.db")
    'sqlite:///runs.db'
    """
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


_resolve_uri = tracking_uri  # for functions whose own argument is named tracking_uri


def metric_key(name: Any) -> str:
    """An MLflow-safe metric or parameter name (cell-type names may hold ``+`` or ``#``).

    Examples
    --------
    >>> metric_key("mmd_CD4+/CD25 T Reg")
    'mmd_CD4_/CD25 T Reg'
    """
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", str(name))[:250]


def _require_mlflow():
    try:
        import mlflow
    except ImportError as err:  # pragma: no cover - mlflow is a core dependency
        raise ImportError("MLflow tracking needs mlflow: pip install 'mlflow>=3.0,<3.18'.") from err
    return mlflow


def _check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Fail fast on an HTTP server that does not answer (MLflow itself retries for minutes).

    Any answer below 500 (even 401 or 404 from a proxy) counts as reachable.
    """
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as answer:
                answer.read()
        except urllib.error.HTTPError as err:
            if err.code >= 500:
                raise


@contextlib.contextmanager
def _quick_http(timeout: float = FAIL_TIMEOUT):
    """MLflow HTTP requests without retries and with a short timeout, inside the block."""
    names = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    previous = {name: os.environ.get(name) for name in names}
    os.environ.update(dict(zip(names, ("0", str(int(timeout))), strict=True)))
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class RunLogger:
    """One MLflow run, written through ``MlflowClient`` so the caller's active run is untouched.

    The first failing call warns once (naming the URI and the error) and disables the
    logger; later calls do nothing. ``active`` tells whether logging still works.

    Parameters
    ----------
    run_name : str
    experiment : str
        Experiment name; created when missing.
    uri : str or None
        Tracking URI (see :func:`tracking_uri`).
    parent : RunLogger or None
        Makes this run a nested child of ``parent``. Without it, the run nests under the
        caller's active MLflow run (and in its experiment) when that run uses the same
        tracking URI.
    tags : dict or None

    Examples
    --------
    With a store that cannot be used, the logger warns once and turns into a no-op, so the
    work around it goes on (a ``sqlite:///mlflow.db`` URI logs to a local file):

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     run = RunLogger("my run", uri="no-such-store://anywhere")
    ...     run.log_metrics({"macro_f1": 0.87})  # does nothing
    ...     run.end()
    >>> run.active, run.run_id, len(caught)
    (False, None, 1)
    """

    def __init__(
        self,
        run_name: str,
        experiment: str = FIT_EXPERIMENT,
        uri: str | None = None,
        parent: RunLogger | None = None,
        tags: dict | None = None,
    ) -> None:
        self.uri = tracking_uri(uri) if parent is None else parent.uri
        self.run_id: str | None = None
        self.client = None
        self.active = False
        self._warned = parent._warned if parent is not None else [False]
        if parent is not None and not parent.active:
            return
        try:
            mlflow = _require_mlflow()
            if parent is None:
                _check_reachable(self.uri)
                self.client = mlflow.MlflowClient(tracking_uri=self.uri)
                outer = mlflow.active_run()
                if outer is not None and mlflow.get_tracking_uri() == self.uri:
                    # Inside the caller's run: nest there, in its experiment.
                    parent_id, experiment_id = outer.info.run_id, outer.info.experiment_id
                else:
                    parent_id = None
                    found = self.client.get_experiment_by_name(experiment)
                    experiment_id = (
                        found.experiment_id
                        if found is not None
                        else self.client.create_experiment(experiment)
                    )
            else:
                self.client = parent.client
                experiment_id = parent.experiment_id
                parent_id = parent.run_id
            all_tags = {"mlflow.runName": run_name, **(tags or {})}
            if parent_id is not None:
                all_tags["mlflow.parentRunId"] = parent_id
            run = self.client.create_run(
                experiment_id, tags={k: str(v) for k, v in all_tags.items()}
            )
            self.experiment_id = experiment_id
            self.run_id = run.info.run_id
            self.active = True
        except Exception as err:  # noqa: BLE001 - tracking must never break the work
            self._fail(err, "creating the run")

    def _fail(self, err: BaseException, what: str | None = None) -> None:
        """Stop logging: mark the run FAILED (best effort, quickly) and warn once.

        ``what`` names the step that failed, for the warning.
        """
        was_active, self.active = self.active, False
        if was_active:
            self._mark_failed()
        if not self._warned[0]:
            self._warned[0] = True
            step = f" while {what}" if what else ""
            warnings.warn(
                f"MLflow tracking to {self.uri!r} failed{step} ({type(err).__name__}: {err}); "
                "the computation continues without tracking and its result is unaffected.",
                RuntimeWarning,
                stacklevel=4,
            )

    def _mark_failed(self) -> None:
        """End the run as FAILED so it is not left RUNNING; gives up quickly and silently.

        Against a tracking server: one request, no retries, a few seconds at most (none
        when the server does not answer its health check).
        """
        if self.client is None or self.run_id is None:
            return
        try:
            _check_reachable(self.uri, timeout=2.0)
            with _quick_http():
                self.client.set_terminated(self.run_id, "FAILED")
        except Exception:  # noqa: BLE001 - best effort: the first error was reported
            pass

    def _call(self, method: str, *args, **kwargs) -> None:
        if not self.active:
            return
        try:
            getattr(self.client, method)(self.run_id, *args, **kwargs)
        except Exception as err:  # noqa: BLE001
            self._fail(err, f"calling MlflowClient.{method}")

    def child(self, run_name: str, tags: dict | None = None) -> RunLogger:
        """A nested run under this one."""
        return RunLogger(run_name, parent=self, tags=tags)

    def log_params(self, params: dict) -> None:
        """Log parameters (names made safe by :func:`metric_key`, values as text)."""
        from mlflow.entities import Param

        items = [Param(metric_key(k), str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self._call("log_batch", params=items[start : start + 100])

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        """Log metrics at ``step``; None and non-finite values are left out."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(metric_key(k), float(v), now, int(step))
            for k, v in metrics.items()
            if v is not None and np.isfinite(v)
        ]
        for start in range(0, len(items), 1000):
            self._call("log_batch", metrics=items[start : start + 1000])

    def log_history(self, name: str, values: Iterable[float], steps: Iterable[int]) -> None:
        """A metric's whole curve in few requests."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(metric_key(name), float(v), now, int(s))
            for v, s in zip(values, steps, strict=True)
        ]
        for start in range(0, len(items), 1000):
            self._call("log_batch", metrics=items[start : start + 1000])

    def set_tags(self, tags: dict) -> None:
        """Set tags on the run (values as text)."""
        for key, value in tags.items():
            self._call("set_tag", key, str(value))

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Upload a file, optionally into the folder ``artifact_path`` of the run."""
        self._call("log_artifact", str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        """End the run with ``status`` (``"FINISHED"``, ``"FAILED"`` or ``"KILLED"``)."""
        self._call("set_terminated", status)


# ---------------------------------------------------------------------- sampler fits


def _binned(values: list[float], every: int) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=np.float64)
    n = len(values) // every * every
    if n == 0:
        return values, np.arange(len(values))
    means = values[:n].reshape(-1, every).mean(1)
    return means, np.arange(len(means)) * every + every - 1


def plot_losses(history: dict[str, list[float]], path: str | os.PathLike) -> Path:
    """Training-loss curves of the autoencoder, denoiser and latent classifier (one panel each).

    Examples
    --------
    >>> history = {"autoencoder": [3.1, 2.4, 2.2, 2.1], "denoiser": [1.0, 0.8, 0.7, 0.7]}
    >>> plot_losses(history, "losses.png").name
    'losses.png'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(history), figsize=(4 * len(history), 3.2), squeeze=False)
    for ax, (name, values) in zip(axes[0], history.items(), strict=True):
        ax.plot(values, lw=0.5, alpha=0.35, color="tab:blue", label="per step")
        smooth, steps = _binned(values, max(1, len(values) // 100))
        ax.plot(steps, smooth, color="tab:blue", label="smoothed")
        ax.set_title(name)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_embedding(
    X_real, y_real, X_synthetic, y_synthetic, path: str | os.PathLike, max_real: int = 5000
) -> Path:
    """Real vs synthetic cells on the first two principal components of the real cells.

    Uses :class:`scld_aug.metrics.ReferenceEmbedding` (log-normalized counts, PCA fitted to
    real cells only), so synthetic cells are placed in the real cells' coordinates. Takes
    any matrix ``fit_resample`` takes (arrays, lists of rows, sparse matrices, DataFrames);
    with a single gene there is one component, drawn against 0.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X_real, y_real = rng.poisson(2.0, size=(100, 30)), np.array(["a"] * 80 + ["b"] * 20)
    >>> X_synthetic, y_synthetic = rng.poisson(2.0, size=(40, 30)), np.array(["b"] * 40)
    >>> plot_embedding(X_real, y_real, X_synthetic, y_synthetic, "embedding.png").name
    'embedding.png'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scld_aug.data import as_csr, is_count_matrix
    from scld_aug.metrics import ReferenceEmbedding

    y_real = np.asarray(y_real).ravel()
    rng = np.random.default_rng(0)
    keep = np.sort(rng.permutation(len(y_real))[:max_real])
    real = as_csr(_take_rows(X_real, keep))
    counts = is_count_matrix(real)
    embedding = ReferenceEmbedding(n_components=2, counts=counts).fit(real)
    Z_real = _two_columns(embedding.transform(real))
    Z_syn = _two_columns(embedding.transform(as_csr(_as_rows(X_synthetic))))
    y_real = y_real[keep].astype(str)
    y_syn = np.asarray(y_synthetic).ravel().astype(str)
    types = list(dict.fromkeys(y_syn.tolist()))
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(*Z_real.T, s=3, c="lightgrey", label="real (other types)")
    colors = plt.get_cmap("tab10")
    for i, cell_type in enumerate(types):
        color = colors(i % 10)
        sel = y_real == cell_type
        ax.scatter(*Z_syn[y_syn == cell_type].T, s=6, color=color, alpha=0.5, marker="o")
        ax.scatter(
            *Z_real[sel].T, s=30, facecolors="none", edgecolors=color, linewidths=1.2,
            label=f"{cell_type}: real (rings) / synthetic (dots)",
        )  # fmt: skip
    ax.set_xlabel("PC 1 of real cells")
    ax.set_ylabel("PC 2 of real cells" if embedding.n_components_ > 1 else "(one component)")
    ax.set_title("Real vs synthetic cells")
    ax.legend(fontsize=7, loc="best", markerscale=1.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _two_columns(Z: np.ndarray) -> np.ndarray:
    """``Z`` with a zero column appended when it has a single one (one gene, two cells)."""
    return Z if Z.shape[1] >= 2 else np.column_stack([Z, np.zeros(len(Z))])


def _as_rows(X):
    """``X`` as something with ``shape`` that can be sliced by rows: sparse matrices and
    arrays as they are, DataFrames and lists of rows as arrays."""
    import scipy.sparse as sp

    if sp.issparse(X):
        return X if X.format in ("csr", "csc") else X.tocsr()
    if hasattr(X, "iloc"):
        return X.to_numpy()
    return np.asarray(X)


def _take_rows(X, rows: np.ndarray):
    """Rows ``rows`` of any container fit_resample takes or returns."""
    if hasattr(X, "iloc"):
        return X.iloc[rows].to_numpy()
    if isinstance(X, list):
        return np.asarray([X[i] for i in rows])
    return _as_rows(X)[rows]


def _rows(X, start: int):
    """Rows from ``start`` on, for any container fit_resample returns."""
    if hasattr(X, "iloc"):
        return X.iloc[start:].to_numpy()
    if isinstance(X, list):
        return np.asarray(X[start:])
    return _as_rows(X)[start:]


def _class_table(y, y_res) -> pd.DataFrame:
    before = pd.Series(np.asarray(y).ravel()).value_counts()
    after = pd.Series(np.asarray(y_res).ravel()).value_counts()
    table = pd.DataFrame({"real": before, "after": after}).fillna(0).astype(int)
    table["synthetic"] = table["after"] - table["real"]
    table.index = table.index.map(str)
    table.index.name = "cell_type"
    return table.sort_values("real", ascending=False)


def _fidelity(real, y, synthetic, y_syn) -> dict[str, float]:
    """Per augmented type: RBF-MMD between real and synthetic cells (reference PCA space).

    ``real`` and ``synthetic`` are CSR matrices (see :func:`scld_aug.data.as_csr`).
    """
    from scld_aug.data import is_count_matrix
    from scld_aug.metrics import ReferenceEmbedding, mmd_rbf

    if synthetic.shape[0] == 0:
        return {}
    embedding = ReferenceEmbedding(counts=is_count_matrix(real)).fit(real)
    metrics = {}
    for label in np.unique(y_syn):
        a = embedding.transform(real[np.flatnonzero(y == label)])
        b = embedding.transform(synthetic[np.flatnonzero(y_syn == label)][:2000])
        if len(a) >= 2 and len(b) >= 2:
            metrics[f"mmd_{label}"] = mmd_rbf(a, b)
    if metrics:
        metrics["mmd_mean"] = float(np.mean(list(metrics.values())))
    return metrics


def log_fit(
    sampler,
    X,
    y,
    X_res=None,
    y_res=None,
    *,
    run_name: str | None = None,
    experiment: str = FIT_EXPERIMENT,
    tracking_uri: str | None = None,
    log_model: bool = True,
    fit_seconds: float | None = None,
    tags: dict | None = None,
) -> str | None:
    """Log a fitted :class:`~scld_aug.SCLDSampler` to MLflow.

    Logs all constructor parameters; the training losses of each network (curves binned
    every ``LOSS_LOG_EVERY`` steps, and final values); the per-class cell counts table;
    loss-curve and real-vs-synthetic embedding plots; per-type MMD between real and
    synthetic cells (when ``X_res, y_res`` are given); and, with ``log_model``, the
    generator as an MLflow model that :func:`load_sampler` (or ``mlflow.pyfunc``) loads
    back to generate cells.

    Never raises for a failure of logging, plotting or a metric: it warns once (a
    ``RuntimeWarning`` naming the step that failed), ends the run as FAILED when it can,
    and returns None.

    Parameters
    ----------
    sampler : SCLDSampler
        Fitted.
    X, y : array-like
        The data it was fitted on (any input ``fit_resample`` takes: arrays, lists of
        rows, sparse matrices, DataFrames).
    X_res, y_res : array-like or None
        Output of ``fit_resample`` (original rows first, then synthetic rows).
    run_name, experiment, tracking_uri : str
        Where to log (see :func:`tracking_uri`).
    log_model : bool, default=True
    fit_seconds : float or None
        Wall time of the fit, logged as a metric when given.
    tags : dict or None

    Returns
    -------
    run_id : str or None
        None when tracking failed (a warning says why).

    Raises
    ------
    sklearn.exceptions.NotFittedError
        When ``sampler`` is not fitted (checked before anything is logged).

    Examples
    --------
    Log a fit to a SQLite store in the working directory, then load the logged generator
    back (``mlflow ui --backend-store-uri sqlite:///mlflow.db`` shows the run):

    >>> import mlflow, numpy as np
    >>> from scld_aug import SCLDSampler
    >>> from scld_aug.tracking import load_sampler, log_fit
    >>> X = np.random.default_rng(0).poisson(2.0, size=(60, 30))
    >>> y = np.array(["common"] * 50 + ["rare"] * 10)
    >>> sampler = SCLDSampler(random_state=0, autoencoder_steps=20, diffusion_steps=20,
    ...                       classifier_steps=10, n_sampling_steps=5).fit(X, y)
    >>> run_id = log_fit(sampler, X, y, tracking_uri="sqlite:///mlflow.db")
    >>> client = mlflow.MlflowClient("sqlite:///mlflow.db")
    >>> client.get_run(run_id).data.params["guidance_scale"]
    '2.0'
    >>> model = client.search_logged_models(
    ...     experiment_ids=[client.get_run(run_id).info.experiment_id])[0]
    >>> loaded = load_sampler(f"models:/{model.model_id}", tracking_uri="sqlite:///mlflow.db")
    >>> np.array_equal(loaded.generate(5, "rare"), sampler.generate(5, "rare"))
    True
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(sampler, "generator_")
    run = RunLogger(
        run_name or "SCLDSampler fit",
        experiment,
        tracking_uri,
        tags={"scld_aug.kind": "sampler_fit", **(tags or {})},
    )
    if not run.active:
        return None
    current = ["logging the fit"]

    def step(what: str) -> bool:
        """Name the step about to run (for the warning); whether logging still works."""
        current[0] = what
        return run.active

    try:
        _log_fit_steps(run, step, sampler, X, y, X_res, y_res, log_model, fit_seconds)
    except Exception as err:  # noqa: BLE001 - a fit is never thrown away for its logging
        run._fail(err, current[0])
        return None
    run.end()
    return run.run_id if run.active else None


def _log_fit_steps(run, step, sampler, X, y, X_res, y_res, log_model, fit_seconds) -> None:
    from scld_aug.data import as_csr

    generator = sampler.generator_
    y = np.asarray(y).ravel()
    step("logging parameters")
    params = dict(sampler.get_params(deep=False))
    params.update(
        n_cells=len(y),
        n_genes=sampler.n_features_in_,
        n_classes=len(generator.classes),
        likelihood_used=sampler.likelihood_,
        device_used=str(sampler.device_),
        generator_source=getattr(sampler, "generator_source_", "unknown"),
        modelled_genes=len(generator.panel.genes),
    )
    run.log_params(params)
    final = {}
    if step("logging the loss curves"):
        for name, values in generator.history.items():
            if not values:
                continue
            binned, steps = _binned(values, LOSS_LOG_EVERY)
            run.log_history(f"loss_{name}", binned, steps)
            final[f"final_loss_{name}"] = float(np.mean(values[-LOSS_LOG_EVERY:]))
    if fit_seconds is not None:
        final["fit_seconds"] = fit_seconds
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if generator.history and step("plotting the loss curves"):
            run.log_artifact(plot_losses(generator.history, tmp / "loss_curves.png"), "plots")
        if X_res is not None and y_res is not None and step("writing the class counts"):
            y_res = np.asarray(y_res).ravel()
            table = _class_table(y, y_res)
            table.to_csv(tmp / "class_counts.csv")
            run.log_artifact(tmp / "class_counts.csv")
            final["n_synthetic"] = int(table["synthetic"].sum())
            n = len(y)
            if len(y_res) > n and step("computing the real-vs-synthetic MMD"):
                real, synthetic = as_csr(_as_rows(X)), as_csr(_rows(X_res, n))
                final.update(_fidelity(real, y, synthetic, y_res[n:]))
                if step("plotting the embedding"):
                    path = plot_embedding(real, y, synthetic, y_res[n:], tmp / "embedding.png")
                    run.log_artifact(path, "plots")
        if step("logging metrics"):
            run.log_metrics(final)
        if log_model and step("logging the model"):
            _log_model(run, sampler, tmp)


def _model_requirements() -> list[str]:
    """Requirements of a logged model: this very version of scld-aug, and its core needs."""
    # Imported here, not at module level: no import cycle with scld_aug/__init__.py.
    from scld_aug import __version__

    return [f"scld-aug=={__version__}", *MODEL_REQUIREMENTS]


def _log_model(run: RunLogger, sampler, tmp: Path) -> None:
    """The sampler (generator included) as an MLflow pyfunc model of the scld-aug flavor.

    The model is data only: the sampler file in ``data/`` and an ``MLmodel`` that names
    ``scld_aug.mlflow_flavor`` as the loader module, imported from the installed package
    on load (MLflow's custom-flavor mechanism, ``loader_module`` + ``data_path``). No code
    and no pickle is stored.

    The model folder is written with ``mlflow.pyfunc.save_model`` and uploaded to a logged
    model created for our run, rather than with ``mlflow.pyfunc.log_model``, which writes
    the store's artifact location (an absolute local path for a local store) into
    ``MLmodel`` and links the model to the caller's active run, if any.
    """
    import mlflow
    from mlflow.entities import LoggedModelStatus
    from mlflow.models import Model, infer_signature

    from scld_aug.data import plain_scalar
    from scld_aug.mlflow_flavor import LOADER_MODULE, SAMPLER_FILE

    data = tmp / "model_data"
    data.mkdir()
    path = data / SAMPLER_FILE
    with warnings.catch_warnings():
        # A callable sampling_strategy cannot be stored; generating does not need it.
        warnings.filterwarnings("ignore", message="Parameter sampling_strategy=")
        sampler.save(path)
    example = pd.DataFrame(
        {"cell_type": [plain_scalar(sampler.generator_.classes[0])], "n_cells": [10]}
    )
    model = run.client.create_logged_model(
        experiment_id=run.experiment_id, name=MODEL_NAME, source_run_id=run.run_id
    )
    try:
        with _quiet_mlflow():
            folder = tmp / "model"
            mlflow.pyfunc.save_model(
                path=folder,
                loader_module=LOADER_MODULE,
                data_path=str(path),
                mlflow_model=Model(
                    run_id=run.run_id, model_id=model.model_id, model_uuid=model.model_id
                ),
                signature=infer_signature(example),
                pip_requirements=_model_requirements(),
            )
            run.client.log_model_artifacts(model.model_id, str(folder))
        run.client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    except Exception:
        _mark_model_failed(run, model.model_id)
        raise
    run.set_tags({"scld_aug.model_uri": f"models:/{model.model_id}"})
    run.client.log_outputs(run.run_id, [_model_output(model.model_id)])


def _mark_model_failed(run: RunLogger, model_id: str) -> None:
    """Best effort, quickly: a logged model whose upload failed is FAILED, not PENDING."""
    try:
        from mlflow.entities import LoggedModelStatus

        _check_reachable(run.uri, timeout=2.0)
        with _quick_http():
            run.client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)
    except Exception:  # noqa: BLE001 - the error that matters is reported by the caller
        pass


@contextlib.contextmanager
def _quiet_mlflow():
    """No progress bars or notices from MLflow while it stores a model."""
    previous = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = previous


def _model_output(model_id: str):
    from mlflow.entities import LoggedModelOutput

    return LoggedModelOutput(model_id=model_id, step=0)


def load_sampler(
    model_uri: str | os.PathLike, device: str = "auto", tracking_uri: str | None = None
):
    """Load a sampler logged by :func:`log_fit`, ready to ``generate`` cells.

    Safe for models from a store you do not trust: runs no code stored with the model and
    unpickles nothing. The model folder is downloaded, refused unless it is an scld-aug
    model holding data only (``scld_aug.mlflow_flavor.check_model_dir``), and its
    sampler file is read with ``torch.load(weights_only=True)``.

    Parameters
    ----------
    model_uri : str or path-like
        ``models:/<model_id>``, ``runs:/<run_id>/generator``, or a local folder (a
        downloaded copy of such a model).
    device : str, default="auto"
    tracking_uri : str or None
        See :func:`tracking_uri`.

    Raises
    ------
    ConnectionError
        Within seconds, when ``model_uri`` needs a tracking server that does not answer.
    ValueError
        When the model is not an scld-aug model or holds code or pickle files.

    See :func:`log_fit` for an example that logs a sampler and loads it back.
    """
    mlflow = _require_mlflow()
    from scld_aug.mlflow_flavor import load_model_dir

    uri = _resolve_uri(tracking_uri)
    model_uri = str(model_uri)
    parsed = urllib.parse.urlparse(model_uri)
    if parsed.scheme in TRACKING_SCHEMES and not parsed.netloc:
        try:
            _check_reachable(uri)
        except Exception as err:  # noqa: BLE001 - reported as one clear error
            raise ConnectionError(
                f"Cannot load {model_uri!r}: the MLflow tracking server {uri!r} is "
                f"unreachable ({type(err).__name__}: {err}). Check the tracking URI and "
                "that the server is running."
            ) from err
    with tempfile.TemporaryDirectory() as tmp:
        with _using_uri(uri), _quiet_mlflow():
            local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        return load_model_dir(local, device=device, name=model_uri)


@contextlib.contextmanager
def _using_uri(uri: str):
    """MLflow's fluent API with ``uri``, restoring the caller's tracking URI afterwards."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def fit_resample_logged(
    sampler,
    X,
    y,
    *,
    run_name: str | None = None,
    experiment: str = FIT_EXPERIMENT,
    tracking_uri: str | None = None,
    log_model: bool = True,
):
    """``sampler.fit_resample(X, y)``, then :func:`log_fit`; returns ``(X_res, y_res, run_id)``.

    The resampled data are computed before anything is sent to MLflow, and they are always
    returned: a failure of tracking (or of a plot or metric of the run) costs nothing but
    a warning (``run_id`` is then None).

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from scld_aug import SCLDSampler
    >>> X = np.random.default_rng(0).poisson(2.0, size=(60, 30))
    >>> y = np.array(["common"] * 50 + ["rare"] * 10)
    >>> sampler = SCLDSampler(random_state=0, autoencoder_steps=20, diffusion_steps=20,
    ...                       classifier_steps=10, n_sampling_steps=5)

    Logged to a SQLite store in the working directory (``mlflow ui --backend-store-uri
    sqlite:///mlflow.db`` shows it; creating the store takes a few seconds):

    >>> X_res, y_res, run_id = fit_resample_logged(
    ...     sampler, X, y, tracking_uri="sqlite:///mlflow.db")  # doctest: +SKIP

    A store that cannot be used costs a warning, never the result:

    >>> with warnings.catch_warnings(record=True):
    ...     warnings.simplefilter("always")
    ...     X_res, y_res, run_id = fit_resample_logged(
    ...         sampler, X, y, tracking_uri="no-such-store://anywhere")
    >>> X_res.shape, run_id
    ((100, 30), None)
    """
    start = time.perf_counter()
    X_res, y_res = sampler.fit_resample(X, y)
    seconds = time.perf_counter() - start
    try:
        run_id = log_fit(
            sampler,
            X,
            y,
            X_res,
            y_res,
            run_name=run_name,
            experiment=experiment,
            tracking_uri=tracking_uri,
            log_model=log_model,
            fit_seconds=seconds,
        )
    except Exception as err:  # noqa: BLE001 - the resampled data are never thrown away
        warnings.warn(
            f"Logging the fit to MLflow failed ({type(err).__name__}: {err}); the resampled "
            "data are returned without a run.",
            RuntimeWarning,
            stacklevel=2,
        )
        run_id = None
    return X_res, y_res, run_id
