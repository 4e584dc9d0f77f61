"""MLflow tracking of sampler fits and tuning studies, against a real tracking server.

The server runs on 127.0.0.1 for the test session (SQLite backend, local artifact store).
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from scld_aug import SCLDSampler
from scld_aug.tracking import fit_resample_logged, load_sampler, log_fit
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


def test_fit_is_logged_with_params_losses_artifacts_and_a_loadable_model(
    data, tiny_params, mlflow_server, client
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
    for name in ("autoencoder", "diffusion", "classifier"):
        assert np.isfinite(row[f"metrics.final_loss_{name}"])
    history = client.get_metric_history(run_id, "loss_autoencoder")
    assert len(history) == tiny_params["autoencoder_steps"] // 10
    assert [m.step for m in history][:2] == [9, 19]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"class_counts.csv", "plots"} <= artifacts
    plots = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert plots == {"plots/loss_curves.png", "plots/embedding.png"}
    counts = pd.read_csv(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="class_counts.csv", tracking_uri=mlflow_server
        ),
        index_col=0,
    )
    assert counts.loc["type2", "synthetic"] == 290

    # The logged model generates the same cells as the fitted sampler.
    model_uri = client.get_run(run_id).data.tags["scld_aug.model_uri"]
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
    assert list(cells["cell_type"]) == ["type2"] * 4 + ["type0"] * 3
    assert (cells.drop(columns="cell_type").to_numpy() >= 0).all()


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
    import scld_aug.tuning

    original = scld_aug.tuning._StudyTracker.log_trial

    def log_then_kill(self, study, trial):
        original(self, study, trial)
        if trial.number == 0:
            _stop(process)

    monkeypatch.setattr(scld_aug.tuning._StudyTracker, "log_trial", log_then_kill)
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


def test_default_store_is_sqlite_in_the_working_directory(data, tiny_params, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    X, y = data
    sampler = SCLDSampler(random_state=0, **tiny_params).fit(X, y)
    run_id = log_fit(sampler, X, y, log_model=False)
    assert (tmp_path / "mlflow.db").exists()
    runs = _runs("sqlite:///mlflow.db", "scld-aug")
    assert list(runs["run_id"]) == [run_id]


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
