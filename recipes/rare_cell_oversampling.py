"""Does over-sampling rare cell types help a classifier? None vs SMOTE vs SCLD, three classifiers.

What it does
    Takes the shipped Baron human pancreas data (1,937 cells x 20,125 genes, raw UMI
    counts, 14 cell types) and scores three classifiers -- logistic regression, k-nearest
    neighbours and a random forest -- with no augmentation, SMOTE and SCLD, by stratified
    k-fold cross-validation. Each combination is an imblearn ``Pipeline``::

        augment (on raw counts) -> log-normalize -> 50 SVD components -> classifier

    so synthetic cells are made from the training folds only and every score is computed
    on real, held-out cells. Both samplers raise every rare type (under 2% of the cells,
    at least 3 cells) to the median type size, as ``scld-aug demo`` does
    (:func:`scld_aug.presets.rare_strategy`). SCLD gets ``memory=OUTPUT_DIR/scld_cache``: its
    generator is trained once per fold and reused by the other two classifiers (and by
    reruns of the recipe; delete the folder to retrain).

How to run (from the repository root)::

    python recipes/rare_cell_oversampling.py           # defaults, 3 folds: ~6 min on 2 CPU cores
    python recipes/rare_cell_oversampling.py --smoke   # tiny model, 2 folds, fewer cells: ~15 s

What it prints
    How long each classifier x method took and where SCLD's generators came from
    ("trained" once per fold, then "memory"), then one table, a row per classifier x
    method: the F1 of every rare type from the pooled out-of-fold predictions, their mean
    ("mean rare F1") and the macro-F1 over all 14 types. It writes that table to
    ``OUTPUT_DIR/f1.csv`` and a bar chart of mean rare-type F1 and macro-F1 to
    ``OUTPUT_DIR/rare_f1_by_classifier.png``. Rare test sets are tiny (a few cells per
    fold), so differences of a few hundredths are noise; see ``evaluation/`` for the
    repeated multi-seed benchmark.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

METHODS = ("none", "SMOTE", "SCLD")
CLASSIFIERS = ("logistic regression", "kNN", "random forest")
SMOKE_CELLS_PER_TYPE = 100  # smoke mode: cap on the large types; rare types are kept whole


def make_pipeline(method: str, classifier: str, seed: int, memory: Path, quick: bool):
    """``augment -> log-normalize -> 50 SVD components -> classifier`` as an imblearn Pipeline.

    The classifiers follow ``scld_aug/benchmark/methods.py``: scaled components for the linear
    model; kNN and forests use the components as they are.
    """
    from imblearn.over_sampling import SMOTE
    from imblearn.pipeline import Pipeline
    from sklearn.decomposition import TruncatedSVD
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline as make_sklearn_pipeline
    from sklearn.preprocessing import StandardScaler

    from scld_aug import SCLDSampler
    from scld_aug.preprocessing import log_normalizer
    from scld_aug.presets import QUICK, rare_strategy

    steps = []
    if method == "SMOTE":
        # k=2 neighbours: rare types have as few as 3 cells in a training fold.
        steps.append(
            ("aug", SMOTE(sampling_strategy=rare_strategy, k_neighbors=2, random_state=seed))
        )
    elif method == "SCLD":
        sampler = SCLDSampler(
            sampling_strategy=rare_strategy,
            random_state=seed,
            memory=str(memory),
            **(QUICK if quick else {}),
        )
        steps.append(("aug", sampler))
    clf = {
        "logistic regression": lambda: make_sklearn_pipeline(
            StandardScaler(), LogisticRegression(max_iter=2000)
        ),
        "kNN": lambda: KNeighborsClassifier(n_neighbors=15, weights="distance"),
        "random forest": lambda: RandomForestClassifier(
            n_estimators=200, n_jobs=1, random_state=seed
        ),
    }[classifier]()
    steps += [
        ("norm", log_normalizer()),
        ("svd", TruncatedSVD(50, random_state=seed)),
        ("clf", clf),
    ]
    return Pipeline(steps)


def smoke_subset(y: np.ndarray, seed: int) -> np.ndarray:
    """Row indices keeping at most ``SMOKE_CELLS_PER_TYPE`` cells of each type.

    On Baron the same five types stay rare (under 2% of the remaining cells), so smoke mode
    augments the same types as the full run.
    """
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(y == t))[:SMOKE_CELLS_PER_TYPE] for t in np.unique(y)]
    return np.sort(np.concatenate(keep))


def plot(summary: pd.DataFrame, path: Path) -> None:
    """Two panels (mean rare-type F1, macro-F1): a group of bars per classifier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    width = 0.8 / len(METHODS)
    x = np.arange(len(CLASSIFIERS))
    titles = {"mean rare F1": "mean F1 of the rare types", "macro-F1": "macro-F1, all types"}
    for ax, (column, title) in zip(axes, titles.items(), strict=True):
        for i, method in enumerate(METHODS):
            values = [summary.loc[(clf, method), column] for clf in CLASSIFIERS]
            bars = ax.bar(x + i * width, values, width, label=method)
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xticks(x + width * (len(METHODS) - 1) / 2)
        ax.set_xticklabels(CLASSIFIERS)
        ax.set_title(title)
        ax.set_ylim(0, 1.25)
        ax.legend(fontsize=8, ncol=len(METHODS), loc="upper center")
    axes[0].set_ylabel("F1 (pooled out-of-fold)")
    fig.suptitle("Baron pancreas: augmenting rare cell types, by classifier")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Run the comparison; returns the table it prints."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", default="rare_cell_oversampling_output", type=Path)
    parser.add_argument("--folds", type=int, help="cross-validation folds (default 3; smoke 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"tiny model, 2 folds, at most {SMOKE_CELLS_PER_TYPE} cells per type",
    )
    args = parser.parse_args(argv)
    n_folds = args.folds or (2 if args.smoke else 3)

    from sklearn.metrics import f1_score

    from scld_aug import datasets
    from scld_aug.apps.demo import cross_validated_predictions
    from scld_aug.presets import RARE_FRACTION

    start = time.perf_counter()
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    adata = datasets.baron_pancreas()
    X, y = adata.X, adata.obs["cell_type"].astype(str).to_numpy()
    if args.smoke:
        keep = smoke_subset(y, args.seed)
        X, y = X[keep], y[keep]
    counts = Counter(y.tolist())
    classes = np.unique(y)
    # Scored as rare: every type under 2%, t_cell included although it is too small to augment.
    rare = [t for t, n in counts.most_common() if n < RARE_FRACTION * len(y)]
    print(
        f"Baron pancreas: {len(y)} cells x {X.shape[1]} genes, {len(classes)} types; rare "
        f"(< {RARE_FRACTION:.0%}): " + ", ".join(f"{t} ({counts[t]})" for t in rare)
    )
    print(
        f"{n_folds}-fold stratified CV; pipelines: augment -> log-normalize -> 50 SVD "
        f"components -> classifier; {'tiny SCLD model (smoke)' if args.smoke else 'default SCLD'}"
    )

    rows = []
    memory = out / "scld_cache"
    for classifier in CLASSIFIERS:
        for method in METHODS:
            t0 = time.perf_counter()
            made = []  # the fitted pipelines, to report where SCLD's generators came from

            def build(method=method, classifier=classifier, made=made):
                pipe = make_pipeline(method, classifier, args.seed, memory, args.smoke)
                made.append(pipe)
                return pipe

            predicted = cross_validated_predictions(build, X, y, n_folds, args.seed)
            f1 = pd.Series(
                f1_score(y, predicted, labels=classes, average=None, zero_division=0),
                index=classes,
            )
            sources = ""
            if method == "SCLD":
                found = Counter(p.named_steps["aug"].generator_source_ for p in made)
                sources = "  SCLD generators: " + ", ".join(f"{n} {s}" for s, n in found.items())
            print(f"  {classifier:<20} {method:<6} {time.perf_counter() - t0:6.1f} s{sources}")
            row = {"classifier": classifier, "method": method}
            row.update(f1[rare].to_dict())
            row["mean rare F1"] = f1[rare].mean()
            row["macro-F1"] = f1.mean()
            rows.append(row)

    summary = pd.DataFrame(rows).set_index(["classifier", "method"])
    print(
        "\nF1 of the rare types (pooled out-of-fold predictions of real cells), their mean, "
        "and macro-F1 over all types:"
    )
    print(summary.round(3).to_string())
    summary.to_csv(out / "f1.csv")
    plot(summary, out / "rare_f1_by_classifier.png")
    print(f"\nWrote {out}/f1.csv and {out}/rare_f1_by_classifier.png")
    print(f"Total time {time.perf_counter() - start:.0f} s")
    return summary


if __name__ == "__main__":
    from scld_aug.logs import console

    with console():  # the library's messages: each training and fold
        main()
