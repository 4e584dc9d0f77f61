"""Log a finished benchmark to MLflow: one parent run, one nested run per compared setting.

The parent run holds the benchmark's description (dataset, seeds, command) and its files
(report, CSVs, plots). Each nested run is one (protocol, k, classifier, method) with the
mean and sd of every downstream metric, and each seed's value as a step, so that the
MLflow UI can sort and compare methods. Fidelity gets one nested run per method.

Logging happens after the results are on disk: a tracking failure only warns.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_URI = "sqlite:///mlflow.db"
EXPERIMENT = "scld-aug-benchmark"
DOWNSTREAM_METRICS = ("rare_macro_f1", "macro_f1", "balanced_accuracy")


def tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``MLFLOW_TRACKING_URI``, else a SQLite store in the working directory."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def log_benchmark(
    out: Path,
    dataset: str,
    downstream: pd.DataFrame | None,
    fidelity: pd.DataFrame | None,
    meta: dict,
    uri: str | None = None,
    experiment: str = EXPERIMENT,
) -> str | None:
    """Log the benchmark in ``out``; returns the parent run id, or None if tracking failed."""
    try:
        return _log(out, dataset, downstream, fidelity, meta, tracking_uri(uri), experiment)
    except Exception as err:  # noqa: BLE001 - the results are already saved; only warn
        warnings.warn(
            f"MLflow logging to {tracking_uri(uri)!r} failed ({type(err).__name__}: {err}); "
            f"the results in {out} are complete. Rerun with --report-only --mlflow to log them.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def _log(out, dataset, downstream, fidelity, meta, uri, experiment) -> str:
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"benchmark {dataset}") as parent:
        mlflow.set_tag("dataset", dataset)
        mlflow.log_params({k: str(v)[:500] for k, v in meta.items()})
        if downstream is not None and not downstream.empty:
            _log_downstream(mlflow, dataset, downstream)
        if fidelity is not None and not fidelity.empty:
            _log_fidelity(mlflow, dataset, fidelity)
        for path in sorted(Path(out).iterdir()):
            if path.is_file() and path.suffix in {".md", ".csv", ".png", ".json"}:
                mlflow.log_artifact(str(path))
        return parent.info.run_id


def _log_downstream(mlflow, dataset: str, df: pd.DataFrame) -> None:
    df = df[df["metric"].isin(DOWNSTREAM_METRICS)].copy()
    df["k"] = df["k"].fillna(-1).astype(int)
    for (protocol, k, classifier, method), part in df.groupby(
        ["protocol", "k", "classifier", "method"], sort=False
    ):
        setting = f"{protocol}" + (f" k={k}" if k >= 0 else "")
        with mlflow.start_run(run_name=f"{setting} {classifier} {method}", nested=True):
            mlflow.set_tags({"dataset": dataset, "kind": "downstream"})
            mlflow.log_params(
                {
                    "protocol": protocol,
                    "k": k if k >= 0 else "-",
                    "classifier": classifier,
                    "method": method,
                }
            )
            for metric, values in part.groupby("metric")["value"]:
                finite = values.dropna()
                if finite.empty:
                    continue
                summary = {f"{metric}_mean": float(finite.mean())}
                if len(finite) > 1:
                    summary[f"{metric}_sd"] = float(finite.std(ddof=1))
                mlflow.log_metrics(summary)
            for (seed, metric), value in part.set_index(["seed", "metric"])["value"].items():
                if np.isfinite(value):
                    mlflow.log_metric(f"{metric}_by_seed", float(value), step=int(seed))


def _log_fidelity(mlflow, dataset: str, df: pd.DataFrame) -> None:
    for method, part in df.groupby("method", sort=False):
        with mlflow.start_run(run_name=f"fidelity {method}", nested=True):
            mlflow.set_tags({"dataset": dataset, "kind": "fidelity"})
            mlflow.log_param("method", method)
            means = part.groupby("metric")["value"].mean()
            mlflow.log_metrics({m: float(v) for m, v in means.items() if np.isfinite(v)})
