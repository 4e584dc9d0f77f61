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
    python -m evaluation.perf --sampling    # throughput vs DDIM steps and request size; vs SMOTE
    python -m evaluation.perf --vs-scvi     # SCLD fit vs scVI fit over the same passes of the data
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
    # Atomic and exclusive: a file planted at the path is replaced, never written through.
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
    n_sampled = sum(len(b) for b in generator.sample("type0", 2000, SamplingParams(), seed=0))
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


def sampling_benchmark(out: Path) -> pd.DataFrame:
    """Synthetic cells per second on the shipped Baron data against the number of DDIM steps
    and the request size, split into latent sampling and decoding; SMOTE on the same requests."""
    import torch
    from imblearn.over_sampling import SMOTE

    from scld_aug import SCLDSampler, datasets, sampling
    from scld_aug.params import SamplingParams

    adata = datasets.baron_pancreas()
    X, y = adata.X, adata.obs["cell_type"].astype(str).to_numpy()
    sampler = SCLDSampler(random_state=0).fit(X, y)
    generator = sampler.generator_
    code = generator.class_code("delta")
    rows = []
    for steps in (10, 20, 50, 100):
        for n in (256, 1024, 4096, 16384):
            if steps == 100 and n == 16384:
                continue  # ~1 min on 2 cores; the trend is clear without it
            params = SamplingParams(n_sampling_steps=steps)
            start = time.perf_counter()
            latents = sampling.latents(generator, code, n, params, torch.Generator().manual_seed(0))
            latent_s = time.perf_counter() - start
            rng = np.random.default_rng(0)
            start = time.perf_counter()
            for first in range(0, n, 1024):
                generator.decode(latents[first : first + 1024], code, "sample", rng)
            decode_s = time.perf_counter() - start
            rows.append(
                {
                    "method": "SCLD",
                    "steps": steps,
                    "cells": n,
                    "latent_s": latent_s,
                    "decode_s": decode_s,
                    "cells_per_s": n / (latent_s + decode_s),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    n_delta = int((y == "delta").sum())
    for n in (256, 1024, 4096, 16384):
        smote = SMOTE(sampling_strategy={"delta": n_delta + n}, k_neighbors=5, random_state=0)
        start = time.perf_counter()
        smote.fit_resample(X, y)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "method": "SMOTE",
                "steps": 0,
                "cells": n,
                "latent_s": 0.0,
                "decode_s": seconds,
                "cells_per_s": n / seconds,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "sampling.csv", index=False)
    wide = table.pivot_table(index=["method", "steps"], columns="cells", values="cells_per_s")
    print("cells per second (columns: cells requested)")
    print(wide.round(0).to_string())
    return table


def scvi_benchmark(out: Path, scvi_epochs: int = 50) -> pd.DataFrame:
    """SCLD's default fit against scVI's on the shipped data, at the same number of passes.

    SCLD trains for a fixed number of minibatch steps; its passes over the data (epochs) are
    ``steps * batch_size / n_cells`` summed over its three networks. scVI is timed for
    ``scvi_epochs`` epochs and scaled to that many (its epochs take the same time each).
    """
    from evaluation.scvi_baseline import SCVISampler
    from scld_aug import SCLDSampler, datasets

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
    args = parser.parse_args(argv)
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
        f"{torch.get_num_threads()} threads; default SCLDSampler parameters"
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
