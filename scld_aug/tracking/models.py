"""The generator as an MLflow model, data only, and loading it back safely.

A logged model is the sampler file (tensors and JSON) and an ``MLmodel`` that names the
pyfunc loader module ``scld_aug.tracking.flavor``, whose code comes from the installed
scld-aug package (the model's requirements pin its version). No code and no pickle is
stored with a model.

What is safe to load from an untrusted store. :func:`load_sampler` reads tensors and JSON
only: it downloads the model (a local folder is read in place), refuses it unless its
``MLmodel`` names ``scld_aug.tracking.flavor`` as the loader and the folder holds no code
or pickle file and no symbolic link (so models of other flavors, models from code and
pickled Python models are refused, and no file outside the model is read), and reads the
sampler file with ``torch.load(weights_only=True)``. It runs nothing that is stored in the
tracking store. ``mlflow.pyfunc.load_model`` on a model from a store you do not trust is
unsafe in general: MLflow imports whatever loader module the ``MLmodel`` names (after
putting any code stored with the model on ``sys.path``), and other flavors unpickle
objects, which runs code. Use :func:`load_sampler` for untrusted stores.
"""

from __future__ import annotations

import os
import tempfile
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

import pandas as pd

from scld_aug.tracking.transport import (
    RunLogger,
    _check_reachable,
    _quick_http,
    _quiet_mlflow,
    _require_mlflow,
    _resolve_uri,
    _using_uri,
    check_local_store,
    local_database,
)

MODEL_NAME = "generator"
# What an environment needs to load a logged model, besides scld-aug itself (pinned to the
# version that logged it by `_model_requirements`).
MODEL_REQUIREMENTS = ["torch>=2.4", "numpy", "scipy", "pandas", "scikit-learn"]
# Model URI schemes that are resolved through the tracking server.
TRACKING_SCHEMES = ("runs", "models", "mlflow-artifacts")


def _model_requirements() -> list[str]:
    """Requirements of a logged model: this very version of scld-aug, and its core needs."""
    # Imported here, not at module level: no import cycle with scld_aug/__init__.py.
    from scld_aug import __version__

    return [f"scld-aug=={__version__}", *MODEL_REQUIREMENTS]


def log_model(run: RunLogger, sampler, tmp: Path) -> None:
    """The sampler (generator included) as an MLflow pyfunc model of the scld-aug flavor.

    The model is data only: the sampler file in ``data/`` and an ``MLmodel`` that names
    ``scld_aug.tracking.flavor`` as the loader module, imported from the installed package
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
    from scld_aug.tracking.flavor import LOADER_MODULE, SAMPLER_FILE

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


def _model_output(model_id: str):
    from mlflow.entities import LoggedModelOutput

    return LoggedModelOutput(model_id=model_id, step=0)


def load_sampler(
    model_uri: str | os.PathLike, device: str = "auto", tracking_uri: str | None = None
):
    """Load a sampler logged by :func:`log_fit`, ready to ``generate`` cells.

    Safe for models from a store you do not trust: runs no code stored with the model and
    unpickles nothing. The model folder is downloaded, refused unless it is an scld-aug
    model holding data only (``scld_aug.tracking.flavor.check_model_dir``), and its
    sampler file is read with ``torch.load(weights_only=True)``.

    A local folder (or ``file:`` URI) is read in place, never copied through MLflow, whose
    copy follows symbolic links: nothing outside the folder is read, and a folder that holds
    a link is refused. From a tracking store, the model is downloaded to a temporary folder
    first (MLflow refuses links that lead out of a local store's model folder).

    Parameters
    ----------
    model_uri : str or path-like
        ``models:/<model_id>``, ``runs:/<run_id>/generator``, or a local folder (a
        downloaded copy of such a model) or its ``file:`` URI.
    device : str, default="auto"
    tracking_uri : str or None
        See :func:`tracking_uri`.

    Raises
    ------
    ConnectionError
        Within seconds, when ``model_uri`` needs a tracking server that does not answer,
        or a local SQLite store that cannot be read (no database there, a folder, ...).
    FileNotFoundError
        When the local folder ``model_uri`` does not exist.
    ValueError
        When the model is not an scld-aug model, holds code or pickle files, or holds a
        symbolic link.

    See :func:`log_fit` for an example that logs a sampler and loads it back.
    """
    mlflow = _require_mlflow()
    from scld_aug.tracking.flavor import load_model_dir

    uri = _resolve_uri(tracking_uri)
    folder = _local_folder(model_uri)
    if folder is not None:
        if not folder.exists():
            raise FileNotFoundError(f"No model folder at {str(folder)!r}.")
        return load_model_dir(folder, device=device, name=str(model_uri))
    model_uri = str(model_uri)
    parsed = urllib.parse.urlparse(model_uri)
    if parsed.scheme in TRACKING_SCHEMES and not parsed.netloc:
        database = local_database(uri)
        if database is not None:
            # Before MLflow opens it: it retries a database it cannot open for ~100 s.
            check_local_store(database, write=False)
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


def _local_folder(model_uri: str | os.PathLike) -> Path | None:
    """The folder on this machine that ``model_uri`` names (a path or a ``file:`` URI),
    else None (a URI that MLflow resolves: ``models:/``, ``runs:/``, a remote store)."""
    if isinstance(model_uri, os.PathLike):
        return Path(model_uri)
    parsed = urllib.parse.urlparse(model_uri)
    # A one-letter scheme is a Windows drive ("C:/models/m").
    if parsed.scheme == "" or len(parsed.scheme) == 1:
        return Path(model_uri)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
        return Path(urllib.request.url2pathname(parsed.path))
    return None
