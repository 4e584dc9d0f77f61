"""The benchmark panel: every real dataset, every method, several seeds and draws of the cells.

``python -m evaluation.panel [--datasets NAME ...] [--seeds 5] [--draws 3] [--jobs 2]``

For each dataset of :data:`PANEL` and each seed, the two downstream protocols of
:mod:`scld_aug.benchmark.protocols` make their split (stratified 70/30): **natural** (types
under 2% of the training cells raised to the median type size) and **downsample** (the three
largest types after the majority cut to ``k`` = 10 training cells and augmented back). Each
method over-samples the training cells, and logistic regression, kNN and a random forest
(the benchmark's pipelines) are scored on the untouched real test cells.

The samplers' cells are random: each sampler is fitted once per split and its cells are
drawn ``--draws`` times (draw ``d`` uses the random state ``seed + 1000 d``; draw 0 is what
the sampler itself draws), so that a difference between methods can be told from the draw.
SCLD's variants (``--variants``: sampling-time parameters such as ``guidance_scale=3``) draw
from the default's trained generator; variants that change training (``kl_weight=1``) train
their own.

Per split and SCLD variant (and scVI, SMOTE), draw 0 is also judged for **conditional
fidelity**: the share of each augmented type's synthetic cells that a logistic regression
trained on the real training cells calls that type, next to the same share for the type's
held-out real cells (``real (held-out)``); and the **memorization ratio** (distance of the
synthetic cells to their nearest real training cell of the type over the same for held-out
real cells; 1 = as new as new real cells, 0 = copies).

Every split is written as soon as it is done (``OUTPUT/units/``), so an interrupted run
resumes where it stopped; ``OUTPUT/<dataset>.md`` and ``OUTPUT/summary.md`` are rebuilt from
all units at the end (``--summary-only`` rebuilds them without running anything).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PANEL_DATA = Path(__file__).resolve().parent / "panel" / "data"
#: The panel: dataset name -> its ``.h5ad`` (raw counts in X, labels in obs["cell_type"]).
PANEL = {
    "baron_human1": SHARED / "baron_human1.h5ad",
    "baron_human_d234": SHARED / "baron_human_d234.h5ad",
    "baron_mouse": SHARED / "baron_mouse.h5ad",
    "pbmc3k": SHARED / "pbmc3k.h5ad",
    "pbmc68k_subset": SHARED / "pbmc68k_subset.h5ad",
    "darmanis_brain": PANEL_DATA / "darmanis_brain.h5ad",
    "bassez_breast_immune": PANEL_DATA / "bassez_breast_immune.h5ad",
    "zeisel_cortex": PANEL_DATA / "zeisel_cortex.h5ad",
    "cbmc_citeseq": PANEL_DATA / "cbmc_citeseq.h5ad",
}
METHODS = ("none", "RandomOverSampler", "SMOTE", "ADASYN", "scVI", "SCLD")
CLASSIFIERS = ("logreg", "knn", "random_forest")
#: Random state of draw ``d`` of seed ``s``: ``s + DRAW_STRIDE * d``.
DRAW_STRIDE = 1000
REAL_HELD_OUT = "real (held-out)"
#: Unit files are gzip without a timestamp: a rerun that computes the same rows writes the
#: same bytes, so git sees only what changed.
GZIP = {"method": "gzip", "mtime": 0}


@dataclass(frozen=True)
class Unit:
    """One split: a dataset, a protocol and a seed."""

    dataset: str
    protocol: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.dataset}_{self.protocol}_seed{self.seed}"


@dataclass(frozen=True)
class Settings:
    draws: int = 3
    k: int = 10
    methods: tuple = METHODS
    variants: tuple = ()
    classifiers: tuple = CLASSIFIERS
    scvi_epochs: int | None = 100
    scld_params: dict = field(default_factory=dict)
    cache: str = ""
    rf_draws: int = 1


def load(dataset: str):
    """Raw-count CSR matrix and string labels of a panel dataset."""
    import anndata
    import scipy.sparse as sp

    path = PANEL[dataset]
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: the panel reads five datasets from {SHARED} (the shared data "
            f"folder beside the repository) and four from {PANEL_DATA}."
        )
    adata = anndata.read_h5ad(path)
    return sp.csr_matrix(adata.X), adata.obs["cell_type"].astype(str).to_numpy()


def split_of(unit: Unit, y: np.ndarray, k: int):
    """``(train, train_k, test, targets, types)`` of a unit: the training rows before and
    after the cut (the same for the natural protocol), the test rows, the sizes the
    augmented types are raised to, and the types scored as rare."""
    from scld_aug.benchmark.protocols import default_downsample_types, downsampled, split
    from scld_aug.presets import rare_strategy

    if unit.protocol == "natural":
        train, test = split(y, unit.seed)
        targets = rare_strategy(y[train])
        return train, train, test, targets, sorted(targets)
    types = default_downsample_types(y)
    train, train_k, test, targets = downsampled(y, unit.seed, k, types)
    return train, train_k, test, targets, list(types)


def _scld_draws(unit, settings, Xk, yk, targets, variant: str, generators: dict):
    """(sampler, X_res, y_res) of each draw of one SCLD variant, and its training seconds.
    Variants share the generator of their training parameters."""
    from scld_aug import SCLDSampler
    from scld_aug.benchmark.protocols import variant_params
    from scld_aug.params import TRAINING_PARAMS

    def split_params(params: dict) -> tuple[dict, dict]:
        training = {k: v for k, v in params.items() if k in TRAINING_PARAMS}
        return training, {k: v for k, v in params.items() if k not in TRAINING_PARAMS}

    def generator_for(training: dict):
        """The generator of these training parameters, and the seconds trained for it now
        (NaN when it came from the cache: no training time was measured)."""
        key = tuple(sorted(training.items()))
        if key in generators:
            return generators[key], 0.0
        start = time.perf_counter()
        fitted = SCLDSampler(
            sampling_strategy=targets, random_state=unit.seed, memory=settings.cache, **training
        ).fit(Xk, yk)
        generators[key] = fitted.generator_
        seconds = time.perf_counter() - start
        return fitted.generator_, np.nan if fitted.generator_source_ == "memory" else seconds

    training, sampling = split_params({**settings.scld_params, **variant_params(variant)})
    generator, seconds = generator_for(training)
    results = []
    for draw in range(settings.draws):
        sampler = SCLDSampler(
            sampling_strategy=targets,
            random_state=unit.seed + DRAW_STRIDE * draw,
            generator=generator,
            **sampling,
        )
        X_res, y_res = sampler.fit_resample(Xk, yk)
        results.append((sampler, X_res, y_res))
    return results, seconds


def _baseline_draws(method, unit, settings, Xk, yk, targets):
    """(X_res, y_res) of each draw of a non-SCLD method, and its training seconds."""
    from scld_aug.benchmark.methods import make_sampler

    if method == "none":
        return [(Xk, yk)], 0.0
    if method == "scVI":
        sampler = make_sampler(method, targets, unit.seed, settings.cache, {}, settings.scvi_epochs)
        start = time.perf_counter()
        draws = [sampler.fit_resample(Xk, yk)]
        seconds = time.perf_counter() - start
        for draw in range(1, settings.draws):
            draws.append(sampler.redraw(Xk, yk, unit.seed + DRAW_STRIDE * draw))
        return draws, seconds
    draws = []
    for draw in range(settings.draws):
        sampler = make_sampler(method, targets, unit.seed + DRAW_STRIDE * draw, None, {})
        draws.append(sampler.fit_resample(Xk, yk))
    return draws, 0.0


def _fidelity_rows(judge, X, y, train_k, test, types, X_res, y_res) -> list[dict]:
    """Recognition and memorization ratio per augmented type of one resampled set."""
    from scld_aug.metrics import memorization

    embedding, model = judge
    n_real = len(train_k)
    synthetic, labels = X_res[n_real:], np.asarray(y_res)[n_real:]
    rows = []
    for t in types:
        mine = np.flatnonzero(labels == t)
        if not len(mine):
            continue
        cells = embedding.transform(synthetic[mine])
        novelty = memorization(
            embedding.transform(X[train_k[y[train_k] == t]]),
            cells,
            embedding.transform(X[test[y[test] == t]]),
        )
        rows += [
            {"cell_type": t, "metric": "recognised", "value": float(np.mean(model.predict(cells) == t))},
            {"cell_type": t, "metric": "memorization_ratio", "value": float(novelty["ratio"])},
        ]  # fmt: skip
    return rows


def method_names(settings: Settings) -> list[str]:
    """Every method a run scores: the baselines, SCLD and its variants."""
    names = [m for m in settings.methods if m != "SCLD"]
    if "SCLD" in settings.methods:
        names += ["SCLD", *(f"SCLD {v}" for v in settings.variants)]
    return names


def _scores(unit, settings, method, draws, X, y, test, types) -> list[dict]:
    """Downstream rows of every draw: logistic regression and kNN on every draw, the random
    forest (slower, reported but not an acceptance classifier) on the first ``rf_draws``
    draws of the main methods."""
    from scld_aug.benchmark.methods import make_pipeline
    from scld_aug.metrics import downstream_scores

    base = {"dataset": unit.dataset, "protocol": unit.protocol, "seed": unit.seed}
    rows = []
    for draw, (X_res, y_res) in enumerate(draws):
        for clf in settings.classifiers:
            if clf == "random_forest" and (draw >= settings.rf_draws or " " in method):
                continue
            pipe = make_pipeline(None, clf, unit.seed).fit(X_res, y_res)
            scores = downstream_scores(y[test], pipe.predict(X[test]), rare_classes=types)
            common = {**base, "method": method, "draw": draw, "classifier": clf}
            rows += [
                {**common, "metric": m, "value": scores[m]} for m in ("rare_macro_f1", "macro_f1")
            ]
            rows += [
                {**common, "cell_type": t, "metric": "f1", "value": scores["per_class_f1"][t]}
                for t in types
                if t in scores["per_class_f1"]
            ]  # fmt: skip
    return rows


def run_unit(unit: Unit, settings: Settings, methods: list[str]) -> dict[str, pd.DataFrame]:
    """The rows of ``methods`` (and of the held-out real cells' recognition) on one split,
    by method."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from scld_aug.metrics import ReferenceEmbedding

    X, y = load(unit.dataset)
    train, train_k, test, targets, types = split_of(unit, y, settings.k)
    base = {"dataset": unit.dataset, "protocol": unit.protocol, "seed": unit.seed}
    if not targets:
        empty = pd.DataFrame([{**base, "method": REAL_HELD_OUT, "metric": "no_augmented_type"}])
        return {REAL_HELD_OUT: empty}
    Xk, yk = X[train_k], y[train_k]
    out: dict[str, list[dict]] = {}
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The judge of conditional fidelity: an embedding of the (cut) training cells and a
        # logistic regression of all real training cells of the split.
        embedding = ReferenceEmbedding().fit(X[train_k])
        judge = (
            embedding,
            LogisticRegression(max_iter=2000).fit(embedding.transform(X[train]), y[train]),
        )
        real = out[REAL_HELD_OUT] = []
        for t in types:
            cells = embedding.transform(X[test[y[test] == t]])
            value = float(np.mean(judge[1].predict(cells) == t))
            real.append({**base, "method": REAL_HELD_OUT, "cell_type": t, "metric": "recognised", "value": value})  # fmt: skip

        generators: dict = {}
        for method in methods:
            rows = out[method] = []
            try:
                if method.startswith("SCLD"):
                    results, seconds = _scld_draws(
                        unit, settings, Xk, yk, targets, method, generators
                    )
                    draws = [(X_res, y_res) for _, X_res, y_res in results]
                    rows += _choices(base, method, results[0][0])
                else:
                    draws, seconds = _baseline_draws(method, unit, settings, Xk, yk, targets)
            except (ValueError, RuntimeError) as err:  # e.g. ADASYN finding no neighbours
                rows.append({**base, "method": method, "metric": "error", "error": f"{type(err).__name__}: {err}"})  # fmt: skip
                continue
            rows.append({**base, "method": method, "metric": "fit_seconds", "value": seconds})
            rows += _scores(unit, settings, method, draws, X, y, test, types)
            if method != "none":
                X_res, y_res = draws[0]
                rows += [
                    {**base, "method": method, "draw": 0, **row}
                    for row in _fidelity_rows(judge, X, y, train_k, test, types, X_res, y_res)
                ]
    k = settings.k if unit.protocol == "downsample" else np.nan
    return {method: pd.DataFrame(rows).assign(k=k) for method, rows in out.items()}


def _choices(base: dict, method: str, sampler) -> list[dict]:
    """How SCLD's generator was trained on this split: the encoder's KL weight and the
    optimizer steps of each network."""
    kl = sampler.generator_.config.get("kl_weight")
    rows = [{**base, "method": method, "metric": "kl_weight", "value": kl}]
    rows += [
        {**base, "method": method, "cell_type": name, "metric": "steps", "value": len(losses)}
        for name, losses in sampler.generator_.history.items()
        if name in ("autoencoder", "diffusion", "classifier")
    ]
    return rows


# --------------------------------------------------------------------------- running


def _unit_file(output: Path, unit: Unit, method: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", method).strip("_").replace("=", "-")
    return output / "units" / unit.dataset / f"{unit.protocol}_seed{unit.seed}_{slug}.csv.gz"


def _missing(output: Path, unit: Unit, settings: Settings) -> list[str]:
    """The methods a unit still needs (none once it is known to have no augmented type)."""
    real = _unit_file(output, unit, REAL_HELD_OUT)
    if real.exists() and "no_augmented_type" in set(pd.read_csv(real)["metric"]):
        return []
    return [m for m in method_names(settings) if not _unit_file(output, unit, m).exists()]


def _run_and_save(unit: Unit, settings: Settings, output: Path, methods: list[str]):
    from scld_aug.files import atomic_write

    start = time.perf_counter()
    frames = run_unit(unit, settings, methods)
    for method, frame in frames.items():
        atomic_write(
            _unit_file(output, unit, method),
            lambda tmp, f=frame: f.to_csv(tmp, index=False, compression=GZIP),
            overwrite=True,
        )
    return unit, methods, time.perf_counter() - start


def _report(unit: Unit, methods: list[str], seconds: float) -> None:
    print(f"  {unit.name} ({', '.join(methods)}): {seconds:.0f} s", flush=True)


def run(units: list[Unit], settings: Settings, output: Path, jobs: int) -> None:
    todo = [(u, m) for u in units if (m := _missing(output, u, settings))]
    print(f"{len(units) - len(todo)} of {len(units)} splits already done; running {len(todo)}")
    if jobs <= 1:
        for unit, methods in todo:
            _report(*_run_and_save(unit, settings, output, methods))
        return
    # Largest datasets first, so that the last splits running are short ones.
    todo.sort(key=lambda item: -PANEL[item[0].dataset].stat().st_size)
    # Fresh processes: no thread pool or torch state inherited from this one.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [pool.submit(_run_and_save, u, settings, output, m) for u, m in todo]
        for future in as_completed(futures):
            _report(*future.result())


# --------------------------------------------------------------------------- reports


def collect(output: Path) -> pd.DataFrame:
    files = sorted((output / "units").glob("*/*.csv.gz"))
    return (
        pd.concat([pd.read_csv(f) for f in files], ignore_index=True) if files else pd.DataFrame()
    )


def downstream_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, protocol, classifier and method: mean and sd over seeds and draws of
    rare-type F1 and macro-F1, and the draw noise (sd over draws of the mean over seeds)."""
    scores = results[results["metric"].isin(["rare_macro_f1", "macro_f1"])]
    keys = ["dataset", "protocol", "classifier", "method", "metric"]
    stats = scores.groupby(keys)["value"].agg(["mean", "std", "count"])
    by_draw = scores.groupby([*keys, "draw"])["value"].mean().groupby(keys).std()
    stats["draw_sd"] = by_draw
    return stats.reset_index()


def fidelity_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, protocol, method and type: recognition (mean over seeds) next to the
    held-out real cells' and memorization ratio."""
    fid = results[results["metric"].isin(["recognised", "memorization_ratio"])]
    table = fid.groupby(["dataset", "protocol", "method", "cell_type", "metric"])["value"].mean()
    table = table.unstack("metric").reset_index()
    real = table[table["method"] == REAL_HELD_OUT][
        ["dataset", "protocol", "cell_type", "recognised"]
    ]
    table = table.merge(
        real.rename(columns={"recognised": "real_recognised"}),
        on=["dataset", "protocol", "cell_type"],
        how="left",
    )
    return table[table["method"] != REAL_HELD_OUT]


def _cell(mean: float, sd: float) -> str:
    return "-" if pd.isna(mean) else f"{mean:.3f} ± {0.0 if pd.isna(sd) else sd:.3f}"


def dataset_report(
    name: str, down: pd.DataFrame, fid: pd.DataFrame, methods: list, errors: pd.DataFrame
) -> str:
    lines = [f"# Panel: {name}", ""]
    if len(errors):
        lines += ["Methods that refused a split (no rows for it):", ""]
        for (protocol, method, error), part in errors.groupby(["protocol", "method", "error"]):
            seeds = ", ".join(str(int(s)) for s in sorted(part["seed"]))
            lines.append(f"- {method}, {protocol} protocol, seeds {seeds}: {error}")
        lines.append("")
    for (protocol, metric), part in down.groupby(["protocol", "metric"], sort=False):
        lines += [f"## {protocol}: {metric} (mean ± sd over seeds and draws)", ""]
        wide = part.assign(
            cell=[_cell(m, s) for m, s in zip(part["mean"], part["std"], strict=True)]
        )
        table = wide.pivot(index="method", columns="classifier", values="cell")
        lines += [table.reindex([m for m in methods if m in table.index]).to_markdown(), ""]
    if len(fid):
        lines += ["## Conditional fidelity and memorization (mean over seeds, draw 0)", ""]
        cols = [
            "protocol",
            "method",
            "cell_type",
            "recognised",
            "real_recognised",
            "memorization_ratio",
        ]
        lines += [fid[cols].round(3).to_markdown(index=False), ""]
    return "\n".join(lines) + "\n"


def panel_summary(down: pd.DataFrame, fid: pd.DataFrame, fit: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset, protocol and classifier: SCLD against duplication, SMOTE, scVI
    and no augmentation, with the draw noise, the worst type's recognition against its real
    cells, the memorization ratio (mean over the augmented types, and the smallest) and
    SCLD's fit time."""
    index = ["dataset", "protocol", "classifier", "method"]
    rare = down[down["metric"] == "rare_macro_f1"].set_index(index)
    macro = down[down["metric"] == "macro_f1"].set_index(index)

    def get(table: pd.DataFrame, key: tuple, method: str, column: str = "mean") -> float:
        return table.loc[(*key, method), column] if (*key, method) in table.index else np.nan

    rows = []
    for key, _ in rare.groupby(level=[0, 1, 2]):
        dataset, protocol, clf = key
        mine = (fid["dataset"] == dataset) & (fid["protocol"] == protocol)
        scld = fid[mine & (fid["method"] == "SCLD")]
        gap = (scld["recognised"] - scld["real_recognised"]).min() if len(scld) else np.nan
        seconds = fit[(fit["dataset"] == dataset) & (fit["method"] == "SCLD")]["value"]
        rows.append(
            {
                "dataset": dataset,
                "protocol": protocol,
                "classifier": clf,
                "none": get(rare, key, "none"),
                "ROS": get(rare, key, "RandomOverSampler"),
                "SMOTE": get(rare, key, "SMOTE"),
                "ADASYN": get(rare, key, "ADASYN"),
                "scVI": get(rare, key, "scVI"),
                "SCLD": get(rare, key, "SCLD"),
                "SCLD-ROS": get(rare, key, "SCLD") - get(rare, key, "RandomOverSampler"),
                "draw_sd": get(rare, key, "SCLD", "draw_sd"),
                "macro none": get(macro, key, "none"),
                "macro SCLD": get(macro, key, "SCLD"),
                "worst recognition gap": gap,
                "memorization": scld["memorization_ratio"].mean() if len(scld) else np.nan,
                "min memorization": scld["memorization_ratio"].min() if len(scld) else np.nan,
                "fit s": seconds[seconds > 0].mean(),
            }
        )
    return pd.DataFrame(rows)


#: The acceptance classifiers, whose rare-type F1 (mean over both protocols) is the score by
#: which options are compared.
SCORED = ("logreg", "knn")
#: Acceptance bars of the defaults (per dataset, protocol and classifier; mean over seeds and
#: draws): the least gain in rare-type F1 over duplication on the panel mean, the largest
#: shortfall of a type's synthetic cells' recognition below its held-out real cells', and
#: the smallest memorization ratio (mean over the augmented types).
PANEL_GAIN = 0.03
RECOGNITION_SHORTFALL = 0.05
MIN_MEMORIZATION = 0.8


def headline(summary: pd.DataFrame) -> pd.DataFrame:
    """The panel at a glance, per protocol and classifier: each method's rare-type F1
    averaged over the datasets, and on how many datasets SCLD beats duplication (rare-type
    F1) and no augmentation (macro-F1). scVI's mean is over the datasets it was run on."""
    rows = []
    for (protocol, clf), part in summary.groupby(["protocol", "classifier"], sort=False):
        n = len(part)
        row = {"protocol": protocol, "classifier": clf, "datasets": n}
        for method in ("none", "ROS", "SMOTE", "ADASYN", "SCLD"):
            row[method] = part[method].mean()
        ran = part["scVI"].notna().sum()
        row["scVI (datasets)"] = f"{part['scVI'].mean():.3f} ({ran})" if ran else "-"
        row["SCLD > ROS"] = f"{int((part['SCLD-ROS'] > 0).sum())} of {n}"
        row["macro SCLD >= none"] = (
            f"{int((part['macro SCLD'] >= part['macro none']).sum())} of {n}"
        )
        rows.append(row)
    return pd.DataFrame(rows)


def acceptance(summary: pd.DataFrame) -> str:
    """Whether SCLD meets each acceptance bar on the panel (``summary``:
    :func:`panel_summary`'s rows), with the rows that miss it.

    For logistic regression and kNN: rare-type F1 at least duplication's (within SCLD's
    draw sd) on every dataset and at least ``PANEL_GAIN`` above it on the panel mean, and
    macro-F1 at least no augmentation's everywhere; for every type, recognition at most
    ``RECOGNITION_SHORTFALL`` below its real cells'; memorization ratio at least
    ``MIN_MEMORIZATION``. The random forest is reported, not judged.
    """
    scored = summary[summary["classifier"].isin(SCORED)]

    def where(mask: pd.Series) -> str:
        rows = scored[mask.fillna(False)]
        if rows.empty:
            return "met everywhere"
        return "**missed** on " + ", ".join(
            f"{r.dataset} {r.protocol} {r.classifier}" for r in rows.itertuples()
        )

    gain = scored.groupby("classifier")["SCLD-ROS"].mean()
    lines = [
        "rare-type F1 >= RandomOverSampler's (within the draw sd): "
        + where(scored["SCLD-ROS"] < -scored["draw_sd"]),
        "rare-type F1 - RandomOverSampler's on the panel mean >= "
        f"{PANEL_GAIN}: "
        + ", ".join(
            f"{clf} {value:+.3f} ({'met' if value >= PANEL_GAIN else '**missed**'})"
            for clf, value in gain.items()
        ),
        "macro-F1 >= no augmentation: " + where(scored["macro SCLD"] < scored["macro none"]),
        f"every type's recognition >= its real cells' - {RECOGNITION_SHORTFALL}: "
        + where(scored["worst recognition gap"] < -RECOGNITION_SHORTFALL),
        f"memorization ratio (mean over the augmented types) >= {MIN_MEMORIZATION}: "
        + where(scored["memorization"] < MIN_MEMORIZATION),
    ]
    return "\n".join(f"- {line}" for line in lines)


#: Each automatic mechanism (or default) and its options, as the methods that run them: the
#: first option is the sampler's default (plain ``SCLD``).
MECHANISMS = {
    "kl_weight": {"0": "SCLD", "1": "SCLD kl_weight=1"},
    "guidance_scale": {"2": "SCLD", "1": "SCLD guidance_scale=1", "3": "SCLD guidance_scale=3"},
}


def option_scores(results: pd.DataFrame, options: dict[str, str]) -> pd.DataFrame:
    """Per dataset (rows) and option (columns): rare-type F1 averaged over the acceptance
    classifiers, protocols, seeds and draws; plus ``noise``, the largest draw sd of those
    means among the options (how far apart two options can be by the draw alone)."""
    scores = results[
        (results["metric"] == "rare_macro_f1")
        & results["classifier"].isin(SCORED)
        & results["method"].isin(options.values())
    ]
    if scores.empty:
        return pd.DataFrame()
    # Paired: only the splits every option was run on (a variant may cover fewer seeds).
    split = [c for c in ("dataset", "protocol", "seed") if c in scores]
    ran = scores.groupby(split)["method"].nunique()
    complete = ran[ran == scores["method"].nunique()].index
    scores = scores.set_index(split).loc[lambda t: t.index.isin(complete)].reset_index()
    by_option = scores.groupby(["dataset", "method"])["value"].mean().unstack()
    draw_means = scores.groupby(["dataset", "method", "draw"])["value"].mean()
    noise = draw_means.groupby(["dataset", "method"]).std().unstack().max(axis=1)
    names = {method: option for option, method in options.items()}
    table = by_option.rename(columns=names)[[o for o, m in options.items() if m in by_option]]
    table["noise"] = noise
    return table.dropna(subset=[o for o in options if o in table])


def leave_one_dataset_out(table: pd.DataFrame, options: list[str]) -> pd.DataFrame:
    """For each dataset: the option with the best mean score over the *other* datasets, and
    what that choice and the default give on the dataset left out."""
    rows = []
    default = options[0]
    if len(table) < 2:
        return pd.DataFrame()  # nothing to choose on without the dataset
    for dataset in table.index:
        others = table.drop(index=dataset)
        chosen = others[options].mean().idxmax()
        rows.append(
            {
                "dataset": dataset,
                "chosen without it": chosen,
                "score (chosen)": table.loc[dataset, chosen],
                f"score ({default}, default)": table.loc[dataset, default],
                "chosen - default": table.loc[dataset, chosen] - table.loc[dataset, default],
                "draw noise": table.loc[dataset, "noise"],
            }
        )
    return pd.DataFrame(rows)


def mechanism_verdict(table: pd.DataFrame, options: list[str]) -> str:
    """Whether the default option earns its place against each alternative: better on most
    datasets, and worse by more than the draw noise on none."""
    default = options[0]
    lines = []
    for other in options[1:]:
        diff = table[default] - table[other]
        helps = int((diff > 0).sum())
        hurts = list(diff[diff < -table["noise"]].index)
        keep = helps > len(diff) / 2 and not hurts
        lines.append(
            f"`{default}` vs `{other}`: better on {helps} of {len(diff)} datasets, mean "
            f"{diff.mean():+.3f}; worse by more than the draw noise on "
            f"{', '.join(hurts) if hurts else 'none'} -> "
            + ("**keeps its place**" if keep else "**does not earn its place**")
        )
    return "\n".join(f"- {line}" for line in lines)


def lodo_report(results: pd.DataFrame) -> str:
    """The leave-one-dataset-out table and verdict of every mechanism that was run."""
    parts = ["# Leave-one-dataset-out choice of each mechanism", ""]
    parts += [
        "Score: rare-type F1 averaged over logistic regression and kNN, both protocols, "
        "seeds and draws. For each dataset, the option chosen on the other datasets, and "
        "what it and the default give on the dataset left out; `draw noise`: the largest sd "
        "over draws of the options' means on that dataset.",
        "",
    ]
    for mechanism, options in MECHANISMS.items():
        table = option_scores(results, options)
        present = [o for o in options if o in table]
        if len(present) < 2:
            continue
        parts += [f"## {mechanism}", "", table.round(3).to_markdown(), ""]
        lodo = leave_one_dataset_out(table, present)
        if lodo.empty:
            parts += ["(Leaving one dataset out needs at least two datasets.)", ""]
        else:
            parts += [lodo.round(3).to_markdown(index=False), ""]
        parts += [mechanism_verdict(table, present), ""]
    return "\n".join(parts) + "\n"


def write_reports(output: Path, methods: list) -> pd.DataFrame:
    from scld_aug.files import atomic_write

    results = collect(output)
    if results.empty:
        raise SystemExit(f"No results in {output / 'units'}.")
    down = downstream_summary(results)
    fid = fidelity_summary(results)
    order = list(dict.fromkeys([*methods, *sorted(set(down["method"]))]))
    for name in sorted(set(results["dataset"])):
        mine = results["dataset"] == name
        errors = results[mine & (results["metric"] == "error")]
        text = dataset_report(
            name, down[down["dataset"] == name], fid[fid["dataset"] == name], order, errors
        )
        atomic_write(output / f"{name}.md", lambda tmp, t=text: tmp.write_text(t), overwrite=True)
    fit = results[results["metric"] == "fit_seconds"]
    summary = panel_summary(down, fid, fit)
    means = summary.groupby(["protocol", "classifier"]).mean(numeric_only=True).reset_index()
    means.insert(0, "dataset", "panel mean")
    table = pd.concat([summary, means], ignore_index=True)
    atomic_write(output / "summary.csv", lambda tmp: table.to_csv(tmp, index=False), overwrite=True)
    glance = headline(summary)
    text = (
        "# Panel summary\n\n## At a glance\n\nRare-type F1 (mean of the augmented types' F1 on "
        "the real test cells) averaged over the datasets, each dataset's value being the mean "
        "over 5 seeds and 3 draws of the cells; on how many datasets SCLD's rare-type F1 is "
        "above duplication's and its macro-F1 (all types) at least no augmentation's.\n\n"
        + glance.round(3).to_markdown(index=False)
        + "\n\n## Acceptance of the defaults (logistic regression and kNN)\n\n"
        + acceptance(summary)
        + "\n\n## Per dataset\n\nRare-type F1 per method (mean over seeds and draws); `draw_sd`: "
        "SCLD's sd over draws of the mean over seeds; macro-F1 without augmentation and with "
        "SCLD; the worst augmented type's recognition minus its held-out real cells'; the "
        "memorization ratio (mean over the augmented types, and the smallest); SCLD's mean "
        "fit time.\n\n" + table.round(3).to_markdown(index=False) + "\n"
    )
    atomic_write(output / "summary.md", lambda tmp: tmp.write_text(text), overwrite=True)
    lodo = lodo_report(results)
    atomic_write(output / "lodo.md", lambda tmp: tmp.write_text(lodo), overwrite=True)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.panel", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--datasets", nargs="+", default=list(PANEL), choices=list(PANEL))
    parser.add_argument("--protocols", nargs="+", default=["natural", "downsample"])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("--draws", type=int, default=3, help="draws per sampler and seed")
    parser.add_argument("--k", type=int, default=10, help="cells per downsampled type")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument(
        "--variants",
        nargs="*",
        default=[],
        help="SCLD variants, e.g. 'kl_weight=1' 'guidance_scale=3'",
    )
    parser.add_argument("--classifiers", nargs="+", default=list(CLASSIFIERS))
    parser.add_argument(
        "--rf-draws", type=int, default=1, help="draws scored by the random forest (main methods)"
    )
    parser.add_argument(
        "--rerun",
        nargs="*",
        default=[],
        metavar="METHOD",
        help="methods whose saved rows are computed again (e.g. SCLD after a change to it)",
    )
    parser.add_argument("--scvi-epochs", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2, help="splits run at once (processes)")
    parser.add_argument("--output", default=str(ROOT / "evaluation" / "results" / "panel"))
    parser.add_argument("--quick", action="store_true", help="tiny SCLD model: a smoke test")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if not args.summary_only:
        from scld_aug.presets import TINY

        settings = Settings(
            draws=args.draws,
            k=args.k,
            methods=tuple(args.methods),
            variants=tuple(args.variants),
            classifiers=tuple(args.classifiers),
            scvi_epochs=args.scvi_epochs,
            scld_params=dict(TINY) if args.quick else {},
            cache=str(output / ".generator_cache"),
            rf_draws=args.rf_draws,
        )
        units = [
            Unit(d, p, s) for d in args.datasets for p in args.protocols for s in range(args.seeds)
        ]
        for unit in units:
            for method in args.rerun:
                _unit_file(output, unit, method).unlink(missing_ok=True)
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        run(units, settings, output, args.jobs)
    table = write_reports(output, list(args.methods))
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table.round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
