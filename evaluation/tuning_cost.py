"""What tuning costs: a 20-trial guidance study against a 1-trial study on the same folds.

Both studies start cold (no cached generators) on the shipped Baron pancreas data, raise
the rare types to the median type size (as ``scld-aug demo`` does) and score macro-F1 of
log-normalized logistic regression by 3-fold cross-validation. Because only sampling-time
parameters are searched, each study trains one generator per fold; extra trials only add
sampling and classifier fits. Without that reuse, every trial would retrain the folds, so
a 20-trial study would cost about 20 times a 1-trial study.

    python -m evaluation.tuning_cost [--trials 20] [--folds 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import pandas as pd
import torch

from scld_aug import SCLDSampler, datasets
from scld_aug.presets import QUICK, rare_strategy
from scld_aug.tuning import tune_guidance


def _study(X, y, n_trials: int, folds: int, seed: int, quick: bool) -> dict:
    sampler = SCLDSampler(
        sampling_strategy=rare_strategy, random_state=seed, **(QUICK if quick else {})
    )
    start = time.perf_counter()
    result = tune_guidance(
        X, y, sampler=sampler, cv=folds, n_trials=n_trials, refit=False, random_state=seed
    )
    wall = time.perf_counter() - start
    trial_s = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in result.study.trials
        if t.datetime_complete is not None
    ]
    return {
        "trials": n_trials,
        "generators_trained": result.n_trainings,
        "wall_s": wall,
        "training_s": wall - sum(trial_s),
        "mean_trial_s": sum(trial_s) / len(trial_s),
        "best_macro_f1": result.best_score,
        "default_macro_f1": result.default_score,
        "best_params": json.dumps(result.best_params),
    }


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny model: checks the script only")
    parser.add_argument("--out", default="evaluation/results/tuning_cost")
    args = parser.parse_args(argv)

    adata = datasets.baron_pancreas()
    X, y = adata.X, adata.obs["cell_type"].astype(str).to_numpy()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        "n_jobs=None (1 torch thread); data: Baron pancreas {X.shape[0]} cells x "
        f"{X.shape[1]} genes; {args.folds}-fold CV, macro-F1 of logistic regression"
    )
    rows = []
    for n_trials in (1, args.trials):
        row = _study(X, y, n_trials, args.folds, args.seed, args.quick)
        print(json.dumps(row), flush=True)
        rows.append(row)
    table = pd.DataFrame(rows).set_index("trials")
    one, many = table.iloc[0], table.iloc[-1]
    ratio = many["wall_s"] / one["wall_s"]
    print(table.drop(columns="best_params").round(3).to_string())
    print(
        f"\n{args.trials} trials cost {ratio:.2f}x one trial (retraining per trial: "
        f"~{args.trials}x); generators trained: {int(one['generators_trained'])} vs "
        f"{int(many['generators_trained'])}"
    )
    print(
        f"default guidance macro-F1 {many['default_macro_f1']:.4f} -> tuned "
        f"{many['best_macro_f1']:.4f} with {many['best_params']}"
    )
    if not args.quick:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table.assign(ratio_to_one_trial=table["wall_s"] / one["wall_s"]).to_csv(
            out / "tuning_cost.csv"
        )
    return table


if __name__ == "__main__":
    main()
