"""Run the benchmark protocols on one labelled count matrix and write what they measured.

One entry point, :func:`run_benchmark`, serves ``scld-aug benchmark`` (any ``.h5ad``) and
the project's own harness (``python -m evaluation``, shipped datasets). Everything is
checked before the first training; results reach disk atomically, then the report and
plots are built from them, then (optionally) everything is logged to MLflow.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import platform
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from scld_aug.benchmark import protocols
from scld_aug.benchmark.methods import CLASSIFIERS, METHODS
from scld_aug.files import OutputPathError, atomic_write, check_output_folder

logger = logging.getLogger(__name__)

PROTOCOLS = ("natural", "downsample", "fidelity")
#: Methods run when none are named. scVI is left out unless asked for: it needs
#: scvi-tools and is by far the slowest.
DEFAULT_METHODS = ("none", "RandomOverSampler", "SMOTE", "ADASYN", "SCLD")
RESULT_FILES = ("results_downstream.csv", "results_fidelity.csv")

__all__ = ["DEFAULT_METHODS", "PROTOCOLS", "BenchmarkError", "rebuild_report", "run_benchmark"]


class BenchmarkError(ValueError):
    """A benchmark that cannot run as asked; the message says what to change."""


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _check(
    methods, classifiers, protocols_run, y, types, ks, scld_params, out: Path, overwrite, keep
) -> None:
    unknown = [m for m in methods if m.split()[0] not in METHODS]
    if unknown:
        raise BenchmarkError(
            f"Unknown method(s) {unknown}; choose from {list(METHODS)} (SCLD variants as "
            "'SCLD w=3', 'SCLD anchor=0.5')."
        )
    for method in methods:
        if method.startswith("SCLD"):
            from scld_aug import SCLDSampler

            # Misspelt variants and out-of-range values fail now, not after an hour of
            # the other methods.
            variant = {**scld_params, **protocols.variant_params(method)}
            SCLDSampler(**variant)._validate_params()
    bad = [c for c in classifiers if c not in CLASSIFIERS]
    if bad:
        raise BenchmarkError(f"Unknown classifier(s) {bad}; choose from {list(CLASSIFIERS)}.")
    bad = [p for p in protocols_run if p not in PROTOCOLS]
    if bad:
        raise BenchmarkError(f"Unknown protocol(s) {bad}; choose from {list(PROTOCOLS)}.")
    counts = Counter(y.tolist())
    if "downsample" in protocols_run:
        missing = [t for t in types if t not in counts]
        if missing:
            raise BenchmarkError(
                f"Type(s) {missing} to downsample are not among the labels; choose from "
                f"{sorted(map(str, counts))}."
            )
        if not ks or min(ks) < 1:
            raise BenchmarkError(f"k must be positive whole numbers, got {list(ks)}.")
    if len(counts) < 2:
        raise BenchmarkError("The labels hold one type; a benchmark needs at least two.")
    needed = {"tabulate": "tabulate", "matplotlib": "matplotlib"}
    if "scVI" in methods:
        needed["scvi"] = "scvi-tools"
    absent = [package for module, package in needed.items() if not _installed(module)]
    if absent:
        extras = [
            f"'scld-aug[{extra}]'"
            for extra, packages in (
                ("benchmark", {"tabulate", "matplotlib"}),
                ("scvi", {"scvi-tools"}),
            )
            if packages & set(absent)
        ]
        raise BenchmarkError(
            f"The benchmark needs {', '.join(absent)}: pip install {' and '.join(extras)}"
            + (", or leave scVI out of the methods." if "scvi-tools" in absent else ".")
        )
    try:
        check_output_folder(out, what="benchmark results")
    except OutputPathError as err:
        raise BenchmarkError(str(err)) from None
    existing = [name for name in (*RESULT_FILES, "meta.json") if (out / name).exists()]
    if existing and not (overwrite or keep):
        raise BenchmarkError(
            f"{out} already holds benchmark results ({', '.join(existing)}); choose another "
            "output folder, replace them (--overwrite), or rerun some methods and keep the "
            "others (--keep-other-methods)."
        )


def run_benchmark(
    X,
    y: Sequence,
    output: str | os.PathLike,
    *,
    name: str,
    protocols_run: Sequence[str] = PROTOCOLS,
    methods: Sequence[str] = DEFAULT_METHODS,
    classifiers: Sequence[str] = tuple(CLASSIFIERS),
    seeds: int = 5,
    fidelity_seeds: int = 5,
    ks: Sequence[int] = (10, 25),
    types: Sequence[str] | None = None,
    cache: str | os.PathLike | None = None,
    scld_params: dict | None = None,
    scvi_epochs: int | None = None,
    overwrite: bool = False,
    keep_other_methods: bool = False,
    tracking: str | bool = False,
    command: str = "",
) -> Path:
    """Compare augmentation methods on ``X`` (raw counts) and ``y`` (cell types).

    Parameters
    ----------
    X : {ndarray, sparse matrix} of shape (n_cells, n_genes)
        Raw counts (converted to CSR once).
    y : array-like of shape (n_cells,)
        Cell-type labels (compared as text).
    output : path
        Folder for ``results_downstream.csv``, ``results_fidelity.csv``, ``meta.json``,
        ``report.md`` and the plots.
    name : str
        The dataset's name in the report and in MLflow.
    protocols_run : sequence of {"natural", "downsample", "fidelity"}
        ``natural``: rare types (under 2% of the training cells) raised to the median type
        size. ``downsample``: ``types`` cut to each ``k`` training cells and augmented back.
        ``fidelity``: synthetic against held-out real cells of each type.
    methods : sequence of str
        Names of ``scld_aug.benchmark.methods.METHODS``; SCLD variants as
        ``"SCLD w=3 anchor=0.5"``.
    classifiers : sequence of {"logreg", "knn", "random_forest"}
    seeds : int
        Stratified 70/30 splits ``0 .. seeds-1`` of the downstream protocols.
    fidelity_seeds : int
        The first ``fidelity_seeds`` of them are used by the fidelity protocol.
    ks : sequence of int
        Training cells left to each downsampled type.
    types : sequence of str or None
        Types to downsample; ``None``: the three largest after the majority type.
    cache : path or None
        Folder of cached generators (``memory=`` of the samplers); ``None``:
        ``<output>/.generator_cache``. Methods and reruns on the same split share them.
    scld_params : dict or None
        SCLDSampler parameters for every SCLD method (variants override them).
    scvi_epochs : int or None
        scVI's training epochs; ``None``: scvi-tools' heuristic.
    overwrite : bool
        Replace results already in ``output``.
    keep_other_methods : bool
        Keep the saved rows of methods not run now (same seeds and types required).
    tracking : bool or str
        Log the results to MLflow: ``True`` for the default store, or a tracking URI.
    command : str
        How the run was started, recorded in ``meta.json`` and the report.

    Returns
    -------
    report : Path
        ``output/report.md``.
    """
    import scipy.sparse as sp

    out = Path(output)
    X = sp.csr_matrix(X)
    y = np.asarray(y).astype(str)
    if X.shape[0] != len(y):
        raise BenchmarkError(f"X has {X.shape[0]} cells but y has {len(y)} labels.")
    types = list(types) if types else protocols.default_downsample_types(y)
    scld_params = dict(scld_params or {})
    _check(
        methods, classifiers, protocols_run, y, types, ks, scld_params, out, overwrite,
        keep_other_methods,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    cache = str(cache or out / ".generator_cache")
    seed_list = list(range(seeds))
    logger.info(
        f"{name}: {X.shape[0]} cells x {X.shape[1]} genes, {len(set(y))} types; seeds {seed_list}"
    )
    start = time.perf_counter()
    runs = protocols.Runs(
        X, y, list(methods), list(classifiers), cache, scld_params, logger.info, scvi_epochs
    )
    frames = []
    if "natural" in protocols_run:
        logger.info("natural imbalance")
        frames.append(protocols.natural_imbalance(runs, seed_list))
    if "downsample" in protocols_run:
        logger.info(f"rare-cell downsampling of {types} to k={list(ks)}")
        frames.append(protocols.rare_downsampling(runs, seed_list, list(ks), types))
    downstream = pd.concat(frames, ignore_index=True) if frames else None
    fidelity = None
    if "fidelity" in protocols_run:
        logger.info("fidelity")
        fidelity = protocols.fidelity(
            X,
            y,
            seed_list[:fidelity_seeds],
            cache,
            scld_params,
            logger.info,
            out / "embedding.png",
            with_scvi="scVI" in methods,
            scvi_epochs=scvi_epochs,
        )
    kept = {}
    if keep_other_methods:
        downstream, fidelity, kept = keep_saved_rows(out, downstream, fidelity, seed_list, types)
    # Results replace earlier ones only where the run was allowed to (checked before any
    # work); files that appeared meanwhile are kept, and these are written beside them.
    replace = overwrite or keep_other_methods
    for frame, file in zip((downstream, fidelity), RESULT_FILES, strict=True):
        if frame is not None:
            atomic_write(
                out / file,
                lambda tmp, frame=frame: frame.to_csv(tmp, index=False),
                overwrite=replace,
            )
    meta = {
        "data": f"{name}: {X.shape[0]} cells x {X.shape[1]} genes, {len(set(y))} types",
        "seeds": seed_list,
        "downsampled types": types,
        "split": "stratified 70/30 per seed; augmentation inside the Pipeline on the training part only",
        "pipeline": "augment -> log-normalize -> TruncatedSVD(50) -> classifier (logreg: StandardScaler + LogisticRegression; kNN k=15 distance-weighted; random forest 200 trees)",
        "SCLD parameters": json.dumps(scld_params) if scld_params else "defaults",
        **(
            {"scVI": f"n_latent 10, ZINB, {scvi_epochs or 'default'} epochs"}
            if "scVI" in methods
            else {}
        ),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "wall time": f"{time.perf_counter() - start:.0f} s",
        **kept,
        "command": command,
    }
    text = json.dumps({"dataset": name, **meta}, indent=1, default=str)
    atomic_write(out / "meta.json", lambda tmp: tmp.write_text(text), overwrite=replace)
    return _report_and_track(out, name, downstream, fidelity, meta, tracking)


def rebuild_report(output: str | os.PathLike, tracking: str | bool = False) -> Path:
    """Rebuild ``report.md`` and the plots from the results saved in ``output`` (and log
    them to MLflow when ``tracking``), without running anything."""
    out = Path(output)
    if not (out / "meta.json").exists():
        raise BenchmarkError(f"{out} holds no benchmark results (no meta.json).")
    meta = json.loads((out / "meta.json").read_text())
    name = meta.pop("dataset")
    frames = {}
    for file in RESULT_FILES:
        path = out / file
        frames[file] = pd.read_csv(path) if path.exists() else None
    return _report_and_track(out, name, *frames.values(), meta, tracking)


def _report_and_track(out, name, downstream, fidelity, meta, tracking) -> Path:
    from scld_aug.benchmark.report import write_report

    path = write_report(out, name, downstream, fidelity, meta)
    logger.info(f"wrote {path}")
    if tracking:
        from scld_aug.tracking.benchmarks import log_benchmark
        from scld_aug.tracking.transport import tracking_uri

        uri = tracking if isinstance(tracking, str) else None
        run_id = log_benchmark(out, name, downstream, fidelity, meta, uri)
        if run_id is not None:
            logger.info(f"logged to MLflow at {tracking_uri(uri)}: run {run_id}")
    return path


def keep_saved_rows(out: Path, downstream, fidelity, seeds, types):
    """The new results plus the saved rows of every method this run did not produce.

    The saved run must have used the same seeds and downsampled types, so that every kept
    row was scored on the same splits as the new ones.
    """
    if not (out / "meta.json").exists():
        raise BenchmarkError(
            f"--keep-other-methods: {out} holds no saved run (no meta.json); run every method."
        )
    saved_meta = json.loads((out / "meta.json").read_text())
    if saved_meta.get("seeds") != seeds or saved_meta.get("downsampled types") != list(types):
        raise BenchmarkError(
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
        if "kept from the previous run" in saved_meta:  # what that run had kept in turn
            note["kept from the previous run"] += (
                f"; it had kept: {saved_meta['kept from the previous run']}"
            )
    return merged[0], merged[1], note
