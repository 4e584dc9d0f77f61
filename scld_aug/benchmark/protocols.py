"""Benchmark protocols: natural imbalance, rare-cell downsampling, fidelity of synthetic cells."""

from __future__ import annotations

import ast
import logging
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.model_selection import train_test_split

from scld_aug.benchmark.methods import make_pipeline, make_sampler
from scld_aug.metrics import downstream_scores
from scld_aug.params import SAMPLER_PARAMS
from scld_aug.presets import MIN_CELLS, rare_strategy

logger = logging.getLogger(__name__)


def split(y: np.ndarray, seed: int, test_size: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test indices; types with one cell go to training."""
    idx = np.arange(len(y))
    counts = Counter(y)
    single = np.array([counts[v] < 2 for v in y])
    train, test = train_test_split(
        idx[~single], test_size=test_size, stratify=y[~single], random_state=seed
    )
    return np.sort(np.r_[train, idx[single]]), np.sort(test)


@dataclass
class Runs:
    """What every downstream evaluation shares: data, methods, classifiers, SCLD settings."""

    X: Any
    y: np.ndarray
    methods: list
    classifiers: list
    memory: str | None
    scld_params: dict
    log: Callable = logger.info
    scvi_epochs: int | None = None


# Short names of SCLD parameters in method names such as "SCLD w=3 anchor=0.5". All but
# "balance", "aebalance" and "kl" are sampling-time parameters and share the trained generators.
VARIANT_KEYS = {
    "w": "guidance_scale",
    "s": "post_guidance_scale",
    "anchor": "anchor_strength",
    "filter": "filter_threshold",
    "balance": "class_balance",
    "kl": "kl_weight",
    "aebalance": "autoencoder_class_balance",
    "ref": "guidance_reference",
    "steps": "n_sampling_steps",
}


def variant_params(method: str) -> dict:
    """SCLD parameters encoded in a method name: ``"SCLD w=3 anchor=0.5"`` -> dict.

    Keys are the short names of ``VARIANT_KEYS`` or full sampler parameter names; values are
    read as Python literals (``4``, ``0.5``, ``None``), anything else as text (``auto``,
    ``confusable``), and the sampler validates them before training.
    """
    if not method.startswith("SCLD"):
        return {}
    params = {}
    for token in method.split()[1:]:
        key, sep, value = token.partition("=")
        name = VARIANT_KEYS.get(key, key if key in SAMPLER_PARAMS else None)
        if not sep or name is None:
            raise ValueError(
                f"Cannot read {token!r} in method {method!r}: use key=value with keys "
                f"{sorted(VARIANT_KEYS)} or sampler parameter names, e.g. 'SCLD w=3 "
                "anchor=0.5'."
            )
        try:
            params[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[name] = value
    return params


def _evaluate(runs: Runs, train, test, targets, evaluated, seed, extra) -> list[dict]:
    X, y, log = runs.X, runs.y, runs.log
    rows = []
    for method in runs.methods:
        params = {**runs.scld_params, **variant_params(method)}
        for clf in runs.classifiers:
            start = time.perf_counter()
            sampler = make_sampler(method, targets, seed, runs.memory, params, runs.scvi_epochs)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    pipe = make_pipeline(sampler, clf, seed).fit(X[train], y[train])
                pred = pipe.predict(X[test])
                error = ""
            except (ValueError, RuntimeError) as err:  # e.g. ADASYN finding no neighbours
                pred, error = None, f"{type(err).__name__}: {err}"
                log(f"    {method}/{clf} failed: {error}")
            seconds = time.perf_counter() - start
            base = {
                **extra,
                "seed": seed,
                "method": method,
                "classifier": clf,
                "seconds": seconds,
                "error": error,
            }
            if pred is None:
                rows.append({**base, "metric": "macro_f1", "value": np.nan})
                continue
            scores = downstream_scores(y[test], pred, rare_classes=evaluated)
            for metric in ("macro_f1", "rare_macro_f1", "balanced_accuracy"):
                rows.append({**base, "metric": metric, "value": scores[metric]})
            for label, value in scores["per_class_f1"].items():
                rows.append({**base, "metric": f"f1[{label}]", "value": value})
    return rows


def natural_imbalance(runs: Runs, seeds) -> pd.DataFrame:
    """Stratified splits; rare types (< 2%) of the training part are raised to the median size."""
    y, log = runs.y, runs.log
    rows = []
    for seed in seeds:
        train, test = split(y, seed)
        targets = rare_strategy(y[train])
        evaluated = sorted(targets)
        log(f"  seed {seed}: augmenting {evaluated}")
        rows += _evaluate(
            runs, train, test, targets, evaluated, seed, {"protocol": "natural", "k": np.nan}
        )
    return pd.DataFrame(rows)


def default_downsample_types(y: np.ndarray, n: int = 3) -> list:
    """The ``n`` largest types after the majority type."""
    order = [t for t, _ in Counter(y.tolist()).most_common()]
    return order[1 : 1 + n]


def downsampled(y: np.ndarray, seed: int, k: int, types) -> tuple:
    """One seed of the downsampling protocol: training rows, training rows with ``types``
    cut to ``k`` cells, test rows, and the targets that augment each cut type back to the
    size it had in the training split."""
    train, test = split(y, seed)
    rng = np.random.default_rng(seed)
    keep = [i for i in train if y[i] not in types]
    for t in types:
        members = train[y[train] == t]
        keep += rng.choice(members, size=min(k, len(members)), replace=False).tolist()
    original = Counter(y[train].tolist())
    targets = {t: original[t] for t in types if MIN_CELLS <= min(k, original[t]) < original[t]}
    return train, np.sort(np.array(keep)), test, targets


def rare_downsampling(runs: Runs, seeds, ks, types) -> pd.DataFrame:
    """Cut ``types`` to ``k`` training cells, augment them back, score on all their test cells."""
    y, log = runs.y, runs.log
    rows = []
    for k in ks:
        for seed in seeds:
            _, train_k, test, targets = downsampled(y, seed, k, types)
            log(
                f"  k={k} seed {seed}: {types} cut to {k}, augmented back to {list(targets.values())}"
            )
            extra = {"protocol": "downsample", "k": k}
            rows += _evaluate(runs, train_k, test, targets, list(types), seed, extra)
    return pd.DataFrame(rows)


REAL_HELD_OUT = "real (held-out)"

SCLD_VARIANTS = {
    "SCLD no guidance (w=0)": dict(guidance_scale=0.0),
    "SCLD w=1": dict(guidance_scale=1.0),
    "SCLD pre (w=2, default)": dict(guidance_scale=2.0),
    "SCLD w=3": dict(guidance_scale=3.0),
    "SCLD w=5": dict(guidance_scale=5.0),
    "SCLD pre+post (w=2, s=2)": dict(guidance_scale=2.0, post_guidance_scale=2.0),
    "SCLD post only (w=0, s=2)": dict(guidance_scale=0.0, post_guidance_scale=2.0),
    "SCLD pre+filter (w=2, p>=0.5)": dict(guidance_scale=2.0, filter_threshold=0.5),
    "SCLD anchored (w=2, a=0.5)": dict(guidance_scale=2.0, anchor_strength=0.5),
    "SCLD confusable (w=2)": dict(guidance_scale=2.0, guidance_reference="confusable"),
    "SCLD confusable (w=4)": dict(guidance_scale=4.0, guidance_reference="confusable"),
}


def _cell_metrics(embedding, real_train, real_test, synthetic, other_test) -> dict:
    from scld_aug.metrics import (
        density_coverage,
        gene_fidelity,
        memorization,
        mmd_rbf,
        sliced_wasserstein,
        two_sample_auc,
    )

    A, B = embedding.transform(real_test), embedding.transform(synthetic)
    genes = gene_fidelity(real_test, synthetic, other_real=other_test)
    novelty = memorization(embedding.transform(real_train), B, A)
    return {
        "mmd": mmd_rbf(A, B),
        "sliced_wasserstein": sliced_wasserstein(A, B),
        "two_sample_auc": two_sample_auc(A, B, classifier="knn"),
        "mean_pearson": genes["mean_pearson"],
        "var_pearson": genes["var_pearson"],
        "dropout_pearson": genes["dropout_pearson"],
        "marker_overlap": genes["marker_overlap"],
        "nonzero_fraction": sp.csr_matrix(synthetic).count_nonzero() / np.prod(synthetic.shape),
        "memorization_ratio": novelty["ratio"],
        "copies": novelty["copies"],
        **density_coverage(A, B),
    }


def _recognised(classifier, embedding, by_type: dict) -> dict:
    """Per type: conditional fidelity of its synthetic cells (a classifier of real cells)."""
    from scld_aug.metrics import conditional_fidelity

    types = list(by_type)
    cells = np.vstack([embedding.transform(by_type[t]) for t in types])
    labels = np.concatenate([[t] * by_type[t].shape[0] for t in types])
    return conditional_fidelity(classifier, cells, labels)


def fidelity(
    X,
    y,
    seeds,
    memory,
    scld_params,
    log=logger.info,
    plot_path=None,
    variants: dict | None = None,
    with_scvi: bool = False,
    scvi_epochs: int | None = None,
) -> pd.DataFrame:
    """Synthetic vs held-out real cells per type, in an embedding fitted on real training cells.

    "real (train)" compares held-out cells with real training cells of the same type: the
    best any generator can do, given the sampling noise of small types. ``REAL_HELD_OUT``
    rows hold only the conditional fidelity of the held-out real cells themselves (the share
    the classifier of real training cells recognises), the level a faithful generator
    reaches on that measure. ``variants``: SCLD sampling settings by name, all drawn from one
    generator per seed (default: ``SCLD_VARIANTS``, the guidance ablation).
    """
    variants = SCLD_VARIANTS if variants is None else variants
    from imblearn.over_sampling import SMOTE, RandomOverSampler
    from sklearn.linear_model import LogisticRegression

    from scld_aug import SCLDSampler
    from scld_aug.metrics import ReferenceEmbedding
    from scld_aug.params import BY_NAME, SAMPLING_PARAMS

    sampling_defaults = {
        name: scld_params.get(name, BY_NAME[name].default)
        for name in SAMPLING_PARAMS
        if name != "sampling_strategy"
    }
    rows = []
    for seed in seeds:
        train, test = split(y, seed)
        y_train, y_test = y[train], y[test]
        train_counts, test_counts = Counter(y_train.tolist()), Counter(y_test.tolist())
        types = sorted(
            t for t in train_counts if train_counts[t] >= MIN_CELLS and test_counts.get(t, 0) >= 3
        )
        n_gen = {t: max(test_counts[t], 30) for t in types}
        X_train, X_test = X[train], X[test]
        embedding = ReferenceEmbedding().fit(X_train)
        synthetic: dict[str, dict] = {"real (train)": {t: X_train[y_train == t] for t in types}}
        smote = SMOTE(
            sampling_strategy={t: train_counts[t] + n_gen[t] for t in types},
            k_neighbors=2,
            random_state=seed,
        )
        X_s, y_s = smote.fit_resample(X_train, y_train)
        new = np.arange(len(y_s)) >= len(y_train)
        synthetic["SMOTE"] = {t: X_s[new & (y_s == t)] for t in types}
        copies = RandomOverSampler(sampling_strategy=smote.sampling_strategy, random_state=seed)
        X_r, y_r = copies.fit_resample(X_train, y_train)
        new = np.arange(len(y_r)) >= len(y_train)
        synthetic["RandomOverSampler"] = {t: X_r[new & (y_r == t)] for t in types}
        if with_scvi:
            from scld_aug.benchmark.scvi_baseline import SCVISampler

            start = time.perf_counter()
            scvi = SCVISampler(
                sampling_strategy=smote.sampling_strategy,
                random_state=seed,
                max_epochs=scvi_epochs,
                memory=memory,
            )
            X_v, y_v = scvi.fit_resample(X_train, y_train)
            new = np.arange(len(y_v)) >= len(y_train)
            synthetic["scVI"] = {t: X_v[new & (y_v == t)] for t in types}
            log(f"  seed {seed}: scVI cells in {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        sampler = SCLDSampler(random_state=seed, memory=memory, **scld_params).fit(X_train, y_train)
        log(
            f"  seed {seed}: SCLD trained in {time.perf_counter() - start:.0f} s ({sampler.generator_source_})"
        )
        for name, params in variants.items():
            # Every variant starts from the sampling defaults (of scld_params when given).
            sampler.set_params(**{**sampling_defaults, **params})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                synthetic[name] = {t: sampler.generate(n_gen[t], t) for t in types}
        by_type_test = {t: (X_test[y_test == t], X_test[y_test != t]) for t in types}
        # Conditional fidelity: a classifier of real training cells (all types) in the
        # embedding names the type of each synthetic cell.
        reference = LogisticRegression(max_iter=2000).fit(embedding.transform(X_train), y_train)
        # The same classifier on held-out real cells: what a generator that reproduces each
        # type's cells faithfully would score (look-alike types' real cells are confused too).
        judged = {REAL_HELD_OUT: {t: by_type_test[t][0] for t in types}, **synthetic}
        for method, by_type in judged.items():
            recognised = _recognised(reference, embedding, by_type)
            for t in types:
                metrics = {}
                if method != REAL_HELD_OUT:
                    real_test, other_test = by_type_test[t]
                    real_train = X_train[y_train == t]
                    metrics = _cell_metrics(
                        embedding, real_train, real_test, by_type[t], other_test
                    )
                metrics["recognised"] = recognised[t]["recognised"]
                metrics["confusion"] = recognised[t]["confusion"]
                for metric, value in metrics.items():
                    rows.append(
                        {
                            "protocol": "fidelity",
                            "seed": seed,
                            "method": method,
                            "cell_type": t,
                            "n_train": train_counts[t],
                            "metric": metric,
                            "value": value,
                            "detail": str(recognised[t]["confused_with"] or "")
                            if metric == "confusion"
                            else "",
                        }
                    )
        log(f"  seed {seed}: fidelity of {len(synthetic)} methods x {len(types)} types done")
        if plot_path is not None and seed == seeds[0]:
            from scld_aug.benchmark.report import plot_embedding

            rarest = sorted(types, key=lambda t: train_counts[t])[:4]
            shown = {
                m: synthetic[m]
                for m in ("SMOTE", "scVI", "SCLD pre (w=2, default)")
                if m in synthetic
            }
            plot_embedding(embedding, X_train, y_train, X_test, y_test, shown, rarest, plot_path)
    return pd.DataFrame(rows)
