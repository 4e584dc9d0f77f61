"""Talking to MLflow: where runs go, and a run that never fails the work it logs.

Every call to MLflow goes through :class:`RunLogger`, which turns the first failure
(unreachable server, server dying mid-run, bad URI, a failed upload) into one clear
warning, marks the run FAILED when it can and stops logging, while the fit or study goes
on and returns its result.

Where runs go: the ``tracking_uri`` argument, else ``MLFLOW_TRACKING_URI``, else a SQLite
store in the folder ``mlruns/`` of the working directory (``mlflow ui --backend-store-uri
sqlite:///mlruns/mlflow.db`` shows it). With a local SQLite store, the files of the runs
(plots, reports, models) go beside the database, into ``<database name>_artifacts/``, so
that the store is one folder wherever the process runs.

A local SQLite store is checked before MLflow connects to it (:func:`check_local_store`):
MLflow retries a database it cannot open for about 100 s, so an unusable store (its folder
read-only or a file, the database a folder, read-only or not SQLite) would otherwise stall
the work that long before the warning.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"
#: Experiment of sampler fits (tuning studies and benchmarks have their own).
FIT_EXPERIMENT = "scld-aug"
# How long the best-effort "mark the run FAILED" call may take against a tracking server.
FAIL_TIMEOUT = 5


def tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``MLFLOW_TRACKING_URI``, else a SQLite store in the working directory.

    Examples
    --------
    >>> tracking_uri("sqlite:///runs.db")
    'sqlite:///runs.db'
    """
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


_resolve_uri = tracking_uri  # for functions whose own argument is named tracking_uri


def local_database(uri: str) -> Path | None:
    """The database file of a local SQLite tracking URI, else None.

    None also for an in-memory database and for SQLite's own ``file:`` URIs.

    Examples
    --------
    >>> local_database("sqlite:///mlruns/mlflow.db"), local_database("http://127.0.0.1:5000")
    (PosixPath('mlruns/mlflow.db'), None)
    >>> local_database("sqlite:////data/runs.db?timeout=30"), local_database("sqlite://")
    (PosixPath('/data/runs.db'), None)
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = uri[len(prefix) :].split("?", 1)[0]
    if path in ("", ":memory:") or path.startswith("file:"):
        return None
    return Path(path)


class TrackingStoreError(ConnectionError):
    """A local SQLite tracking store that cannot be used, found before connecting to it."""


# The first 16 bytes of every SQLite database file (an empty file is a new database).
SQLITE_HEADER = b"SQLite format 3\x00"
_FIX_WRITE = (
    "Set MLFLOW_TRACKING_URI (or pass a tracking URI) to a store you can write, e.g. "
    "'sqlite:////path/to/writable/folder/mlflow.db', or to a tracking server."
)
_FIX_READ = "Check the tracking URI (MLFLOW_TRACKING_URI or the tracking URI passed)."


def _may(path: Path, mode: int) -> bool:
    """Whether this process may access ``path`` with ``mode`` (a read-only file system
    counts as not writable)."""
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


def check_local_store(database: str | os.PathLike, write: bool = True) -> None:
    """Check that the SQLite database of a local tracking store can be used, before MLflow
    connects to it.

    MLflow retries a database it cannot open for about 100 s before it gives up; this
    check takes milliseconds. It looks at permissions and file types only (and the first
    bytes of an existing database), never at the database's contents.

    Parameters
    ----------
    database : str or path-like
        The database file (:func:`local_database` of the tracking URI).
    write : bool, default=True
        Whether runs will be written. The database must then be a writable SQLite file in
        a writable folder (SQLite writes its journal beside the database, and runs' files
        go into ``<database name>_artifacts/`` there), or, before it exists, the nearest
        existing folder above it must be a writable folder. Without ``write``, the database
        must exist and be readable.

    Raises
    ------
    TrackingStoreError
        Saying what is wrong with the store, and how to point tracking elsewhere.

    Examples
    --------
    >>> check_local_store("mlruns/mlflow.db")  # fine: created, with mlruns/, on first use
    >>> try:
    ...     check_local_store(".")  # a folder where the database should be
    ... except TrackingStoreError as err:
    ...     print(str(err).split("' ", 1)[1])
    is a folder, not a database file. Set MLFLOW_TRACKING_URI (or pass a tracking URI) to a store you can write, e.g. 'sqlite:////path/to/writable/folder/mlflow.db', or to a tracking server.
    """  # noqa: E501 - the message of the doctest is one line
    path = Path(os.path.abspath(database))
    fix = _FIX_WRITE if write else _FIX_READ

    def unusable(why: str) -> TrackingStoreError:
        return TrackingStoreError(f"The SQLite tracking store {str(path)!r} {why}. {fix}")

    try:
        if path.exists():
            if path.is_dir():
                raise unusable("is a folder, not a database file")
            if not path.is_file():
                raise unusable("is not a regular file")
            if not _may(path, os.R_OK | (os.W_OK if write else 0)):
                raise unusable("is read-only" if write else "cannot be read (no permission)")
            with open(path, "rb") as file:
                header = file.read(len(SQLITE_HEADER))
            if header and header != SQLITE_HEADER:
                raise unusable("is not a SQLite database")
            if write and not _may(path.parent, os.W_OK | os.X_OK):
                raise unusable(
                    f"is in a folder that is read-only, {str(path.parent)!r} (SQLite writes "
                    "its journal, and MLflow the runs' files, beside the database)"
                )
            return
        if path.is_symlink():
            raise unusable("is a broken symbolic link")
        if not write:
            raise unusable("does not exist (no database there)")
        # The database and any missing folders above it will be created in the nearest
        # folder that exists: it must be a folder, and writable.
        existing = path.parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise unusable(f"cannot be created: {str(existing)!r} is a file, not a folder")
        if not _may(existing, os.W_OK | os.X_OK):
            raise unusable(f"cannot be created: the folder {str(existing)!r} is read-only")
    except OSError as err:
        if isinstance(err, TrackingStoreError):
            raise
        raise unusable(f"cannot be reached ({type(err).__name__}: {err})") from err


def prepare_local_store(uri: str) -> None:
    """For a local SQLite tracking URI: :func:`check_local_store`, then create the folders
    of the database; nothing for other URIs."""
    database = local_database(uri)
    if database is not None:
        check_local_store(database)
        database.parent.mkdir(parents=True, exist_ok=True)


def ensure_experiment(client, uri: str, name: str) -> str:
    """The id of experiment ``name``, created when missing. On a local SQLite store its
    files go to ``<database name>_artifacts/<name>`` beside the database (MLflow's own
    default is ``./mlruns`` of whatever folder the process runs in); a server keeps its
    own artifact root."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    database = local_database(uri)
    location = None
    if database is not None:
        folder = database.resolve().parent / f"{database.stem}_artifacts" / metric_key(name)
        location = folder.as_uri()
    return client.create_experiment(name, artifact_location=location)


def metric_key(name: Any) -> str:
    """An MLflow metric, parameter or folder name: every character but letters, digits,
    ``_``, ``-`` and ``.`` becomes ``_`` (cell-type names hold ``+``, ``/`` and spaces,
    which MLflow either refuses or reads as folders). Runs keep the original type names as
    tags (``scld_aug.cell_type.<key>``).

    Examples
    --------
    >>> metric_key("mmd_CD4+/CD25 T Reg")
    'mmd_CD4__CD25_T_Reg'
    """
    return re.sub(r"[^0-9A-Za-z_.-]", "_", str(name))[:250]


def _require_mlflow():
    try:
        import mlflow
    except ImportError as err:
        raise ImportError(
            "MLflow tracking needs mlflow: pip install 'scld-aug[tracking]' (or pip install "
            "'mlflow>=3.0,<3.18')."
        ) from err
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
                prepare_local_store(self.uri)
                self.client = mlflow.MlflowClient(tracking_uri=self.uri)
                outer = mlflow.active_run()
                if outer is not None and mlflow.get_tracking_uri() == self.uri:
                    # Inside the caller's run: nest there, in its experiment.
                    parent_id, experiment_id = outer.info.run_id, outer.info.experiment_id
                else:
                    parent_id = None
                    experiment_id = ensure_experiment(self.client, self.uri, experiment)
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

    def log_training_data(self, name: str, digest: str, profile: dict) -> None:
        """Record the data the run trained on as an MLflow dataset input (name, digest and
        a profile of its shape; no data is uploaded), so that runs show which data each
        used and runs on the same data share its digest."""
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            name=name,
            digest=digest,
            source_type="code",
            source=json.dumps({"kind": "in-memory matrix given to fit"}),
            profile=json.dumps(profile),
        )
        context = InputTag(key="mlflow.data.context", value="training")
        self._call("log_inputs", datasets=[DatasetInput(dataset, tags=[context])])

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
