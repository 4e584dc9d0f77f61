"""Compare over-samplers as runs of one MLflow experiment, and read the comparison back.

What it does
    Scores logistic regression on the shipped Baron human pancreas data (1,937 cells, 14
    types, raw UMI counts) by stratified 3-fold cross-validation with five augmentation
    settings: none, RandomOverSampler, SMOTE, SCLD (defaults) and SCLD with stronger
    pre-guidance (``guidance_scale=4``). Every sampler raises the rare types (under 2% of
    the cells) to the median type size inside an imblearn Pipeline, so synthetic cells come
    from training folds only and scores are computed on real held-out cells.

    Each setting is one MLflow run in the experiment ``compare_in_mlflow``: its parameters,
    macro-F1 per fold (as steps) with mean and sd, the F1 of every rare type from pooled
    out-of-fold predictions, and a per-type F1 table as an artifact. The SCLD runs also
    hold a nested run with the fold-0 sampler logged by :func:`scld_aug.tracking.log_fit`
    (training losses, plots, the generator as a loadable MLflow model). The two SCLD
    settings differ only at sampling time, so they share trained generators through
    ``memory=``.

    The comparison table is then read back from MLflow with ``mlflow.search_runs``, which
    is what the MLflow UI shows when the runs are selected and compared.

How to run (from the repository root)::

    python recipes/compare_in_mlflow.py            # ~5 min on 2 CPU cores
    python recipes/compare_in_mlflow.py --smoke    # tiny model, 2 folds, fewer cells: ~30 s
    mlflow ui --backend-store-uri sqlite:///compare_in_mlflow_output/mlflow.db

What it prints
    One line per run as it finishes, then the table from MLflow sorted by mean rare-type
    F1: macro-F1 (mean ± sd over folds), mean rare-type F1 and each rare type's F1.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

EXPERIMENT = "compare_in_mlflow"
SMOKE_CELLS_PER_TYPE = 100


def make_sampler(name: str, seed: int, memory: str, quick: bool):
    """The over-sampler of one setting (None for no augmentation)."""
    from imblearn.over_sampling import SMOTE, RandomOverSampler

    from scld_aug import SCLDSampler
    from scld_aug.presets import QUICK, rare_strategy

    if name == "none":
        return None
    if name == "RandomOverSampler":
        return RandomOverSampler(sampling_strategy=rare_strategy, random_state=seed)
    if name == "SMOTE":
        return SMOTE(sampling_strategy=rare_strategy, k_neighbors=2, random_state=seed)
    guidance = 4.0 if name == "SCLD guidance=4" else 2.0
    return SCLDSampler(
        sampling_strategy=rare_strategy,
        guidance_scale=guidance,
        random_state=seed,
        memory=memory,
        **(QUICK if quick else {}),
    )


SETTINGS = ("none", "RandomOverSampler", "SMOTE", "SCLD", "SCLD guidance=4")


def run_setting(name, X, y, splits, rare, seed, memory, quick) -> dict:
    """Cross-validate one setting inside an active MLflow run and log what it did."""
    import mlflow
    from imblearn.pipeline import Pipeline
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    from scld_aug.preprocessing import log_normalizer
    from scld_aug.tracking import log_fit

    sampler = make_sampler(name, seed, memory, quick)
    steps = [("norm", log_normalizer()), ("clf", LogisticRegression(max_iter=1000))]
    predicted = np.empty(len(y), dtype=object)
    fold_f1 = []
    first_sampler = None
    for i, (train, test) in enumerate(splits):
        pipe = Pipeline(([("aug", sampler)] if sampler is not None else []) + steps)
        pipe.fit(X[train], y[train])
        predicted[test] = pipe.predict(X[test])
        fold_f1.append(f1_score(y[test], predicted[test], average="macro", zero_division=0))
        mlflow.log_metric("macro_f1_fold", fold_f1[-1], step=i)
        if i == 0 and name.startswith("SCLD"):
            first_sampler = (pipe.named_steps["aug"], train)
    predicted = predicted.astype(str)
    per_type = f1_score(y, predicted, labels=rare, average=None, zero_division=0)
    params = {"method": name, "n_folds": len(splits), "classifier": "logistic regression"}
    if sampler is not None:
        params.update(
            {k: v for k, v in sampler.get_params().items() if not callable(v) and k != "memory"}
        )
    mlflow.log_params(params)
    metrics = {
        "macro_f1_mean": float(np.mean(fold_f1)),
        "macro_f1_sd": float(np.std(fold_f1, ddof=1)),
        "rare_f1_mean": float(np.mean(per_type)),
        **{f"f1_{t}": float(v) for t, v in zip(rare, per_type, strict=True)},
    }
    mlflow.log_metrics(metrics)
    mlflow.log_table(
        pd.DataFrame({"cell_type": rare, "f1": per_type}), artifact_file="rare_type_f1.json"
    )
    if first_sampler is not None:
        fitted, train = first_sampler
        X_res, y_res = fitted.fit_resample(X[train], y[train])  # reuses the fold's generator
        log_fit(
            fitted,
            X[train],
            y[train],
            X_res,
            y_res,
            run_name=f"{name}: fold-0 sampler",
            tracking_uri=mlflow.get_tracking_uri(),
        )
    return metrics


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="compare_in_mlflow_output")
    parser.add_argument(
        "--tracking-uri", default=None, help="default: sqlite:///OUTPUT_DIR/mlflow.db"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny model, 2 folds, fewer cells")
    args = parser.parse_args(argv)

    import mlflow
    from sklearn.model_selection import StratifiedKFold

    from scld_aug import datasets
    from scld_aug.presets import rare_strategy
    from scld_aug.tracking.transport import ensure_experiment

    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    uri = args.tracking_uri or f"sqlite:///{out}/mlflow.db"
    adata = datasets.baron_pancreas()
    X, y = adata.X, adata.obs["cell_type"].astype(str).to_numpy()
    n_folds = 2 if args.smoke else args.folds
    if args.smoke:
        rng = np.random.default_rng(args.seed)
        keep = np.sort(
            np.concatenate(
                [
                    rng.permutation(np.flatnonzero(y == t))[:SMOKE_CELLS_PER_TYPE]
                    for t in np.unique(y)
                ]
            )
        )
        X, y = X[keep], y[keep]
    rare = sorted(rare_strategy(y))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        splits = list(StratifiedKFold(n_folds, shuffle=True, random_state=args.seed).split(X, y))
    print(f"Baron pancreas: {len(y)} cells, {n_folds}-fold CV, rare types: {', '.join(rare)}")

    mlflow.set_tracking_uri(uri)
    # Created with its files beside the database, so the output folder holds the whole store.
    mlflow.set_experiment(
        experiment_id=ensure_experiment(mlflow.MlflowClient(uri), uri, EXPERIMENT)
    )
    batch = f"seed{args.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    for name in SETTINGS:
        start = time.perf_counter()
        with mlflow.start_run(run_name=name, tags={"comparison": batch}):
            metrics = run_setting(
                name, X, y, splits, rare, args.seed, str(out / "generator_cache"), args.smoke
            )
        print(
            f"  {name:<18} macro-F1 {metrics['macro_f1_mean']:.3f}  rare F1 "
            f"{metrics['rare_f1_mean']:.3f}  ({time.perf_counter() - start:.0f} s)"
        )

    # The comparison, as MLflow has it (nested sampler runs left out).
    runs = mlflow.search_runs(
        experiment_names=[EXPERIMENT],
        filter_string=f"tags.comparison = '{batch}'",
        order_by=["metrics.rare_f1_mean DESC"],
    )
    table = pd.DataFrame(
        {
            "method": runs["params.method"],
            "macro-F1": [
                f"{m:.3f} ± {s:.3f}"
                for m, s in zip(
                    runs["metrics.macro_f1_mean"], runs["metrics.macro_f1_sd"], strict=True
                )
            ],
            "mean rare F1": runs["metrics.rare_f1_mean"].round(3),
            **{t: runs[f"metrics.f1_{t}"].round(3) for t in rare},
        }
    ).set_index("method")
    print(f"\nFrom MLflow ({uri}, experiment {EXPERIMENT!r}, comparison {batch}):")
    print(table.to_string())
    table.to_csv(out / "comparison.csv")
    print(f"\nView: mlflow ui --backend-store-uri {uri}")
    return table


if __name__ == "__main__":
    from scld_aug.logs import console

    with console():  # the library's messages: each training and fold
        main()
