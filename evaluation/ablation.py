"""Training and sampling variants of SCLD in the k-cell downsampling setting, all goals at once.

``python -m evaluation.ablation --dataset pbmc --training default "kl=1" --sampling "w=2"
"w=4 ref=confusable" --seeds 5 --output results.csv``

For each seed, the downsampling protocol's split is made (types cut to ``k`` training
cells, see :func:`scld_aug.benchmark.protocols.rare_downsampling`). Each training variant trains
one generator on that training set; each sampling variant then draws the same cells a
Pipeline would (``fit_resample`` with the generator, no retraining) and is scored on:

* downstream: rare-type F1 and macro-F1 of each classifier of the benchmark on the untouched
  test cells (the pipeline of :func:`scld_aug.benchmark.methods.make_pipeline` without the sampler,
  fitted on the resampled data: the same numbers as with the sampler inside);
* ``recognised``: per cut type, the share of its synthetic cells that a logistic regression
  trained on all real training cells of the split (before the cut) calls that type;
* ``memorization_ratio``: per cut type, distance of synthetic cells to their nearest of the
  ``k`` real training cells, over the same for the type's held-out test cells
  (:func:`scld_aug.metrics.memorization`; 1 = as novel as new real cells, 0 = copies);
* ``precision`` and ``recall`` of each cut type on the test cells, per classifier;
* ``guidance_scale`` (the number given) and ``sampling_seconds`` (sampling and decoding,
  no training).

``none``, ``RandomOverSampler`` and ``SMOTE`` are scored the same way in the same run.
Variants are written as in the benchmark's method names: ``"balance=0 kl=1"``,
``"w=4 ref=confusable"``; ``default`` is the sampler's defaults.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.__main__ import load
from scld_aug.benchmark.methods import make_pipeline
from scld_aug.benchmark.protocols import (
    REAL_HELD_OUT,
    default_downsample_types,
    downsampled,
    variant_params,
)
from scld_aug.metrics import ReferenceEmbedding, downstream_scores, memorization


def saved_generator(folder, dataset: str, k: int, seed: int, training: str) -> Path:
    """Where the ablation saves (and the other experiment scripts read) the generator of
    one seed and training variant."""
    return Path(folder) / f"{dataset}_k{k}_seed{seed}_{training}.pt"


def parse(variant: str) -> dict:
    """``"w=4 ref=confusable"`` -> sampler parameters (``default`` -> {})."""
    return {} if variant == "default" else variant_params("SCLD " + variant)


def resample(generator, targets: dict, seed: int, threads: int, X, y, **params):
    """``fit_resample`` of the split's training cells with a trained ``generator`` (no
    retraining), as a Pipeline would draw them: ``(sampler, X_res, y_res)``. The warning
    about too-small classes is expected in these protocols and silenced."""
    from scld_aug import SCLDSampler

    sampler = SCLDSampler(
        sampling_strategy=targets, random_state=seed, generator=generator, n_jobs=threads, **params
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        X_res, y_res = sampler.fit_resample(X, y)
    return sampler, X_res, y_res


def score_cells(X, y, train, train_k, test, types, X_res, y_res, seed, classifiers) -> list[dict]:
    """Downstream, recognition and memorization rows for one resampled training set."""
    rows = []
    for clf in classifiers:
        pipe = make_pipeline(None, clf, seed).fit(X_res, y_res)
        predicted = pipe.predict(X[test])
        scores = downstream_scores(y[test], predicted, rare_classes=types)
        rows += [
            {"classifier": clf, "metric": m, "value": scores[m]}
            for m in ("rare_macro_f1", "macro_f1")
        ]
        rows += per_type_errors(y[test], predicted, types, clf)
    n_real = len(train_k)
    if len(y_res) == n_real:  # no synthetic cells
        return rows
    embedding, judge = recognition_judge(X, y, train, train_k)
    synthetic, labels = X_res[n_real:], y_res[n_real:]
    rows += training_proxies(embedding, X[train_k], y[train_k], synthetic, labels, types, seed)
    for t in types:
        mine = labels == t
        if not mine.any():
            continue
        cells = embedding.transform(synthetic[np.flatnonzero(mine)])
        novelty = memorization(
            embedding.transform(X[train_k[y[train_k] == t]]),
            cells,
            embedding.transform(X[test[y[test] == t]]),
        )
        rows += [
            {
                "cell_type": t,
                "metric": "recognised",
                "value": float(np.mean(judge.predict(cells) == t)),
            },
            {"cell_type": t, "metric": "memorization_ratio", "value": novelty["ratio"]},
        ]
    return rows


def recognition_judge(X, y, train, train_k):
    """The embedding (fitted on the cut training cells) and the logistic regression of all
    real training cells of the split (before the cut) that judge recognition."""
    from sklearn.linear_model import LogisticRegression

    embedding = ReferenceEmbedding().fit(X[train_k])
    return embedding, LogisticRegression(max_iter=2000).fit(embedding.transform(X[train]), y[train])


def held_out_recognition(X, y, train, train_k, test, types) -> list[dict]:
    """The judge's recognition of each cut type's held-out real cells: the level of a
    generator that reproduces the type faithfully (look-alike types' real cells are
    confused too)."""
    embedding, judge = recognition_judge(X, y, train, train_k)
    rows = []
    for t in types:
        cells = embedding.transform(X[test[y[test] == t]])
        value = float(np.mean(judge.predict(cells) == t))
        rows.append({"cell_type": t, "metric": "recognised", "value": value})
    return rows


def per_type_errors(y_true, y_pred, types, classifier) -> list[dict]:
    """Precision and recall of each cut type on the test cells, to tell a generator whose
    cells pull other types' cells in (precision) from one that misses the type's own
    (recall)."""
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, _, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=list(types), zero_division=0
    )
    return [
        {"classifier": classifier, "cell_type": t, "metric": metric, "value": float(v)}
        for t, p, r in zip(types, precision, recall, strict=True)
        for metric, v in (("precision", p), ("recall", r))
    ]


def training_proxies(embedding, X_real, y_real, synthetic, labels, types, seed) -> list[dict]:
    """Scores a sampler could compute at fit time, from its training cells alone, to choose
    between generators: the mean F1 of the cut types on the real training cells, each
    predicted with the synthetic cells added to the training side, by

    * ``proxy_knn``: leave-one-out 5-nearest neighbours in the embedding;
    * ``proxy_logreg``: 5-fold cross-validated logistic regression (synthetic cells in every
      training fold).

    The synthetic cells come from a generator that saw every real cell, held-out ones
    included, so copies of training cells are rewarded: measured to see whether such a
    cheap proxy still orders generators as the downstream test does.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import NearestNeighbors
    from sklearn.pipeline import make_pipeline as make_sk_pipeline
    from sklearn.preprocessing import StandardScaler

    real, fake = embedding.transform(X_real), embedding.transform(synthetic)
    pool = np.vstack([real, fake])
    pool_labels = np.concatenate([y_real, labels])
    _, idx = NearestNeighbors(n_neighbors=6).fit(pool).kneighbors(real)
    knn_pred = []
    for i, row in enumerate(idx):
        neighbours = [j for j in row if j != i][:5]
        values, counts = np.unique(pool_labels[neighbours], return_counts=True)
        knn_pred.append(values[counts.argmax()])
    logreg_pred = np.empty(len(y_real), dtype=object)
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # types with fewer than 5 cells
        for fit_rows, held in folds.split(real, y_real):
            model = make_sk_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            model.fit(np.vstack([real[fit_rows], fake]), np.concatenate([y_real[fit_rows], labels]))
            logreg_pred[held] = model.predict(real[held])
    rows = []
    for name, predicted in (("proxy_knn", np.asarray(knn_pred)), ("proxy_logreg", logreg_pred)):
        f1 = f1_score(y_real, predicted.astype(str), labels=list(types), average="macro")
        rows.append({"metric": name, "value": float(f1)})
    return rows


def run(args) -> pd.DataFrame:
    from imblearn.over_sampling import SMOTE, RandomOverSampler

    from scld_aug import SCLDGenerator, SCLDSampler

    X, y = load(args.dataset, args.labels_key)
    types = args.types or default_downsample_types(y)
    rows = []
    out = Path(args.output)
    for seed in args.seeds:
        train, train_k, test, targets = downsampled(y, seed, args.k, types)
        Xk, yk = X[train_k], y[train_k]

        def record(
            method, X_res, y_res, seconds, seed=seed, train=train, train_k=train_k, test=test
        ):
            for row in score_cells(
                X, y, train, train_k, test, types, X_res, y_res, seed, args.classifiers
            ):
                rows.append({"seed": seed, "method": method, "seconds": seconds, **row})

        record("none", Xk, yk, 0.0)
        rows.extend(
            {"seed": seed, "method": REAL_HELD_OUT, "seconds": 0.0, **row}
            for row in held_out_recognition(X, y, train, train_k, test, types)
        )
        for name, baseline in (
            ("RandomOverSampler", RandomOverSampler(sampling_strategy=targets, random_state=seed)),
            ("SMOTE", SMOTE(sampling_strategy=targets, k_neighbors=2, random_state=seed)),
        ):
            record(name, *baseline.fit_resample(Xk, yk), 0.0)
        for training in args.training:
            start = time.perf_counter()
            saved = (
                saved_generator(args.generators, args.dataset, args.k, seed, training)
                if args.generators
                else None
            )
            if saved is not None and saved.exists():
                generator = SCLDGenerator.load(saved)
            else:
                generator = (
                    SCLDSampler(
                        sampling_strategy=targets,
                        random_state=seed,
                        n_jobs=args.threads,
                        **parse(training),
                    )
                    .fit(Xk, yk)
                    .generator_
                )
                if saved is not None:
                    generator.save(saved)
            fit_seconds = time.perf_counter() - start
            for sampling in args.sampling:
                start = time.perf_counter()
                sampler, X_res, y_res = resample(
                    generator, targets, seed, args.threads, Xk, yk, **parse(sampling)
                )
                sampling_seconds = time.perf_counter() - start
                method = f"SCLD [{training}] [{sampling}]"
                record(method, X_res, y_res, fit_seconds + sampling_seconds)
                rows.append(
                    {"seed": seed, "method": method, "metric": "sampling_seconds",
                     "value": sampling_seconds}
                )  # fmt: skip
                rows.append(
                    {"seed": seed, "method": method, "metric": "guidance_scale",
                     "value": float(sampler.guidance_scale)}
                )  # fmt: skip
            print(f"seed {seed} [{training}]: fit {fit_seconds:.0f} s", flush=True)
        pd.DataFrame(rows).to_csv(out, index=False)  # every seed saved as it finishes
    return pd.DataFrame(rows)


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """One row per method: downstream mean ± sd over seeds per classifier and metric; the
    lowest and mean per-type recognition, the median per-type memorization ratio."""
    table = {}
    down = results[results.metric.isin(["rare_macro_f1", "macro_f1"])]
    per_seed = down.groupby(["method", "classifier", "metric", "seed"]).value.mean()
    stats = per_seed.groupby(["method", "classifier", "metric"]).agg(["mean", "std"])
    for (clf, metric), part in stats.groupby(level=["classifier", "metric"]):
        name = f"{clf} {'rare' if metric == 'rare_macro_f1' else 'macro'}"
        table[name] = {m: f"{r['mean']:.3f} ± {r['std']:.3f}" for (m, _, _), r in part.iterrows()}
    for metric in ("proxy_knn", "proxy_logreg"):
        part = results[results.metric == metric].groupby("method").value
        if len(part):
            table[metric] = {m: f"{v.mean():.3f} ± {v.std():.3f}" for m, v in part}
    cells = results[results.metric.isin(["recognised", "memorization_ratio"])]
    if len(cells):
        per_type = cells.groupby(["method", "metric", "cell_type"]).value.mean()
        recognised = per_type.xs("recognised", level="metric").groupby("method")
        lowest = recognised.idxmin().map(lambda key: key[1])
        table["recognised min"] = {m: f"{v:.2f} ({lowest[m]})" for m, v in recognised.min().items()}
        table["recognised mean"] = recognised.mean().round(3).to_dict()
        ratio = per_type.xs("memorization_ratio", level="metric").groupby("method").median()
        table["memorization"] = ratio.round(3).to_dict()
    seconds = results.dropna(subset=["seconds"]).groupby("method").seconds.mean()
    table["seconds"] = seconds.round(0).to_dict()
    for metric, column, fmt in (
        ("sampling_seconds", "sampling s", "{:.1f}"),
        ("guidance_scale", "w (mean, range)", None),
    ):
        part = results[results.metric == metric].groupby("method").value
        if fmt:
            table[column] = {m: fmt.format(v) for m, v in part.mean().items()}
        else:
            table[column] = {m: f"{v.mean():.1f} ({v.min():g}-{v.max():g})" for m, v in part}
    return pd.DataFrame(table).fillna("")


def per_type_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Precision and recall of each cut type on the test cells, mean over seeds, one row per
    method and classifier (empty for results recorded before they were)."""
    part = results[results.metric.isin(["precision", "recall"])]
    if part.empty:
        return pd.DataFrame()
    means = part.groupby(["method", "classifier", "cell_type", "metric"]).value.mean()
    return means.unstack(["cell_type", "metric"]).round(3)


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """The downsampling setting shared by the experiment scripts: data, seeds, k, cut
    types, classifiers and threads."""
    parser.add_argument("--dataset", default="pbmc")
    parser.add_argument("--labels-key", default="cell_type")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--types", nargs="+", default=None)
    parser.add_argument("--classifiers", nargs="+", default=["logreg", "knn"])
    parser.add_argument("--threads", type=int, default=1, help="the samplers' n_jobs")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.ablation", description=__doc__.splitlines()[0]
    )
    add_protocol_arguments(parser)
    parser.add_argument("--training", nargs="+", default=["default"])
    parser.add_argument("--sampling", nargs="+", default=["default"])
    parser.add_argument(
        "--generators",
        default=None,
        help="folder where trained generators are saved and reused (sampling-only reruns)",
    )
    parser.add_argument("--output", required=True, help="CSV of every number")
    parser.add_argument("--summary-only", action="store_true", help="summarise an existing CSV")
    args = parser.parse_args(argv)
    results = pd.read_csv(args.output) if args.summary_only else run(args)
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(summary(results).to_string())
        errors = per_type_summary(results)
        if not errors.empty:
            print("\nPer cut type on the test cells (mean over seeds):")
            print(errors.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
