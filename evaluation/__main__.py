"""Benchmark harness: ``python -m evaluation [natural|downsample|fidelity|all] --dataset ...``.

Writes ``<output>/``: ``results.csv`` (every number), ``report.md`` (tables) and plots.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import pandas as pd

from evaluation import protocols
from evaluation.report import write_report
from scld_aug.presets import QUICK

PBMC = Path(__file__).parent / "data" / "pbmc68k_subset.h5ad"
DATASETS = ("baron", "pbmc")


def load(dataset: str, labels_key: str):
    """Raw-count CSR matrix and string labels of a shipped dataset or any ``.h5ad``."""
    import anndata
    import scipy.sparse as sp

    if dataset == "baron":
        from scld_aug.datasets import baron_pancreas

        adata = baron_pancreas()
    else:
        adata = anndata.read_h5ad(PBMC if dataset == "pbmc" else dataset)
    return sp.csr_matrix(adata.X), adata.obs[labels_key].astype(str).to_numpy()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation", description=__doc__.splitlines()[0]
    )
    parser.add_argument("protocol", choices=["natural", "downsample", "fidelity", "all"])
    parser.add_argument(
        "--dataset", default="baron", help="'baron', 'pbmc' or a path to an .h5ad with raw counts"
    )
    parser.add_argument("--labels-key", default="cell_type")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--fidelity-seeds", type=int, default=2)
    parser.add_argument("--k", type=int, nargs="+", default=[10, 25])
    parser.add_argument("--types", nargs="+", default=None, help="types to cut to k cells")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["none", "RandomOverSampler", "SMOTE", "ADASYN", "scVI", "SCLD"],
    )
    parser.add_argument("--classifiers", nargs="+", default=["logreg", "knn", "random_forest"])
    parser.add_argument("--output", default=None)
    parser.add_argument(
        "--cache",
        default=None,
        help="directory of cached SCLD generators (default: <output>/.generator_cache)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny SCLD model, 2 seeds: a smoke test"
    )
    parser.add_argument(
        "--scvi-epochs",
        type=int,
        default=None,
        help="scVI training epochs (default: scvi-tools' heuristic, 400 for small data)",
    )
    parser.add_argument(
        "--mlflow",
        nargs="?",
        const="",
        default=None,
        metavar="URI",
        help="log the results to MLflow (default URI: $MLFLOW_TRACKING_URI, else "
        "sqlite:///mlruns/mlflow.db in the working directory)",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="rebuild report.md and plots from saved results"
    )
    parser.add_argument(
        "--keep-other-methods",
        action="store_true",
        help="keep the saved rows of methods not run now (e.g. rerun SCLD after a change and "
        "keep scVI's); the saved run must have the same seeds and downsampled types",
    )
    args = parser.parse_args(argv)
    if args.report_only:
        out = Path(args.output or Path(__file__).parent / "results" / Path(args.dataset).stem)
        return _rebuild(out, args.mlflow)

    X, y = load(args.dataset, args.labels_key)
    name = Path(args.dataset).stem if args.dataset not in DATASETS else args.dataset
    out = Path(args.output or Path(__file__).parent / "results" / name)
    out.mkdir(parents=True, exist_ok=True)
    cache = args.cache or str(out / ".generator_cache")
    scld_params = QUICK if args.quick else {}
    seeds = list(range(2 if args.quick else args.seeds))
    types = args.types or protocols.default_downsample_types(y)
    log = print
    log(f"{name}: {X.shape[0]} cells x {X.shape[1]} genes, {len(set(y))} types; seeds {seeds}")
    start = time.perf_counter()
    frames = []
    run = {"natural", "downsample", "fidelity"} if args.protocol == "all" else {args.protocol}
    runs = protocols.Runs(
        X, y, args.methods, args.classifiers, cache, scld_params, log, args.scvi_epochs
    )
    if "natural" in run:
        log("natural imbalance")
        frames.append(protocols.natural_imbalance(runs, seeds))
    if "downsample" in run:
        log(f"rare-cell downsampling of {types} to k={args.k}")
        frames.append(protocols.rare_downsampling(runs, seeds, args.k, types))
    downstream = pd.concat(frames, ignore_index=True) if frames else None
    fidelity = None
    if "fidelity" in run:
        log("fidelity")
        fidelity = protocols.fidelity(
            X,
            y,
            seeds[: args.fidelity_seeds],
            cache,
            scld_params,
            log,
            out / "embedding.png",
            with_scvi="scVI" in args.methods,
            scvi_epochs=args.scvi_epochs,
        )
    kept = {}
    if args.keep_other_methods:
        downstream, fidelity, kept = _keep_other_methods(out, downstream, fidelity, seeds, types)
    if downstream is not None:
        downstream.to_csv(out / "results_downstream.csv", index=False)
    if fidelity is not None:
        fidelity.to_csv(out / "results_fidelity.csv", index=False)
    meta = {
        "data": f"{name}: {X.shape[0]} cells x {X.shape[1]} genes, {len(set(y))} types",
        "seeds": seeds,
        "downsampled types": types,
        "split": "stratified 70/30 per seed; augmentation inside the Pipeline on the training part only",
        "pipeline": "augment -> log-normalize -> TruncatedSVD(50) -> classifier (logreg: StandardScaler + LogisticRegression; kNN k=15 distance-weighted; random forest 200 trees)",
        "SCLD parameters": json.dumps(scld_params) if scld_params else "defaults",
        **(
            {"scVI": f"n_latent 10, ZINB, {args.scvi_epochs or 'default'} epochs"}
            if "scVI" in args.methods
            else {}
        ),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "wall time": f"{time.perf_counter() - start:.0f} s",
        **kept,
        "command": "python -m evaluation "
        + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
    }
    (out / "meta.json").write_text(json.dumps({"dataset": name, **meta}, indent=1, default=str))
    path = write_report(out, name, downstream, fidelity, meta)
    log(f"wrote {path}")
    _track(args.mlflow, out, name, downstream, fidelity, meta, log)
    return 0


def _keep_other_methods(out: Path, downstream, fidelity, seeds, types):
    """The new results plus the saved rows of every method this run did not produce.

    The saved run must have used the same seeds and downsampled types, so that every kept
    row was scored on the same splits as the new ones.
    """
    saved_meta = json.loads((out / "meta.json").read_text())
    if saved_meta.get("seeds") != seeds or saved_meta.get("downsampled types") != list(types):
        raise SystemExit(
            f"--keep-other-methods: the results in {out} used seeds "
            f"{saved_meta.get('seeds')} and types {saved_meta.get('downsampled types')}, this "
            f"run {seeds} and {list(types)}; rerun every method instead."
        )
    kept = {}
    merged = []
    for kind, new in (("downstream", downstream), ("fidelity", fidelity)):
        path = out / f"results_{kind}.csv"
        if not path.exists():
            merged.append(new)
            continue
        old = pd.read_csv(path)
        if new is not None:  # a protocol not run now keeps all its rows
            old = old[~old["method"].isin(set(new["method"]))]
        if len(old):
            kept[kind] = sorted(set(old["method"]))
        merged.append(old if new is None else pd.concat([new, old], ignore_index=True))
    note = {}
    if kept:
        rows = "; ".join(f"{kind} rows of {methods}" for kind, methods in kept.items())
        note["kept from the previous run"] = (
            f"{rows} (same seeds and splits; its command: {saved_meta.get('command')}; "
            f"wall time {saved_meta.get('wall time')})"
        )
        if "scVI" in saved_meta and any("scVI" in methods for methods in kept.values()):
            note["scVI"] = saved_meta["scVI"]
        for key in ("kept from the previous run",):
            if key in saved_meta:  # what that run had kept in turn
                note[key] += f"; it had kept: {saved_meta[key]}"
    return merged[0], merged[1], note


def _track(uri, out, name, downstream, fidelity, meta, log) -> None:
    if uri is None:
        return
    from evaluation.tracking import log_benchmark, tracking_uri

    run_id = log_benchmark(out, name, downstream, fidelity, meta, uri or None)
    if run_id is not None:
        log(f"logged to MLflow at {tracking_uri(uri or None)}: run {run_id}")


def _rebuild(out: Path, mlflow_uri: str | None = None) -> int:
    meta = json.loads((out / "meta.json").read_text())
    name = meta.pop("dataset")
    frames = {}
    for kind in ("downstream", "fidelity"):
        path = out / f"results_{kind}.csv"
        frames[kind] = pd.read_csv(path) if path.exists() else None
    print(f"wrote {write_report(out, name, frames['downstream'], frames['fidelity'], meta)}")
    _track(mlflow_uri, out, name, frames["downstream"], frames["fidelity"], meta, print)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
