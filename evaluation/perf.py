"""How fit time and memory grow with the number of cells (synthetic negative-binomial counts).

Data: ``--genes`` genes, 10 cell types with their own gene programs, log-normal library
sizes, negative-binomial counts with a fixed seed, built block by block as CSR and written
once to an ``.h5ad`` file (kept in the data folder for later runs). Each fit runs in its own
process: "memory" reads the file into a float32 CSR matrix and fits ``SCLDSampler``;
"backed" streams the file with ``pretrain(backed=True)``. Memory is read from /proc: the
resident size before the fit (interpreter, torch and, in memory mode, the data) and the peak
during the fit and the sampling of 2,000 cells. Default parameters (fixed numbers of optimizer
steps, so network training time should stay flat while data passes grow with the cells).

    python -m evaluation.perf [--cells 2000 20000 200000 1000000] [--genes 2000]
                              [--modes memory backed] [--device auto] [--out DIR]
    python -m evaluation.perf --sampling    # cells/s vs SMOTE on the same requests; solver, steps
    python -m evaluation.perf --vs-scvi     # SCLD fit vs scVI fit over the same passes of the data
    python -m evaluation.perf --contention  # fits beside busy processes; GridSearchCV n_jobs 1 vs 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

BLOCK = 5000


def synthetic_counts(n_cells: int, n_genes: int, seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    """Sparse NB counts: 10 types, each over-expressing its own 5% of the genes."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(0.3, 1.0, n_genes)
    n_types = 10
    programs = np.tile(base, (n_types, 1))
    block = max(1, n_genes // 20)
    for k in range(n_types):
        programs[k, k * block : (k + 1) * block] *= 8.0
    programs /= programs.sum(1, keepdims=True)
    # Unequal type sizes, as in real data: the rarest type has ~1% of the cells.
    sizes = np.geomspace(1, 30, n_types)
    y = rng.choice(n_types, size=n_cells, p=sizes / sizes.sum())
    blocks = []
    for start in range(0, n_cells, BLOCK):
        labels = y[start : start + BLOCK]
        library = rng.lognormal(np.log(2000), 0.4, len(labels))
        mu = library[:, None] * programs[labels]
        counts = rng.poisson(rng.gamma(2.0, mu / 2.0)).astype(np.float32)
        blocks.append(sp.csr_matrix(counts))
    return sp.vstack(blocks, format="csr"), np.array([f"type{k}" for k in y])


def _data_path(data_dir: Path, n_cells: int, n_genes: int) -> Path:
    return data_dir / f"nb_{n_cells}x{n_genes}.h5ad"


def write_h5ad(path: Path, n_cells: int, n_genes: int) -> None:
    """The synthetic data as an .h5ad file (CSR), for the streamed-from-disk runs."""
    import anndata

    from scld_aug.files import atomic_write

    if path.exists():
        return  # same seed and size: the same data
    X, y = synthetic_counts(n_cells, n_genes)
    obs = pd.DataFrame({"cell_type": pd.Categorical(y)}, index=np.arange(n_cells).astype(str))
    # Atomic and exclusive: a file planted at the path meanwhile is never written through
    # nor replaced (the write fails instead).
    atomic_write(path, anndata.AnnData(X, obs=obs).write_h5ad)


def _memory_mib(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak) of this process, from /proc (Linux).

    Not ``ru_maxrss``: Linux carries that over from the parent through fork and exec.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("this benchmark reads memory from /proc/self/status (Linux only)")


def _reset_peak() -> None:
    """Start the peak (VmHWM) afresh, so the fit's peak is not hidden by making the data."""
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")


def _one(n_cells: int, n_genes: int, mode: str, data_dir: Path, device: str) -> dict:
    """One fit, in this process: ``mode`` "memory" (CSR in RAM, ``SCLDSampler.fit``) or
    "backed" (``pretrain`` streaming the .h5ad from disk)."""
    import torch

    import scld_aug.train as training
    from evaluation.gpu_check import _timed_loops
    from scld_aug import SCLDSampler
    from scld_aug.params import SamplingParams
    from scld_aug.pretrain import pretrain

    start = time.perf_counter()
    path = _data_path(data_dir, n_cells, n_genes)
    if mode == "memory":
        # Read from the file, not generated here: making the data block by block leaves
        # freed memory the fit could reuse, which would hide what the fit allocates.
        import anndata

        adata = anndata.read_h5ad(path)
        X, y = adata.X, adata.obs["cell_type"].astype(str).to_numpy()
        del adata
        nnz, input_mib = int(X.nnz), (X.data.nbytes + X.indices.nbytes + X.indptr.nbytes) / 2**20
    else:
        nnz, input_mib = None, path.stat().st_size / 2**20
    data_s = time.perf_counter() - start
    _reset_peak()
    rss_before = _memory_mib("VmRSS")
    phases: dict[str, float] = {}
    original = _timed_loops(phases)
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        start = time.perf_counter()
        if mode == "memory":
            generator = SCLDSampler(random_state=0, device=device).fit(X, y).generator_
        else:
            generator = pretrain(path, backed=True, random_state=0, device=device)
        fit_s = time.perf_counter() - start
    finally:
        training._loop = original
    start = time.perf_counter()
    blocks = generator.sample("type0", 2000, SamplingParams(), seed=0)
    n_sampled = sum(b.shape[0] for b in blocks)
    sample_s = time.perf_counter() - start
    return {
        "mode": mode,
        "cells": n_cells,
        "genes": n_genes,
        "nnz": nnz,
        "input_mib": input_mib,
        "read_data_s": data_s,
        "fit_s": fit_s,
        **{f"{k}_s": v for k, v in phases.items()},
        "other_fit_s": fit_s - sum(phases.values()),
        "rss_before_fit_mib": rss_before,
        "peak_rss_mib": _memory_mib("VmHWM"),
        "fit_added_mib": _memory_mib("VmHWM") - rss_before,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "sample_cells_per_s": n_sampled / sample_s,
    }


def plot_scaling(table: pd.DataFrame, path: Path) -> None:
    """Fit time and peak memory against cells, one line per mode and gene count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for (mode, genes), part in table.groupby(["mode", "genes"]):
        part = part.sort_values("cells")
        label = f"{'in memory' if mode == 'memory' else 'streamed from disk'}, {genes} genes"
        ax_t.plot(part["cells"], part["fit_s"], "o-", label=label)
        ax_m.plot(part["cells"], part["peak_rss_mib"] / 1024, "o-", label=f"peak RSS, {label}")
        if mode == "memory":
            ax_m.plot(part["cells"], part["input_mib"] / 1024, "k:", label="input CSR size")
    for ax, what in ((ax_t, "fit time (s)"), (ax_m, "memory (GiB)")):
        ax.set_xscale("log")
        ax.set_xlabel("cells")
        ax.set_ylabel(what)
        ax.legend(fontsize=7)
    ax_t.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sampling_benchmark(out: Path, repeats: int = 3) -> pd.DataFrame:
    """Synthetic cells per second on the shipped Baron data, SCLD against SMOTE on the same
    requests through the same call (``fit_resample`` with a ``sampling_strategy``; the
    generator is trained once beforehand and reused): 4,096 and 16,384 new delta cells, and
    a mixed request adding 2,048 cells to every rare type (of at least 6 cells). SCLD
    with DPM-Solver++ at 20 steps (the default) and 10, and DDIM at 50 (the default before),
    on one torch thread (the default ``n_jobs``) and two. Each figure is the median of
    ``repeats`` calls, after one untimed call of each method (SMOTE's first call pays for
    imports and warm-up that a user pays once). Quality columns for the
    mixed request: per rare type, the share of new cells that a logistic regression trained
    on the real cells calls that type (``recognised``), and the MMD between new and real
    cells of the type in an embedding of the real cells (mean over types)."""
    from imblearn.over_sampling import SMOTE
    from sklearn.linear_model import LogisticRegression

    from scld_aug import SCLDSampler, datasets
    from scld_aug.metrics import ReferenceEmbedding, mmd_rbf
    from scld_aug.presets import rare_strategy

    adata = datasets.baron_pancreas()
    X, y = adata.X.tocsr(), adata.obs["cell_type"].astype(str).to_numpy()
    n_delta = int((y == "delta").sum())
    requests = {
        "delta +4096": {"delta": n_delta + 4096},
        "delta +16384": {"delta": n_delta + 16384},
        # SMOTE's 5 neighbours need 6 cells of a type.
        "mixed (+2048 per rare type)": {
            t: int((y == t).sum()) + 2048 for t in rare_strategy(y) if (y == t).sum() > 5
        },
    }
    embedding = ReferenceEmbedding().fit(X)
    judge = LogisticRegression(max_iter=2000).fit(embedding.transform(X), y)

    def quality(X_res, y_res) -> dict:
        new_X, new_y = X_res[len(y) :], y_res[len(y) :]
        recognised, mmd = [], []
        for t in sorted(set(new_y)):
            cells = embedding.transform(new_X[new_y == t])
            recognised.append(float(np.mean(judge.predict(cells) == t)))
            mmd.append(mmd_rbf(cells, embedding.transform(X[y == t])))
        return {
            "recognised_min": min(recognised),
            "recognised_mean": float(np.mean(recognised)),
            "mmd_mean": float(np.mean(mmd)),
        }

    start = time.perf_counter()
    sampler = SCLDSampler(random_state=0).fit(X, y)
    print(f"fit {time.perf_counter() - start:.0f} s", flush=True)
    rows = []
    configs = [("SMOTE", None, None, None)] + [
        ("SCLD", solver, steps, n_jobs)
        for n_jobs in (None, 2)
        for solver, steps in (("dpm++", 20), ("dpm++", 10), ("ddim", 50))
    ]
    first = next(iter(requests.values()))
    SMOTE(sampling_strategy=first, k_neighbors=5, random_state=0).fit_resample(X, y)
    sampler.set_params(sampling_strategy=first).fit_resample(X, y)
    for method, solver, steps, n_jobs in configs:
        for request, strategy in requests.items():
            n_new = sum(n - int((y == t).sum()) for t, n in strategy.items())
            if method == "SMOTE":
                resampler = SMOTE(sampling_strategy=strategy, k_neighbors=5, random_state=0)
            else:
                resampler = sampler.set_params(
                    sampling_strategy=strategy, solver=solver, n_sampling_steps=steps, n_jobs=n_jobs
                )
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                X_res, y_res = resampler.fit_resample(X, y)
                times.append(time.perf_counter() - start)
            seconds = float(np.median(times))
            row = {
                "method": method,
                "solver": solver,
                "steps": steps,
                "threads": None if method == "SMOTE" else (n_jobs or 1),
                "request": request,
                "new_cells": n_new,
                "seconds": seconds,
                "cells_per_s": n_new / seconds,
            }
            if request.startswith("mixed"):
                row.update(quality(X_res, y_res))
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "sampling.csv", index=False)
    table["config"] = (
        table.method
        + table.solver.map(lambda s: "" if pd.isna(s) else f" {s}")
        + table.steps.map(lambda s: "" if pd.isna(s) else f" {int(s)} steps")
        + table.threads.map(lambda t: "" if pd.isna(t) else f", {int(t)} thread(s)")
    )
    wide = table.pivot_table(index="config", columns="request", values="cells_per_s", sort=False)
    smote = wide.loc["SMOTE"]
    shown = pd.DataFrame(
        {c: [f"{v:,.0f} ({v / smote[c]:.2f}x)" for v in wide[c]] for c in wide.columns},
        index=wide.index,
    )
    lines = [
        "cells per second (columns: request); in brackets: ratio to SMOTE on the same request",
        shown.to_string(),
        "",
        "quality of the mixed request (per rare type; min and mean share recognised, mean MMD)",
        table.dropna(subset=["recognised_min"])
        .set_index("config")[["recognised_min", "recognised_mean", "mmd_mean"]]
        .round(3)
        .to_string(),
    ]
    (out / "sampling.txt").write_text("\n".join(lines) + "\n")
    print(*lines, sep="\n")
    return table


def _short_training(fraction: float) -> dict:
    """The default training steps scaled by ``fraction`` (the same network sizes and data)."""
    from scld_aug.params import BY_NAME

    names = ("autoencoder_steps", "diffusion_steps", "classifier_steps")
    return {name: max(1, round(BY_NAME[name].default * fraction)) for name in names}


def _contention_fit(job: dict) -> pd.DataFrame:
    """One timed job in this process (a child of :func:`contention_benchmark`)."""
    from scld_aug import SCLDSampler, datasets

    adata = datasets.baron_pancreas()
    X, y = adata.X, adata.obs["cell_type"].astype(str).to_numpy()
    sampler = SCLDSampler(random_state=0, n_jobs=job["n_jobs"], **job["training"])
    start = time.perf_counter()
    if job["kind"] == "fit":
        sampler.fit(X, y)
    else:  # a grid search over a pipeline with the sampler: 2 candidates x 2 folds
        from imblearn.pipeline import Pipeline
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GridSearchCV, StratifiedKFold

        from scld_aug.preprocessing import log_normalizer

        counts = pd.Series(y).value_counts()
        keep = np.isin(y, counts.index[counts >= 20])  # every fold sees every type
        X, y = X[keep], y[keep]
        # The two smallest kept types (51 and 70 cells, about half per training fold) are
        # raised to 100 cells in every fit.
        smallest = counts[counts >= 20].index[-2:]
        pipe = Pipeline(
            [
                ("aug", sampler.set_params(sampling_strategy={t: 100 for t in smallest})),
                ("norm", log_normalizer()),
                ("clf", LogisticRegression(max_iter=300)),
            ]
        )
        search = GridSearchCV(
            pipe,
            {"aug__guidance_scale": [1.0, 2.0]},
            cv=StratifiedKFold(2, shuffle=True, random_state=0),
            scoring="f1_macro",
            n_jobs=job["search_n_jobs"],
            error_score="raise",
        )
        search.fit(X, y)
    print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
    return pd.DataFrame()


def _timed_child(job: dict, timeout: float) -> float | None:
    """Seconds of one job in a fresh process; None when it ran past ``timeout``."""
    command = [sys.executable, "-m", "evaluation.perf", "--contention-fit", json.dumps(job)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def contention_benchmark(out: Path, steps_fraction: float = 0.25) -> pd.DataFrame:
    """Fit time with 0, 1 and 2 busy single-threaded neighbours, for the default
    ``n_jobs=None`` (one torch thread) and ``n_jobs=-1`` (one thread per CPU, torch's own
    default and the behaviour before ``n_jobs``); then ``GridSearchCV(n_jobs=1)`` against
    ``n_jobs=2`` over a pipeline with the sampler. Each job runs in a fresh process."""
    from scld_aug.threads import available_cpus

    cpus = available_cpus()
    training = _short_training(steps_fraction)
    print(
        f"machine: {platform.machine()}, {cpus} CPUs; Baron pancreas, default parameters with "
        f"training steps x{steps_fraction} ({training})",
        flush=True,
    )
    rows = []
    alone: dict = {}
    for n_jobs in (None, -1):
        for busy in (0, 1, 2):
            neighbours = [
                subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)
            ]
            try:
                # A collapse can take 10x as long: stop at 6x the time alone and say so.
                limit = 6 * alone[n_jobs] if busy else 3600.0
                seconds = _timed_child(
                    {"kind": "fit", "n_jobs": n_jobs, "training": training}, limit
                )
            finally:
                for p in neighbours:
                    p.kill()
                    p.wait()
            if busy == 0:
                alone[n_jobs] = seconds
            bound = (
                (busy + 1) / cpus * alone[n_jobs] * 1.2 if busy + 1 > cpus else alone[n_jobs] * 1.2
            )
            rows.append(
                {
                    "job": "fit",
                    "n_jobs": str(n_jobs),
                    "busy_neighbours": busy,
                    "seconds": seconds,
                    "vs_alone": None if seconds is None else seconds / alone[n_jobs],
                    "goal_max_s": bound,
                    "within_goal": seconds is not None and seconds <= bound,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    for search_n_jobs in (1, 2):
        seconds = _timed_child(
            {
                "kind": "search",
                "n_jobs": None,
                "training": training,
                "search_n_jobs": search_n_jobs,
            },
            3600.0,
        )
        rows.append(
            {"job": f"GridSearchCV(n_jobs={search_n_jobs})", "n_jobs": "None", "seconds": seconds}
        )
        print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "contention.csv", index=False)
    print(table.to_string(index=False))
    return table


def scvi_benchmark(out: Path, scvi_epochs: int = 50) -> pd.DataFrame:
    """SCLD's default fit against scVI's on the shipped data, at the same number of passes.

    SCLD trains for a fixed number of minibatch steps; its passes over the data (epochs) are
    ``steps * batch_size / n_cells`` summed over its three networks. scVI is timed for
    ``scvi_epochs`` epochs and scaled to that many (its epochs take the same time each).
    """
    from scld_aug import SCLDSampler, datasets
    from scld_aug.benchmark.scvi_baseline import SCVISampler

    adata = datasets.baron_pancreas()
    X, y = adata.X, adata.obs["cell_type"].astype(str).to_numpy()
    sampler = SCLDSampler(random_state=0)
    start = time.perf_counter()
    sampler.fit(X, y)
    scld_s = time.perf_counter() - start
    steps = sampler.autoencoder_steps + sampler.diffusion_steps + sampler.classifier_steps
    scld_epochs = steps * sampler.batch_size / X.shape[0]
    scvi = SCVISampler(
        sampling_strategy={"delta": int((y == "delta").sum()) + 10},
        random_state=0,
        max_epochs=scvi_epochs,
    )
    start = time.perf_counter()
    scvi.fit_resample(X, y)
    scvi_s = time.perf_counter() - start
    per_epoch = scvi_s / scvi_epochs
    row = {
        "cells": X.shape[0],
        "scld_fit_s": scld_s,
        "scld_epochs_equivalent": scld_epochs,
        "scvi_epochs_timed": scvi_epochs,
        "scvi_fit_s": scvi_s,
        "scvi_s_per_epoch": per_epoch,
        "scvi_s_at_scld_epochs": per_epoch * scld_epochs,
        "scld_over_scvi_same_epochs": scld_s / (per_epoch * scld_epochs),
    }
    print(json.dumps(row), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([row]).to_csv(out / "scld_vs_scvi.csv", index=False)
    return pd.DataFrame([row])


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[2000, 20000, 200000, 1000000])
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=["memory", "backed"],
        default=["memory", "backed"],
        help="memory: CSR in RAM through SCLDSampler.fit; backed: pretrain() streaming the "
        ".h5ad from disk",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="where the .h5ad files go (default: a private temporary folder, removed at the end)",
    )
    parser.add_argument("--out", default="evaluation/results/perf")
    parser.add_argument("--name", default="scaling", help="stem of the CSV/PNG written")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="memory", help=argparse.SUPPRESS)
    parser.add_argument("--sampling", action="store_true", help="sampling throughput instead")
    parser.add_argument("--vs-scvi", action="store_true", help="SCLD vs scVI fit time instead")
    parser.add_argument(
        "--contention",
        action="store_true",
        help="fit time beside busy processes, and GridSearchCV n_jobs=1 vs 2, instead",
    )
    parser.add_argument(
        "--steps-fraction",
        type=float,
        default=0.25,
        help="--contention: training steps as a fraction of the defaults (default 0.25)",
    )
    parser.add_argument("--contention-fit", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.contention_fit is not None:
        return _contention_fit(json.loads(args.contention_fit))
    if args.contention:
        return contention_benchmark(Path(args.out), args.steps_fraction)
    if args.vs_scvi:
        return scvi_benchmark(Path(args.out))
    if args.sampling:
        return sampling_benchmark(Path(args.out))
    if args.one:
        row = _one(args.cells[0], args.genes, args.mode, Path(args.data_dir), args.device)
        print(json.dumps(row))
        return pd.DataFrame()
    import tempfile

    if args.data_dir is not None:
        return _scaling(args, Path(args.data_dir))
    # A folder of our own (mode 0700): nobody else can plant files or links in it.
    with tempfile.TemporaryDirectory(prefix="scld_perf_") as private:
        return _scaling(args, Path(private))


def _scaling(args: argparse.Namespace, data_dir: Path) -> pd.DataFrame:
    import torch

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        "default SCLDSampler parameters (n_jobs=None: 1 torch thread)"
    )
    rows = []
    for n in args.cells:
        write_h5ad(_data_path(data_dir, n, args.genes), n, args.genes)
        for mode in args.modes:
            # Each run in its own process, so its peak RSS is its own.
            done = subprocess.run(
                [sys.executable, "-m", "evaluation.perf", "--one", "--cells", str(n)]
                + ["--genes", str(args.genes), "--mode", mode, "--device", args.device]
                + ["--data-dir", str(data_dir)],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise RuntimeError(f"{mode} run with {n} cells failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    print(table.drop(columns=["nnz"]).round(1).to_string(index=False))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / f"{args.name}.csv", index=False)
    plot_scaling(table, out / f"{args.name}.png")
    return table


if __name__ == "__main__":
    main()
