"""MLflow tracking of sampler fits and tuning studies, against a real tracking server.

The server runs on 127.0.0.1 for the test session (SQLite backend, local artifact store).
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path

import mlflow
import mlflow.store.db.utils
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

import scld_aug.tracking.fits
import scld_aug.tracking.flavor
from scld_aug import SCLDSampler
from scld_aug.tracking import RunLogger, fit_resample_logged, load_sampler, log_fit, transport
from scld_aug.tracking.benchmarks import log_benchmark
from scld_aug.tracking.flavor import check_model_dir
from scld_aug.tracking.studies import StudyTracker
from scld_aug.tuning import tune_guidance


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(root: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow_cli)] if mlflow_cli.exists() else [sys.executable, "-m", "mlflow"]
    process = subprocess.Popen(
        [
            *command,
            "server",
            "--backend-store-uri",
            f"sqlite:///{root}/mlflow.db",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(root / "server.log", "w"),  # noqa: SIM115 - lives as long as the server
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError((root / "server.log").read_text()[-3000:])
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return process, uri
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("mlflow server did not start within 90 s")


def _stop(process: subprocess.Popen) -> None:
    """Stop the server's whole process group; a no-op when it is already gone."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    process, uri = _start_server(tmp_path_factory.mktemp("mlflow-server"))
    yield uri
    _stop(process)


@pytest.fixture
def client(mlflow_server):
    return mlflow.MlflowClient(tracking_uri=mlflow_server)


@pytest.fixture
def data(counts_data):
    X, y = counts_data
    return X.copy(), y.copy()


def _runs(uri: str, experiment: str) -> pd.DataFrame:
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.search_runs(experiment_names=[experiment])
    finally:
        mlflow.set_tracking_uri(previous)


def _download(uri: str, model_uri: str, dst: Path) -> Path:
    """A local copy of a model (``models:/`` URIs resolve with the global tracking URI)."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=dst))
    finally:
        mlflow.set_tracking_uri(previous)


def _strings(value):
    """Every string in a YAML document."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_fit_is_logged_with_params_losses_artifacts_and_a_loadable_model(
    data, tiny_params, mlflow_server, client, tmp_path
):
    X, y = data
    sampler = SCLDSampler(random_state=0, **tiny_params)
    X_res, y_res, run_id = fit_resample_logged(
        sampler, X, y, tracking_uri=mlflow_server, experiment="fits", run_name="tiny fit"
    )
    assert run_id is not None
    runs = _runs(mlflow_server, "fits")
    row = runs.set_index("run_id").loc[run_id]
    assert row["tags.mlflow.runName"] == "tiny fit"
    assert row["params.latent_dim"] == str(tiny_params["latent_dim"])
    assert row["params.n_cells"] == str(len(y))
    assert row["metrics.n_synthetic"] == len(y_res) - len(y)
    assert row["metrics.fit_seconds"] > 0
    assert 0 <= row["metrics.mmd_mean"] < 1
    assert 0 <= row["metrics.recognised_min"] <= 1
    assert {"metrics.coverage_type2", "metrics.recognised_type2"} <= set(row.index)
    assert row["tags.scld_aug.cell_type.type2"] == "type2"
    for name in ("autoencoder", "diffusion", "classifier"):
        assert np.isfinite(row[f"metrics.final_loss_{name}"])
    history = client.get_metric_history(run_id, "loss_autoencoder")
    assert len(history) == tiny_params["autoencoder_steps"] // 10
    assert [m.step for m in history][:2] == [9, 19]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"class_counts.csv", "plots"} <= artifacts
    # The training data is the run's input: its digest identifies it across runs.
    inputs = client.get_run(run_id).inputs.dataset_inputs
    assert len(inputs) == 1 and len(inputs[0].dataset.digest) == 20
    assert json.loads(inputs[0].dataset.profile)["n_cells"] == len(y)
    assert {(t.key, t.value) for t in inputs[0].tags} == {("mlflow.data.context", "training")}
    plots = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert plots == {"plots/loss_curves.png", "plots/embedding.png"}
    counts = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="class_counts.csv", tracking_uri=mlflow_server
        ),
        index_col=0,
    )
    assert counts.loc["type2", "synthetic"] == 290
    assert counts.loc["type0", "synthetic"] == 0
    assert list(counts.columns) == ["real", "after", "synthetic"]

    # The logged model is data only: the loader is the installed, pinned scld_aug package.
    model_uri = client.get_run(run_id).data.tags["scld_aug.model_uri"]
    folder = _download(mlflow_server, model_uri, tmp_path / "model")
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert "data/sampler.pt" in files
    assert not [f for f in files if f.endswith((".py", ".pkl")) or "python_model" in f]
    text = (folder / "MLmodel").read_text()
    pyfunc = yaml.safe_load(text)["flavors"]["python_function"]
    assert pyfunc["loader_module"] == "scld_aug.tracking.flavor"
    assert pyfunc["data"] == "data/sampler.pt" and not pyfunc.get("code")
    strings = list(_strings(yaml.safe_load(text)))
    assert not [v for v in strings if v.startswith(("/", "file:"))]
    for local in (tempfile.gettempdir(), str(tmp_path), os.getcwd(), str(Path.home())):
        assert local not in text
    assert f"scld-aug=={scld_aug.__version__}" in (folder / "requirements.txt").read_text()

    # It generates the same cells as the fitted sampler, loaded either way.
    loaded = load_sampler(model_uri, device="cpu", tracking_uri=mlflow_server)
    assert np.array_equal(loaded.generate(20, "type2"), sampler.generate(20, "type2"))
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    finally:
        mlflow.set_tracking_uri(previous)
    cells = model.predict(pd.DataFrame({"cell_type": ["type2", "type0"], "n_cells": [4, 3]}))
    assert cells.shape == (7, X.shape[1] + 1)
    assert list(cells.columns) == ["cell_type", *map(str, range(X.shape[1]))]
    assert list(cells["cell_type"]) == ["type2"] * 4 + ["type0"] * 3
    genes = cells.drop(columns="cell_type").to_numpy()
    assert np.array_equal(genes[:4], sampler.generate(4, "type2"))
    assert np.array_equal(genes[4:], sampler.generate(3, "type0"))


def test_study_is_one_parent_run_with_a_nested_run_per_trial(
    data, tiny_params, mlflow_server, client, tmp_path
):
    X, y = data
    result = tune_guidance(
        X,
        y,
        sampler=SCLDSampler(random_state=0, **tiny_params),
        cv=2,
        n_trials=3,
        refit=False,
        tracking=mlflow_server,
        experiment="studies",
        plots_dir=tmp_path,
    )
    runs = _runs(mlflow_server, "studies")
    parent = runs[runs["run_id"] == result.run_id].iloc[0]
    assert parent["metrics.best_score"] == result.best_score
    assert parent["metrics.default_score"] == result.default_score
    assert parent["metrics.n_trainings"] == 2
    trials = runs[runs["tags.mlflow.parentRunId"] == result.run_id]
    assert len(trials) == 3
    assert set(trials["tags.optuna.trial_number"]) == {"0", "1", "2"}
    best = trials[trials["tags.best_trial"] == "true"]
    assert len(best) == 1
    assert best.iloc[0]["tags.optuna.trial_number"] == str(result.study.best_trial.number)
    assert best.iloc[0]["metrics.score"] == result.best_score
    assert "params.guidance_scale" in trials
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "tuning")}
    assert {"tuning/optimization_history.png", "tuning/guidance_vs_score.png"} <= artifacts


def test_unreachable_server_warns_quickly_and_the_fit_still_returns(data, tiny_params):
    X, y = data
    start = time.perf_counter()
    with pytest.warns(RuntimeWarning, match="MLflow tracking to 'http://127.0.0.1:9' failed"):
        X_res, y_res, run_id = fit_resample_logged(
            SCLDSampler(random_state=0, **tiny_params), X, y, tracking_uri="http://127.0.0.1:9"
        )
    assert run_id is None and X_res.shape == (900, X.shape[1])
    assert time.perf_counter() - start < 30


def test_server_dying_mid_study_only_warns(data, tiny_params, tmp_path, monkeypatch):
    # A server of its own, stopped after the first trial is logged.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    process, uri = _start_server(tmp_path)
    import scld_aug.tracking.studies

    original = scld_aug.tracking.studies.StudyTracker.log_trial

    def log_then_kill(self, study, trial):
        original(self, study, trial)
        if trial.number == 0:
            _stop(process)

    monkeypatch.setattr(scld_aug.tracking.studies.StudyTracker, "log_trial", log_then_kill)
    X, y = data
    try:
        with pytest.warns(RuntimeWarning, match="computation continues without tracking"):
            result = tune_guidance(
                X,
                y,
                sampler=SCLDSampler(random_state=0, **tiny_params),
                cv=2,
                n_trials=3,
                refit=False,
                tracking=uri,
            )
    finally:
        _stop(process)
    assert len(result.study.trials) == 3
    assert all(t.state.name == "COMPLETE" for t in result.study.trials)
    assert result.run_id is None


def test_default_store_is_one_folder_in_the_working_directory(
    data, tiny_params, tmp_path, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    X, y = data
    sampler = SCLDSampler(random_state=0, **tiny_params).fit(X, y)
    run_id = log_fit(sampler, X, y)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlruns"]
    assert (tmp_path / "mlruns" / "mlflow.db").exists()
    runs = _runs("sqlite:///mlruns/mlflow.db", "scld-aug")
    assert list(runs["run_id"]) == [run_id]
    files = tmp_path / "mlruns" / "mlflow_artifacts" / "scld-aug"
    assert any(files.rglob("*.png")) and any(files.rglob("MLmodel"))


def test_a_sqlite_store_elsewhere_keeps_its_files_beside_it(
    data, tiny_params, tmp_path, monkeypatch
):
    """Nothing lands in the working directory (MLflow's own default is ./mlruns there)."""
    work, store = tmp_path / "work", tmp_path / "store"
    work.mkdir()
    monkeypatch.chdir(work)
    X, y = data
    sampler = SCLDSampler(random_state=0, **tiny_params).fit(X, y)
    log_fit(sampler, X, y, tracking_uri=f"sqlite:///{store}/runs.db")
    assert list(work.iterdir()) == []
    assert any((store / "runs_artifacts" / "scld-aug").rglob("*.png"))


def test_fit_run_nests_under_the_callers_active_run(data, tiny_params, tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    X, y = data
    sampler = SCLDSampler(random_state=0, **tiny_params).fit(X, y)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment("outer")
        with mlflow.start_run() as outer:
            with warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)
                run_id = log_fit(sampler, X, y, tracking_uri=uri, log_model=False)
    finally:
        mlflow.set_tracking_uri(previous)
    run = mlflow.MlflowClient(tracking_uri=uri).get_run(run_id)
    assert run.data.tags["mlflow.parentRunId"] == outer.info.run_id


# ------------------------------------------------------------- tracking never costs the fit


def _one_run(uri: str, experiment: str):
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    return runs[0]


@pytest.mark.parametrize("container", ["list of lists", "one-gene DataFrame", "sparse"])
def test_any_input_fit_resample_takes_is_logged(
    container, data, tiny_params, mlflow_server, client
):
    X, y = data
    if container == "list of lists":
        X, y = X.tolist(), y.tolist()
    elif container == "one-gene DataFrame":
        gene = np.argmax(X.sum(axis=0))  # the most expressed gene: no cell is empty
        X = pd.DataFrame({f"GENE{gene}": X[:, gene]})
    else:
        X = sp.csr_matrix(X)
    n_genes = np.shape(X[0])[-1] if isinstance(X, list) else X.shape[1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        X_res, y_res, run_id = fit_resample_logged(
            SCLDSampler(random_state=0, **tiny_params),
            X,
            y,
            tracking_uri=mlflow_server,
            experiment=f"inputs {container}",
            log_model=False,
        )
    assert not [str(w.message) for w in caught if "MLflow" in str(w.message)]
    n_res = len(X_res) if isinstance(X_res, list) else X_res.shape[0]
    assert n_res == len(y_res) == 900
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["n_cells"] == str(len(y))
    assert run.data.params["n_genes"] == str(n_genes)
    assert run.data.metrics["n_synthetic"] == 900 - len(y)
    assert np.isfinite(run.data.metrics["mmd_mean"])
    plots = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert plots == {"plots/loss_curves.png", "plots/embedding.png"}


def test_a_failing_plot_warns_once_fails_the_run_and_keeps_the_resampled_data(
    data, tiny_params, mlflow_server, monkeypatch
):
    def broken(*args, **kwargs):
        raise ValueError("no display")

    monkeypatch.setattr(scld_aug.tracking.fits, "plot_embedding", broken)
    X, y = data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        X_res, y_res, run_id = fit_resample_logged(
            SCLDSampler(random_state=0, **tiny_params),
            X,
            y,
            tracking_uri=mlflow_server,
            experiment="broken plot",
        )
    failures = [w for w in caught if "MLflow" in str(w.message)]
    assert len(failures) == 1 and failures[0].category is RuntimeWarning
    assert "while plotting the embedding (ValueError: no display)" in str(failures[0].message)
    assert run_id is None and X_res.shape == (900, X.shape[1]) and len(y_res) == 900
    run = _one_run(mlflow_server, "broken plot")
    assert run.info.status == "FAILED" and run.info.end_time is not None


def test_a_failed_upload_ends_the_run_as_failed(data, tiny_params, mlflow_server, monkeypatch):
    X, y = data
    sampler = SCLDSampler(random_state=0, **tiny_params)
    X_res, y_res = sampler.fit_resample(X, y)

    def refused(self, *args, **kwargs):
        raise OSError("artifact store refused the upload")

    monkeypatch.setattr(mlflow.MlflowClient, "log_artifact", refused)
    with pytest.warns(RuntimeWarning, match="log_artifact .*refused the upload"):
        run_id = log_fit(
            sampler, X, y, X_res, y_res, tracking_uri=mlflow_server, experiment="failed upload"
        )
    assert run_id is None
    run = _one_run(mlflow_server, "failed upload")
    assert run.info.status == "FAILED" and run.info.end_time is not None


def test_load_sampler_fails_fast_on_an_unreachable_server():
    uri = f"http://127.0.0.1:{_free_port()}"  # nobody listens there
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match=f"server '{uri}' is unreachable"):
        load_sampler("models:/m-0123456789abcdef", tracking_uri=uri)
    assert time.perf_counter() - start < 10


# ------------------------------------------------ a local SQLite store that cannot be used

# Root writes to read-only files and folders, so those variants only mean something for
# other users; the other problems stop root too.
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _as_owner(path, mode: int) -> bool:
    """``os.access`` for the owner of ``path``: whether its owner bits allow ``mode``."""
    import stat

    bits = os.stat(path).st_mode
    wanted = [(os.R_OK, stat.S_IRUSR), (os.W_OK, stat.S_IWUSR), (os.X_OK, stat.S_IXUSR)]
    return all(bits & owner for flag, owner in wanted if mode & flag)


def _unusable_store(tmp_path: Path, problem: str) -> Path:
    """A SQLite database path that cannot be used, with the given problem."""
    database = tmp_path / "mlflow.db"
    if problem == "is a folder":
        database.mkdir()
    elif problem == "under a file":
        (tmp_path / "runs").write_text("a file, not a folder")
        database = tmp_path / "runs" / "mlflow.db"
    elif problem == "not a database":
        database.write_text("notes, not a database\n")
    elif problem == "read-only folder":
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
        database = tmp_path / "ro" / "mlflow.db"
    elif problem == "read-only database":
        database.write_bytes(b"")
        database.chmod(0o444)
    return database


@pytest.fixture
def connections(monkeypatch):
    """MLflow's attempts to open a SQL store, refused at once (on a SQLite file it cannot
    open, MLflow itself retries for about 100 s before giving up)."""
    attempts = []

    def refuse(db_uri):
        attempts.append(db_uri)
        raise RuntimeError(f"MLflow connected to {db_uri}")

    monkeypatch.setattr(mlflow.store.db.utils, "create_sqlalchemy_engine_with_retry", refuse)
    return attempts


@pytest.mark.parametrize(
    ("problem", "reason"),
    [
        ("is a folder", "is a folder, not a database file"),
        ("under a file", "is a file, not a folder"),
        ("not a database", "is not a SQLite database"),
        ("read-only folder", "is read-only"),
        ("read-only database", "is read-only"),
    ],
)
def test_an_unusable_local_store_warns_at_once_without_connecting(
    problem, reason, tmp_path, connections, monkeypatch
):
    if problem.startswith("read-only") and AS_ROOT:
        # Root may write anywhere, so the permission check answers from the owner's mode
        # bits, as it would for the user who owns the store.
        monkeypatch.setattr(transport, "_may", _as_owner)
    database = _unusable_store(tmp_path, problem)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = RunLogger("a fit", uri=f"sqlite:///{database}")
        run.log_metrics({"score": 1.0})
        run.end()
    seconds = time.perf_counter() - start
    messages = [str(w.message) for w in caught if "MLflow tracking" in str(w.message)]
    assert len(messages) == 1 and not run.active
    # What is wrong, and how to fix it.
    assert reason in messages[0] and "MLFLOW_TRACKING_URI" in messages[0]
    assert connections == [] and seconds < 1


def test_fits_studies_benchmarks_and_loading_check_a_local_store_first(
    data, tiny_params, tmp_path, connections
):
    import optuna

    database = _unusable_store(tmp_path, "is a folder")
    uri = f"sqlite:///{database}"
    X, y = data
    sampler = SCLDSampler(random_state=0, **tiny_params).fit(X, y)

    def one_warning(call, *args, **kwargs):
        start = time.perf_counter()
        with pytest.warns(RuntimeWarning, match="is a folder, not a database file") as caught:
            result = call(*args, **kwargs)
        assert len([w for w in caught if "MLFLOW_TRACKING_URI" in str(w.message)]) == 1
        assert time.perf_counter() - start < 1
        return result

    assert one_warning(log_fit, sampler, X, y, tracking_uri=uri) is None
    study = optuna.create_study(study_name="unusable store")
    one_warning(StudyTracker, uri, "studies", study, sampler, {}, "f1", [])
    (tmp_path / "out").mkdir()
    assert one_warning(log_benchmark, tmp_path / "out", "demo", None, None, {}, uri=uri) is None
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="is a folder, not a database file"):
        load_sampler("models:/m-0123456789abcdef", tracking_uri=uri)
    assert time.perf_counter() - start < 1
    assert connections == []


# ------------------------------------------------------------------ untrusted model stores


def test_load_sampler_refuses_tampered_models_without_running_them(
    data, tiny_params, mlflow_server, client, tmp_path, monkeypatch
):
    X, y = data
    sampler = SCLDSampler(random_state=0, **tiny_params).fit(X, y)
    run_id = log_fit(sampler, X, y, tracking_uri=mlflow_server, experiment="tampered")
    model_uri = client.get_run(run_id).data.tags["scld_aug.model_uri"]
    clean = _download(mlflow_server, model_uri, tmp_path / "clean")
    # A downloaded copy loads like the model in the store.
    loaded = load_sampler(clean, device="cpu")
    assert np.array_equal(loaded.generate(5, "type2"), sampler.generate(5, "type2"))

    marker = tmp_path / "code-was-executed"
    payload = f"open({str(marker)!r}, 'w').write('executed')\ndef _load_pyfunc(path):\n    pass\n"

    def copy(name: str) -> Path:
        return Path(shutil.copytree(clean, tmp_path / name))

    def edit_mlmodel(folder: Path, **changes) -> None:
        config = yaml.safe_load((folder / "MLmodel").read_text())
        config["flavors"]["python_function"].update(changes)
        (folder / "MLmodel").write_text(yaml.safe_dump(config))

    planted = copy("planted")
    (planted / "data" / "helper.py").write_text(payload)
    with pytest.raises(ValueError, match=r"not an scld-aug model .*code or a pickle"):
        load_sampler(planted)

    # A loader module that is importable here (it could be any installed module).
    site = tmp_path / "site"
    site.mkdir()
    (site / "scld_evil_loader.py").write_text(payload)
    monkeypatch.syspath_prepend(str(site))
    other_loader = copy("other-loader")
    edit_mlmodel(other_loader, loader_module="scld_evil_loader")
    with pytest.raises(ValueError, match="not an scld-aug model .*'scld_evil_loader'"):
        load_sampler(other_loader)

    outside = copy("outside")  # its data path leads to a file outside the model folder
    edit_mlmodel(outside, data="../clean/data/sampler.pt")
    with pytest.raises(ValueError, match="not a file inside the model"):
        check_model_dir(outside)

    assert not marker.exists() and "scld_evil_loader" not in sys.modules
    # mlflow.pyfunc.load_model, by contrast, imports whatever loader the MLmodel names.
    with contextlib.suppress(Exception):
        mlflow.pyfunc.load_model(str(other_loader))
    assert marker.exists()
    sys.modules.pop("scld_evil_loader", None)


def _model_folder(folder: Path, data: bool = True) -> Path:
    """An scld-aug model folder (as ``log_fit`` logs it), without its sampler file yet."""
    folder.mkdir()
    pyfunc = {"loader_module": "scld_aug.tracking.flavor", "data": "data/sampler.pt"}
    (folder / "MLmodel").write_text(yaml.safe_dump({"flavors": {"python_function": pyfunc}}))
    if data:
        (folder / "data").mkdir()
    return folder


class _Opened:
    """The files Python opens while recording (through an audit hook, which cannot be
    removed: it records nothing outside ``with``)."""

    paths: list | None = None
    hooked = False

    def __enter__(self) -> list:
        if not _Opened.hooked:
            sys.addaudithook(_Opened._hook)
            _Opened.hooked = True
        _Opened.paths = []
        return _Opened.paths

    def __exit__(self, *exc) -> None:
        _Opened.paths = None

    @staticmethod
    def _hook(event, args) -> None:
        paths = _Opened.paths
        if event == "open" and paths is not None and isinstance(args[0], (str, bytes, Path)):
            paths.append(os.path.realpath(os.fsdecode(args[0])))


def test_load_sampler_reads_nothing_outside_the_model_folder(data, tiny_params, tmp_path):
    X, y = data
    sampler = SCLDSampler(random_state=0, **tiny_params).fit(X, y)
    secret = tmp_path / "elsewhere"  # beside the model folders, not in any of them
    secret.mkdir()
    outside = secret / "sampler.pt"
    sampler.save(outside)
    clean = _model_folder(tmp_path / "clean")
    sampler.save(clean / "data" / "sampler.pt")
    for model_uri in (clean, str(clean), clean.as_uri()):
        loaded = load_sampler(model_uri, device="cpu")
        assert np.array_equal(loaded.generate(5, "type2"), sampler.generate(5, "type2"))

    linked_file = _model_folder(tmp_path / "linked-file")  # data/sampler.pt -> elsewhere
    (linked_file / "data" / "sampler.pt").symlink_to(Path("..", "..", "elsewhere", "sampler.pt"))
    linked_data = _model_folder(tmp_path / "linked-data", data=False)  # data/ -> elsewhere/
    (linked_data / "data").symlink_to(secret, target_is_directory=True)
    for model_uri in (linked_file, str(linked_file), linked_file.as_uri(), linked_data):
        with _Opened() as opened, pytest.raises(ValueError, match="symbolic link"):
            load_sampler(model_uri, device="cpu")
        assert str(outside.resolve()) not in opened, model_uri

    # A link planted between the check and the read is not followed either.
    planted = Path(shutil.copytree(clean, tmp_path / "planted"))
    check = scld_aug.tracking.flavor.check_model_dir

    def check_then_plant(folder, name=None):
        sampler_file = check(folder, name)
        sampler_file.unlink()
        sampler_file.symlink_to(outside)
        return sampler_file

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scld_aug.tracking.flavor, "check_model_dir", check_then_plant)
        with _Opened() as opened, pytest.raises(ValueError, match="symbolic link"):
            load_sampler(planted, device="cpu")
    assert str(outside.resolve()) not in opened


def test_logged_model_names_its_output_columns_by_gene(data, tiny_params, tmp_path):
    """Gene names become the model's output columns; a cell-type name with characters
    MLflow cannot hold gets a sanitized metric name and keeps its own name as a tag."""
    import anndata

    X, y = data
    y = np.where(y == "type2", "CD4+/CD25 T Reg", y)
    genes = [f"GENE{j}" for j in range(X.shape[1])]
    adata = anndata.AnnData(X=sp.csr_matrix(X.astype(np.float32)))
    adata.var_names, adata.obs["cell_type"] = genes, y
    sampler = SCLDSampler(random_state=0, **tiny_params)
    sampler.fit_resample_anndata(adata)
    uri = f"sqlite:///{tmp_path}/m.db"
    _, _, run_id = fit_resample_logged(sampler, adata.X, y, tracking_uri=uri)  # reuses it
    run = mlflow.MlflowClient(uri).get_run(run_id)
    assert "mmd_CD4__CD25_T_Reg" in run.data.metrics
    assert run.data.tags["scld_aug.cell_type.CD4__CD25_T_Reg"] == "CD4+/CD25 T Reg"
    model_uri = run.data.tags["scld_aug.model_uri"]
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    finally:
        mlflow.set_tracking_uri(previous)
    cells = model.predict(pd.DataFrame({"cell_type": ["CD4+/CD25 T Reg"], "n_cells": [3]}))
    assert list(cells.columns) == ["cell_type", *genes]
