"""The main job: augment the shipped Baron pancreas data and show what augmentation does.

1. Trains SCLD on all cells, raises each rare cell type to the median class size, prints
   a per-class table of cell counts before/after, writes the augmented ``.h5ad`` and a
   t-SNE plot of real vs synthetic cells.
2. Scores a classifier with no augmentation, random duplication, SMOTE and SCLD by
   stratified k-fold cross-validation (augmentation inside the Pipeline, on training
   folds only) and prints the F1 of every rare type, their mean and the macro-F1 over all
   types, computed on the pooled out-of-fold predictions of real cells, with 95% bootstrap
   intervals over cells (the rare types have a few test cells each).

Run with ``scld-aug demo`` (or ``make demo``).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scld_aug import anndata_io
from scld_aug.files import atomic_write, check_output_folder
from scld_aug.presets import QUICK, RARE_FRACTION, rare_strategy

#: What the demo writes into its output folder.
OUTPUT_FILES = (
    "baron_augmented.h5ad",
    "class_counts.csv",
    "f1.csv",
    "f1_intervals.csv",
    "markers.csv",
    "tsne_real_vs_synthetic.png",
    "marker_dotplot.png",
    "rare_f1.png",
)

logger = logging.getLogger(__name__)


def _samplers(seed: int, quick: bool, progress: bool = True) -> dict:
    from imblearn.over_sampling import SMOTE, RandomOverSampler

    from scld_aug import SCLDSampler

    extra = QUICK if quick else {}
    return {
        "none": None,
        "RandomOverSampler": RandomOverSampler(sampling_strategy=rare_strategy, random_state=seed),
        # k=2 neighbours: rare types have as few as 3 training cells in a fold.
        "SMOTE": SMOTE(sampling_strategy=rare_strategy, k_neighbors=2, random_state=seed),
        # verbose: a progress bar for each fold's training, the longest part of the demo.
        "SCLD": SCLDSampler(
            sampling_strategy=rare_strategy, random_state=seed, verbose=progress, **extra
        ),
    }


def _pipeline(sampler):
    from imblearn.pipeline import Pipeline
    from sklearn.linear_model import LogisticRegression

    from scld_aug.preprocessing import log_normalizer

    steps = [("norm", log_normalizer()), ("clf", LogisticRegression(max_iter=1000))]
    return Pipeline(([("aug", sampler)] if sampler is not None else []) + steps)


def cross_validated_predictions(
    make_pipeline: Callable[[], Any], X, y, n_folds: int, seed: int
) -> np.ndarray:
    """Pooled out-of-fold predictions of a fresh pipeline per stratified fold.

    Parameters
    ----------
    make_pipeline : callable
        Returns an unfitted estimator (e.g. an imblearn ``Pipeline``), called once per fold.
    X : {ndarray, sparse matrix} of shape (n_cells, n_genes)
    y : ndarray of shape (n_cells,)
    n_folds : int
        Folds of ``StratifiedKFold(shuffle=True, random_state=seed)``: the same ``seed``
        gives the same folds, so methods and classifiers are compared on the same splits.
    seed : int

    Returns
    -------
    predicted : ndarray of str, shape (n_cells,)
        Each cell's label predicted by the pipeline fitted on the folds without it.
    """
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
    predicted = np.empty(len(y), dtype=object)
    with warnings.catch_warnings():
        # Types with fewer cells than folds (t_cell) are expected; sklearn warns about them.
        warnings.filterwarnings("ignore", message="The least populated class")
        splits = list(folds.split(np.zeros(len(y)), y))
    for train, test in splits:
        pipe = make_pipeline().fit(X[train], y[train])
        predicted[test] = pipe.predict(X[test])
    return predicted.astype(str)


def cross_validated_by_method(
    X, y, n_folds: int, seed: int, quick: bool, progress: bool = True
) -> dict:
    """Pooled out-of-fold predictions of each method's pipeline, on the same folds."""
    predictions = {}
    for name, sampler in _samplers(seed, quick, progress).items():
        start = time.perf_counter()
        predictions[name] = cross_validated_predictions(
            lambda sampler=sampler: _pipeline(sampler), X, y, n_folds, seed
        )
        logger.info(f"  {name:<18} {time.perf_counter() - start:6.1f} s")
    return predictions


def f1_table(y, predictions: dict, labels: list, seed: int) -> pd.DataFrame:
    """Per method and label (and their mean): F1 with its 95% bootstrap interval over cells
    (columns method, cell_type, f1, low, high; the same resamples for every method)."""
    from scld_aug.metrics import f1_intervals

    frames = []
    for method, predicted in predictions.items():
        table = f1_intervals(y, predicted, labels, random_state=seed)
        frames.append(table.rename_axis("cell_type").reset_index().assign(method=method))
    return pd.concat(frames, ignore_index=True)[["method", "cell_type", "f1", "low", "high"]]


def plot_real_vs_synthetic(
    adata_res, labels_key: str, genes: np.ndarray, types: list, path: Path, overwrite: bool
) -> None:
    """t-SNE of real and synthetic cells (on 50 PCs fitted to real cells), one panel per type."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from scld_aug import plotting
    from scld_aug.preprocessing import log_normalize

    X = log_normalize(adata_res.X)[:, genes].toarray()
    synthetic = adata_res.obs["is_synthetic"].to_numpy()
    labels = adata_res.obs[labels_key].astype(str).to_numpy()
    pcs = PCA(50, random_state=0).fit(X[~synthetic]).transform(X)
    Z = TSNE(2, init="pca", random_state=0).fit_transform(pcs)
    plotting.real_vs_synthetic(
        Z[~synthetic],
        labels[~synthetic],
        {"synthetic": (Z[synthetic], labels[synthetic])},
        types,
        path,
        title="Baron pancreas: real vs SCLD-synthetic cells",
        overview=True,
        axis_label="t-SNE",
        overwrite=overwrite,
    )


def marker_summary(
    adata_res, labels_key: str, types: list, path: Path, overwrite: bool
) -> pd.DataFrame:
    """Each rare type's 5 marker genes in its real and its synthetic cells: a dot plot, and
    the median ratio of synthetic to real marker expression per type in the log (guidance
    sharpens a type, so synthetic markers tend to run above the real ones)."""
    from scld_aug import plotting
    from scld_aug.metrics import marker_expression

    synthetic = adata_res.obs["is_synthetic"].to_numpy()
    labels = adata_res.obs[labels_key].astype(str).to_numpy()
    table = marker_expression(
        adata_res.X[~synthetic],
        labels[~synthetic],
        adata_res.X[synthetic],
        labels[synthetic],
        types,
        gene_names=adata_res.var_names,
    )
    plotting.marker_dotplot(
        table,
        path,
        title="Marker genes of the rare types: real vs SCLD-synthetic cells",
        overwrite=overwrite,
    )
    ratios = table[table["source"] == "real"].groupby("cell_type", sort=False)["ratio"].median()
    logger.info(
        "Marker expression, synthetic / real (median of 5 markers, log-normalized): "
        + ", ".join(f"{t} {r:.2f}" for t, r in ratios.items())
    )
    return table


def plot_f1(table: pd.DataFrame, path: Path, overwrite: bool) -> None:
    """Grouped bars of rare-type F1 by method with their 95% bootstrap intervals."""
    from scld_aug import plotting

    order = list(dict.fromkeys(table["cell_type"]))
    wide = {
        column: table.pivot(index="cell_type", columns="method", values=column).loc[order]
        for column in ("f1", "low", "high")
    }
    methods = list(dict.fromkeys(table["method"]))
    plotting.grouped_bars(
        wide["f1"][methods].rename(index={"mean": "mean of rare types"}),
        path,
        ylabel="F1 (out-of-fold)",
        title="Rare cell types: F1 by augmentation method (one seed; 95% bootstrap "
        "intervals over the test cells)",
        intervals=(wide["low"][methods], wide["high"][methods]),
        overwrite=overwrite,
    )


def run_demo(
    output_dir: str | Path = "scld_demo_output",
    n_folds: int = 3,
    seed: int = 0,
    quick: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Run the main job and return its tables (also written to ``output_dir``, and reported
    to the ``scld_aug`` logger at INFO level, which ``scld-aug demo`` prints), with progress
    bars for the trainings unless ``progress=False``.

    The files of an earlier run in ``output_dir`` are replaced only with ``overwrite``
    (checked before any work).
    """
    from scld_aug import SCLDSampler, datasets

    out = check_output_folder(output_dir, OUTPUT_FILES, overwrite=overwrite, what="demo output")

    def write_csv(frame: pd.DataFrame, name: str, **options) -> None:
        atomic_write(out / name, lambda tmp: frame.to_csv(tmp, **options), overwrite=overwrite)

    t0 = time.perf_counter()
    adata = datasets.baron_pancreas()
    y = adata.obs["cell_type"].astype(str).to_numpy()
    logger.info(
        f"Baron human pancreas (donor 1): {adata.n_obs} cells x {adata.n_vars} genes, {len(set(y))} cell types, raw UMI counts"
    )

    logger.info("\n[1/2] Training SCLD on all cells and over-sampling the rare types")
    sampler = SCLDSampler(
        sampling_strategy=rare_strategy,
        random_state=seed,
        verbose=progress,
        **(QUICK if quick else {}),
    )
    start = time.perf_counter()
    augmented = sampler.fit_resample_anndata(adata, labels_key="cell_type")
    elapsed = time.perf_counter() - start
    before = pd.Series(Counter(y))
    after = pd.Series(Counter(augmented.obs["cell_type"].astype(str)))
    counts = pd.DataFrame({"real": before, "after": after}).fillna(0).astype(int)
    counts["synthetic"] = counts["after"] - counts["real"]
    counts = counts.sort_values("real", ascending=False)
    logger.info(
        f"Trained and sampled in {elapsed:.1f} s on {sampler.device_}; {counts['synthetic'].sum()} synthetic cells"
    )
    logger.info(counts.to_string())
    anndata_io.write(augmented, out / "baron_augmented.h5ad", overwrite=overwrite)
    rare = [c for c in counts.index if counts.loc[c, "synthetic"] > 0]
    plot_real_vs_synthetic(
        augmented,
        "cell_type",
        sampler.generator_.panel.genes,
        rare,
        out / "tsne_real_vs_synthetic.png",
        overwrite,
    )
    markers = marker_summary(augmented, "cell_type", rare, out / "marker_dotplot.png", overwrite)
    write_csv(markers, "markers.csv", index=False)

    logger.info(
        f"\n[2/2] {n_folds}-fold cross-validation of LogisticRegression on log-normalized counts"
    )
    from sklearn.metrics import f1_score

    predictions = cross_validated_by_method(adata.X, y, n_folds, seed, quick, progress)
    classes = np.unique(y)
    f1 = pd.DataFrame(
        {
            name: f1_score(y, predicted, labels=classes, average=None, zero_division=0)
            for name, predicted in predictions.items()
        },
        index=classes,
    )
    scored = [c for c in counts.index if counts.loc[c, "real"] < RARE_FRACTION * len(y)]
    summary = f1.loc[scored].copy()
    summary.loc["mean F1, rare types"] = f1.loc[scored].mean()
    summary.loc["macro-F1, all types"] = f1.mean()
    logger.info("F1 per rare type (types with < 2% of cells; t_cell has too few cells to augment):")
    logger.info(summary.round(3).to_string())
    intervals = f1_table(y, predictions, scored, seed)
    mean_rows = intervals[intervals["cell_type"] == "mean"].set_index("method")
    logger.info(
        "Mean rare-type F1 with its 95% bootstrap interval over cells (one seed: the few "
        "test cells of each rare type make it wide): "
        + ", ".join(f"{m} {r.f1:.3f} [{r.low:.3f}, {r.high:.3f}]" for m, r in mean_rows.iterrows())
    )
    write_csv(summary, "f1.csv")
    write_csv(intervals, "f1_intervals.csv", index=False)
    write_csv(counts, "class_counts.csv")
    plot_f1(intervals, out / "rare_f1.png", overwrite)
    logger.info(f"\nWrote {out}/: {', '.join(OUTPUT_FILES)}")
    logger.info(f"Total time {time.perf_counter() - t0:.0f} s")
    return {"counts": counts, "f1": summary, "markers": markers}
