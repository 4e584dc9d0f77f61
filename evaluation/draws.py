"""How much of a difference between methods is the random draw of the synthetic cells?

``python -m evaluation.draws --dataset pbmc [--protocol natural | --k 25] --draws 5 --output x.csv``

The benchmark draws each method's cells once per seed. This script keeps everything else
fixed (the split, the cut training cells and, for SCLD, the trained generator) and draws the
cells again with other random states: draw 0 uses the seed itself, i.e. the benchmark's own
draw; draw ``d`` uses ``seed + 1000 * d``. It does the same for RandomOverSampler and SMOTE,
whose cells are random too. The summary gives, per method and classifier, the mean over
seeds for each draw, the spread of that mean over draws, and the mean over all draws.

SCLD draws with the default sampling parameters, as the benchmark's own SCLD rows do (its
variants such as ``"SCLD w=3"`` are not drawn again). Its generators come from the
benchmark's cache (``--cache``, default
``evaluation/results/<dataset>/.generator_cache``, so a benchmark run must have trained them;
otherwise they are trained and cached now) or from the ablation's saved generators
(``--generators DIR --variant NAME``).
"""

from __future__ import annotations

import argparse
import warnings

import pandas as pd

from evaluation import ablation
from evaluation.__main__ import load
from scld_aug.benchmark.methods import make_pipeline
from scld_aug.benchmark.protocols import default_downsample_types, downsampled, split
from scld_aug.metrics import downstream_scores
from scld_aug.presets import rare_strategy

#: Random states of draw ``d`` for seed ``s``: ``s + DRAW_STRIDE * d`` (draw 0: the benchmark's).
DRAW_STRIDE = 1000


def _generator(args, seed: int, targets: dict, Xk, yk):
    from scld_aug import SCLDGenerator, SCLDSampler

    if args.generators:
        return SCLDGenerator.load(
            ablation.saved_generator(args.generators, args.dataset, args.k, seed, args.variant)
        )
    cache = args.cache or f"evaluation/results/{args.dataset}/.generator_cache"
    sampler = SCLDSampler(
        sampling_strategy=targets, random_state=seed, memory=cache, n_jobs=args.threads
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return sampler.fit(Xk, yk).generator_


def run(args) -> pd.DataFrame:
    from imblearn.over_sampling import SMOTE, RandomOverSampler

    X, y = load(args.dataset, args.labels_key)
    rows = []
    for seed in args.seeds:
        if args.protocol == "natural":
            train_k, test = split(y, seed)
            targets = rare_strategy(y[train_k])
            types = sorted(targets)
        else:
            types = args.types or default_downsample_types(y)
            _, train_k, test, targets = downsampled(y, seed, args.k, types)
        Xk, yk = X[train_k], y[train_k]
        generator = _generator(args, seed, targets, Xk, yk)
        for draw in range(args.draws):
            state = seed + DRAW_STRIDE * draw
            resampled = {
                "RandomOverSampler": RandomOverSampler(
                    sampling_strategy=targets, random_state=state
                ).fit_resample(Xk, yk),
                "SMOTE": SMOTE(
                    sampling_strategy=targets, k_neighbors=2, random_state=state
                ).fit_resample(Xk, yk),
                "SCLD": ablation.resample(generator, targets, state, args.threads, Xk, yk)[1:],
            }
            for method, (X_res, y_res) in resampled.items():
                for clf in args.classifiers:
                    pipe = make_pipeline(None, clf, seed).fit(X_res, y_res)
                    scores = downstream_scores(y[test], pipe.predict(X[test]), rare_classes=types)
                    rows += [
                        {"seed": seed, "draw": draw, "method": method, "classifier": clf,
                         "metric": metric, "value": scores[metric]}
                        for metric in ("rare_macro_f1", "macro_f1")
                    ]  # fmt: skip
        print(f"seed {seed}: {args.draws} draws", flush=True)
        pd.DataFrame(rows).to_csv(args.output, index=False)  # every seed saved as it finishes
    return pd.DataFrame(rows)


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per method, classifier and metric: the mean over seeds of each draw, the standard
    deviation of that mean over draws, and the mean over all draws."""
    means = results.groupby(["method", "classifier", "metric", "draw"]).value.mean().unstack()
    table = means.rename(columns=lambda d: f"draw {d}")
    table["sd over draws"] = means.std(axis=1)
    table["mean of draws"] = means.mean(axis=1)
    return table.round(3)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.draws", description=__doc__.splitlines()[0]
    )
    ablation.add_protocol_arguments(parser)
    parser.add_argument(
        "--protocol",
        choices=["downsample", "natural"],
        default="downsample",
        help="the benchmark protocol whose splits and targets are used (--k and --types: "
        "downsample only)",
    )
    parser.add_argument(
        "--draws", type=int, default=5, help="draws per seed (draw 0: the benchmark's)"
    )
    parser.add_argument("--cache", default=None, help="the benchmark's generator cache")
    parser.add_argument("--generators", default=None, help="the ablation's saved generators")
    parser.add_argument("--variant", default="default", help="saved generators' training variant")
    parser.add_argument("--output", required=True, help="CSV of every number")
    parser.add_argument("--summary-only", action="store_true", help="summarise an existing CSV")
    args = parser.parse_args(argv)
    if args.generators and args.protocol == "natural":
        parser.error(
            "--generators reads the ablation's downsampling generators; with --protocol "
            "natural SCLD's generators come from the benchmark's cache (--cache)"
        )
    results = pd.read_csv(args.output) if args.summary_only else run(args)
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(summary(results).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
