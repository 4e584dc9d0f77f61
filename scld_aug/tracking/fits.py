"""Logging a fitted sampler: parameters, loss curves, class counts, real-vs-synthetic
figure and MMD per type, and the generator as a model (``.models``).

:func:`log_fit` never raises for a failure of logging, plotting or a metric, and
:func:`fit_resample_logged` always returns the resampled data.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from scld_aug import plotting
from scld_aug.tracking import models
from scld_aug.tracking.transport import FIT_EXPERIMENT, RunLogger, metric_key

# Loss values per network are logged every `LOSS_LOG_EVERY` optimizer steps (as the mean
# over those steps): per-step curves of thousands of points add nothing but storage.
LOSS_LOG_EVERY = 10


def plot_embedding(
    X_real,
    y_real,
    X_synthetic,
    y_synthetic,
    path: str | os.PathLike,
    max_real: int = 5000,
    overwrite: bool = False,
) -> Path:
    """Real vs synthetic cells on the first two principal components of the real cells.

    Uses :class:`scld_aug.metrics.ReferenceEmbedding` (log-normalized counts, PCA fitted to
    real cells only), so synthetic cells are placed in the real cells' coordinates; drawn
    by :func:`scld_aug.plotting.real_vs_synthetic`, one panel per synthetic type. Takes any
    matrix ``fit_resample`` takes (arrays, lists of rows, sparse matrices, DataFrames);
    with a single gene there is one component, drawn against 0. An existing file at
    ``path`` is replaced only with ``overwrite=True``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X_real, y_real = rng.poisson(2.0, size=(100, 30)), np.array(["a"] * 80 + ["b"] * 20)
    >>> X_synthetic, y_synthetic = rng.poisson(2.0, size=(40, 30)), np.array(["b"] * 40)
    >>> plot_embedding(X_real, y_real, X_synthetic, y_synthetic, "embedding.png").name
    'embedding.png'
    """
    from scld_aug.data import as_csr, is_count_matrix
    from scld_aug.metrics import ReferenceEmbedding

    y_real = np.asarray(y_real).ravel()
    rng = np.random.default_rng(0)
    keep = np.sort(rng.permutation(len(y_real))[:max_real])
    real = as_csr(_take_rows(X_real, keep))
    embedding = ReferenceEmbedding(n_components=2, counts=is_count_matrix(real)).fit(real)
    Z_real = _two_columns(embedding.transform(real))
    Z_syn = _two_columns(embedding.transform(as_csr(_as_rows(X_synthetic))))
    y_syn = np.asarray(y_synthetic).ravel().astype(str)
    return plotting.real_vs_synthetic(
        Z_real,
        y_real[keep].astype(str),
        {"synthetic": (Z_syn, y_syn)},
        list(dict.fromkeys(y_syn.tolist())),
        path,
        axis_label="PC of real cells",
        overwrite=overwrite,
    )


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
    """Per augmented type, in the reference PCA space of the real cells: RBF-MMD, coverage
    and density of the real cells of the type, and conditional fidelity (the share a
    logistic regression of real cells calls that type).

    ``real`` and ``synthetic`` are CSR matrices (see :func:`scld_aug.data.as_csr`).
    """
    from sklearn.linear_model import LogisticRegression

    from scld_aug.data import is_count_matrix
    from scld_aug.metrics import (
        ReferenceEmbedding,
        conditional_fidelity,
        density_coverage,
        mmd_rbf,
    )

    if synthetic.shape[0] == 0:
        return {}
    embedding = ReferenceEmbedding(counts=is_count_matrix(real)).fit(real)
    Z_real, Z_syn = embedding.transform(real), embedding.transform(synthetic)
    metrics: dict[str, float] = {}
    mmd = {}
    for label in np.unique(y_syn):
        a = Z_real[np.flatnonzero(y == label)]
        b = Z_syn[np.flatnonzero(y_syn == label)][:2000]
        if len(a) >= 2 and len(b) >= 2:
            mmd[label] = metrics[f"mmd_{label}"] = mmd_rbf(a, b)
            scores = density_coverage(a, b)
            metrics[f"coverage_{label}"] = scores["coverage"]
            metrics[f"density_{label}"] = scores["density"]
    if mmd:
        metrics["mmd_mean"] = float(np.mean(list(mmd.values())))
    if len(np.unique(y)) >= 2:
        reference = LogisticRegression(max_iter=2000).fit(Z_real, y)
        recognised = conditional_fidelity(reference, Z_syn, y_syn)
        for label, row in recognised.items():
            metrics[f"recognised_{label}"] = row["recognised"]
        metrics["recognised_min"] = min(row["recognised"] for row in recognised.values())
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
    loss-curve and real-vs-synthetic embedding plots; when ``X_res, y_res`` are given, per
    type: MMD between real and synthetic cells, coverage and density of the real cells
    (:func:`scld_aug.metrics.density_coverage`) and conditional fidelity
    (``recognised_<type>``, the share a classifier of real cells calls that type; and
    ``recognised_min``); and, with ``log_model``, the
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
        kl_weight_used=generator.config.get("kl_weight", 0.0),
    )
    run.log_params(params)
    if step("logging the training data"):
        from scld_aug.data import fingerprint

        matrix = as_csr(_as_rows(X))
        run.log_training_data(
            "training cells",
            fingerprint(matrix, y)[:20],
            {"n_cells": len(y), "n_genes": int(matrix.shape[1]), "n_classes": len(set(y))},
        )
    final = {}
    if step("logging the loss curves"):
        for name, values in generator.history.items():
            if not values:
                continue
            binned, steps = plotting.bin_means(values, LOSS_LOG_EVERY)
            run.log_history(f"loss_{name}", binned, steps)
            final[f"final_loss_{name}"] = float(np.mean(values[-LOSS_LOG_EVERY:]))
    if fit_seconds is not None:
        final["fit_seconds"] = fit_seconds
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if generator.history and step("plotting the loss curves"):
            path = plotting.loss_curves(generator.history, tmp / "loss_curves.png")
            run.log_artifact(path, "plots")
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
                # Per-type metric names are sanitized; the tags keep the types' own names.
                types = np.unique(y_res[n:])
                run.set_tags({f"scld_aug.cell_type.{metric_key(t)}": str(t) for t in types})
                if step("plotting the embedding"):
                    path = plot_embedding(real, y, synthetic, y_res[n:], tmp / "embedding.png")
                    run.log_artifact(path, "plots")
        if step("logging metrics"):
            run.log_metrics(final)
        if log_model and step("logging the model"):
            models.log_model(run, sampler, tmp)


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

    Logged to a SQLite store in the working directory, its files beside it in
    ``mlflow_artifacts/`` (``mlflow ui --backend-store-uri sqlite:///mlflow.db`` shows it;
    creating the store takes a few seconds):

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
