"""Log a finished benchmark to MLflow: one parent run, one nested run per compared setting.

The parent run holds the benchmark's description (dataset, seeds, command) and its files
(report, CSVs, plots). Each nested run is one (protocol, k, classifier, method) with the
mean and sd of every downstream metric, and each seed's value as a step, so that the
MLflow UI can sort and compare methods. Fidelity gets one nested run per method.

Everything goes through :class:`scld_aug.tracking.RunLogger` (the caller's MLflow state
is left alone), after the results are on disk: a tracking failure only warns.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from scld_aug.tracking import RunLogger, tracking_uri

EXPERIMENT = "scld-aug-benchmark"
DOWNSTREAM_METRICS = ("rare_macro_f1", "macro_f1", "balanced_accuracy")

__all__ = ["EXPERIMENT", "log_benchmark", "tracking_uri"]


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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        parent = RunLogger(f"benchmark {dataset}", experiment, uri, tags={"dataset": dataset})
        if parent.active:
            parent.log_params({k: str(v)[:500] for k, v in meta.items()})
            if downstream is not None and not downstream.empty:
                _log_downstream(parent, dataset, downstream)
            if fidelity is not None and not fidelity.empty:
                _log_fidelity(parent, dataset, fidelity)
            for path in sorted(Path(out).iterdir()):
                if path.is_file() and path.suffix in {".md", ".csv", ".png", ".json"}:
                    parent.log_artifact(path)
            parent.end()
    if parent.active:
        return parent.run_id
    reason = next((str(w.message) for w in caught), "tracking failed")
    warnings.warn(
        f"{reason} The results in {out} are complete; rerun with --report-only --mlflow to "
        "log them.",
        RuntimeWarning,
        stacklevel=2,
    )
    return None


def _log_downstream(parent: RunLogger, dataset: str, df: pd.DataFrame) -> None:
    df = df[df["metric"].isin(DOWNSTREAM_METRICS)].copy()
    df["k"] = df["k"].fillna(-1).astype(int)
    for (protocol, k, classifier, method), part in df.groupby(
        ["protocol", "k", "classifier", "method"], sort=False
    ):
        setting = f"{protocol}" + (f" k={k}" if k >= 0 else "")
        run = parent.child(
            f"{setting} {classifier} {method}", tags={"dataset": dataset, "kind": "downstream"}
        )
        run.log_params(
            {"protocol": protocol, "k": k if k >= 0 else "-", "classifier": classifier,
             "method": method}
        )  # fmt: skip
        for metric, values in part.groupby("metric")["value"]:
            finite = values.dropna()
            if finite.empty:
                continue
            summary = {f"{metric}_mean": float(finite.mean())}
            if len(finite) > 1:
                summary[f"{metric}_sd"] = float(finite.std(ddof=1))
            run.log_metrics(summary)
        for (seed, metric), value in part.set_index(["seed", "metric"])["value"].items():
            if np.isfinite(value):
                run.log_metrics({f"{metric}_by_seed": float(value)}, step=int(seed))
        run.end()


def _log_fidelity(parent: RunLogger, dataset: str, df: pd.DataFrame) -> None:
    for method, part in df.groupby("method", sort=False):
        run = parent.child(f"fidelity {method}", tags={"dataset": dataset, "kind": "fidelity"})
        run.log_params({"method": method})
        means = part.groupby("metric")["value"].mean()
        run.log_metrics({m: float(v) for m, v in means.items() if np.isfinite(v)})
        run.end()
