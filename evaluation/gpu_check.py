"""Validate the GPU path and time it against the CPU on the same machine: one command for
the GPU goals of issue 16, sized to finish in under 8 minutes on one GPU.

On the shipped Baron data (1,937 cells x 20,125 genes), for each device: fit time per
network (default parameters; ``--variants`` adds bfloat16 autocast and ``torch.compile``
fits on the GPU), sampling throughput with decoding to counts (13 small requests, 8,192
cells, and the goal's 10^5 cells), the share of synthetic cells that a logistic regression
trained on real cells assigns to the intended type, that a fixed seed repeats itself, and
that a sampler fitted on the device saves, loads on the CPU and generates. Then, on the GPU
only:

* 10^5 cells x 2,000 genes: a generator fitted on Baron's 2,000 most variable genes (a
  quarter of the default training steps: sampling costs the same networks and steps);
* the DDP path: ``torchrun --nproc_per_node 1 -m scld_aug train --device cuda`` (NCCL),
  a short training, timed and checked to write a loadable generator.

The CPU runs with every core (``n_jobs=-1``). Goals: default fit on Baron <= 10 s, sampling
>= 10^5 cells/s for 10^5 cells x 2,000 genes; ``goals.txt`` lists each measured figure
against its goal.

    python -m evaluation.gpu_check [--out DIR] [--devices cuda cpu]
        [--variants default compile]   # training options timed on the GPU (also: amp, amp+compile)
        [--quick]                      # tiny model and requests: checks the script itself
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression

import scld_aug.train as training
from scld_aug import SCLDSampler, datasets
from scld_aug.preprocessing import log_normalize
from scld_aug.presets import TINY


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed_loops(phases: dict):
    """Wrap the training loop to record the wall time of each network's training."""
    original = training._loop

    def timed(name, module, *args, **kwargs):
        device = next(module.parameters()).device
        _sync(device)
        start = time.perf_counter()
        out = original(name, module, *args, **kwargs)
        _sync(device)
        phases[name] = time.perf_counter() - start
        return out

    training._loop = timed
    return original


VARIANTS = {
    "default": {},
    "amp": {"mixed_precision": True},
    "compile": {"torch_compile": True},
    "amp+compile": {"mixed_precision": True, "torch_compile": True},
}


def check_device(
    device: str,
    X,
    y,
    reference,
    cells_per_type: int,
    quick: bool = False,
    variant: str = "default",
) -> dict:
    # A tiny fit first: device start-up (context, kernel loading) is not the fit's cost.
    start = time.perf_counter()
    SCLDSampler(random_state=0, device=device, **TINY).fit(X[:300], y[:300])
    warmup_s = time.perf_counter() - start
    phases: dict[str, float] = {}
    original = _timed_loops(phases)
    try:
        sampler = SCLDSampler(
            random_state=0,
            device=device,
            n_jobs=-1 if device == "cpu" else None,
            **(TINY if quick else {}),
            **VARIANTS[variant],
        )
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        sampler.fit(X, y)
        _sync(sampler.device_)
        fit_s = time.perf_counter() - start
    finally:
        training._loop = original
    row = {
        "device": str(sampler.device_),
        "variant": variant,
        "warmup_s": warmup_s,
        "fit_s": fit_s,
        **{f"{k}_s": v for k, v in phases.items()},
    }
    if device == "cuda":
        row["fit_peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    types = [t for t in pd.Series(y).value_counts().index if (y == t).sum() >= 3]
    recognised, total, seconds = [], 0, 0.0
    for cell_type in types:
        start = time.perf_counter()
        cells = sampler.generate(cells_per_type, cell_type)
        seconds += time.perf_counter() - start
        total += cells.shape[0]
        recognised.append(np.mean(reference.predict(log_normalize(cells)) == cell_type))
    row["cells_per_s_small_requests"] = total / seconds
    row["mean_recognised"] = float(np.mean(recognised))
    row["min_recognised"] = float(np.min(recognised))
    for solver, steps in (("dpm++", 20), ("ddim", 50)):
        sampler.set_params(solver=solver, n_sampling_steps=steps)
        start = time.perf_counter()
        big = sampler.generate(8192, "beta")
        seconds = time.perf_counter() - start
        row[f"cells_per_s_8192_beta_{solver}_{steps}steps"] = big.shape[0] / seconds
    sampler.set_params(solver="dpm++", n_sampling_steps=20)
    row["cells_per_s_100k_beta"] = _throughput(sampler, "beta", 100 if quick else 100_000)
    again = [sampler.generate(300, "delta") for _ in range(2)]
    row["repeatable"] = bool((again[0] != again[1]).nnz == 0)
    with tempfile.TemporaryDirectory() as tmp:
        sampler.save(Path(tmp) / "s.pt")
        loaded = SCLDSampler.load(Path(tmp) / "s.pt", device="cpu")
        cells = loaded.generate(100, "delta")
        row["loads_on_cpu"] = bool(
            sp.issparse(cells) and cells.shape == (100, X.shape[1]) and cells.min() >= 0
        )
        row["recognised_loaded_on_cpu"] = float(
            np.mean(reference.predict(log_normalize(cells)) == "delta")
        )
    return row


def _throughput(sampler: SCLDSampler, cell_type, n: int) -> float:
    """Cells per second of one ``generate`` request, output assembled on the CPU."""
    _sync(torch.device(sampler.device_))
    start = time.perf_counter()
    cells = sampler.generate(n, cell_type)
    return cells.shape[0] / (time.perf_counter() - start)


def check_2000_genes(X, y, quick: bool = False, device: str = "cuda") -> dict:
    """10^5 cells of 2,000 genes on the GPU, from a generator fitted on Baron's 2,000 most
    variable genes with a quarter of the default training steps."""
    from scld_aug.genes import GenePanel
    from scld_aug.params import BY_NAME

    steps = {n: max(1, BY_NAME[n].default // 4) for n in TRAINING_STEPS}
    sampler = SCLDSampler(random_state=0, device=device, **(TINY if quick else steps))
    genes = _top_genes(X, y, GenePanel, 50 if quick else 2000)
    start = time.perf_counter()
    sampler.fit(X[:, genes], y)
    fit_s = time.perf_counter() - start
    return {
        "genes": len(genes),
        "fit_quarter_steps_s": fit_s,
        "cells_per_s_100k_beta": _throughput(sampler, "beta", 100 if quick else 100_000),
    }


TRAINING_STEPS = ("autoencoder_steps", "diffusion_steps", "classifier_steps")


def _top_genes(X, y, panel_cls, n: int) -> np.ndarray:
    """The genes a default fit would model (the panel's choice), in input order."""
    import scipy.sparse as sp

    matrix = sp.csr_matrix(X)
    library = np.asarray(matrix.sum(1)).ravel()
    codes = np.unique(y, return_inverse=True)[1]
    panel = panel_cls.fit(
        matrix, codes, codes.max() + 1, np.full(len(y), 1 / len(y)), library, n, "nb"
    )
    return panel.genes


def check_nccl(adata, quick: bool = False, device: str = "cuda") -> dict:
    """``torchrun`` with one process on ``device`` (NCCL on a GPU), a short training."""
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "baron.h5ad", Path(tmp) / "g.pt"
        adata.write_h5ad(data)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += ["--nproc_per_node=1", "-m", "scld_aug", "train", str(data), str(out)]
        command += [f"--device={device}", "--quiet"]
        command += ["--quick"] if quick else ["--diffusion-steps=500", "--autoencoder-steps=300"]
        start = time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        loads = False
        if run.returncode == 0:
            from scld_aug import SCLDGenerator

            loads = SCLDGenerator.load(out, device="cpu").n_genes == adata.n_vars
    return {
        "torchrun_nccl_ok": run.returncode == 0 and loads,
        "torchrun_nccl_s": seconds,
        "torchrun_tail": (run.stdout + run.stderr)[-2000:] if run.returncode else "",
    }


def goals(table: pd.DataFrame, extra: dict) -> list[str]:
    """Each goal of issue 16 with the figure measured for it."""
    lines = []
    for (device, variant), row in table.iterrows():
        if device.startswith("cuda"):
            ok = "met" if row.fit_s <= 10 else "not met"
            lines.append(f"default fit on Baron, {variant}: {row.fit_s:.1f} s (goal <= 10 s: {ok})")
    if "cells_per_s_100k_beta" in extra:
        rate = extra["cells_per_s_100k_beta"]
        ok = "met" if rate >= 1e5 else "not met"
        lines.append(
            f"10^5 cells x {extra['genes']} genes on the GPU: {rate:,.0f} cells/s "
            f"(goal >= 100,000: {ok})"
        )
    for (device, variant), row in table.iterrows():
        lines.append(
            f"10^5 cells x 20,125 genes, {device} {variant}: {row.cells_per_s_100k_beta:,.0f} "
            "cells/s"
        )
    if "torchrun_nccl_ok" in extra:
        state = "ran" if extra["torchrun_nccl_ok"] else "FAILED"
        lines.append(f"torchrun on the GPU (NCCL): {state} in {extra['torchrun_nccl_s']:.0f} s")
    return lines


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".")
    parser.add_argument("--devices", nargs="+", default=["cuda", "cpu"])
    parser.add_argument("--cells-per-type", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="tiny model: checks the script only")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=["default", "compile"],
        help="training variants to time on the GPU (the CPU runs the default only)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "cpu_threads": f"n_jobs=-1 ({os.cpu_count()})",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    print(json.dumps(info))
    adata = datasets.baron_pancreas()
    X, y = adata.X, adata.obs["cell_type"].astype(str).to_numpy()
    reference = LogisticRegression(max_iter=2000).fit(log_normalize(X), y)
    rows = []
    for device in args.devices:
        for variant in args.variants if device == "cuda" else ["default"]:
            row = check_device(device, X, y, reference, args.cells_per_type, args.quick, variant)
            print(json.dumps(row), flush=True)
            rows.append(row)
    table = pd.DataFrame(rows).set_index(["device", "variant"])
    extra: dict = {}
    if "cuda" in args.devices:
        started = time.perf_counter()
        extra.update(check_2000_genes(X, y, args.quick))
        extra.update(check_nccl(adata, args.quick))
        print(json.dumps(extra), flush=True)
        extra["gpu_only_checks_s"] = time.perf_counter() - started
    table.to_csv(out / "gpu_check.csv")
    (out / "gpu_check.json").write_text(
        json.dumps({"info": info, "rows": rows, "gpu_only": extra}, indent=1)
    )
    lines = goals(table, extra)
    (out / "goals.txt").write_text("\n".join(lines) + "\n")
    print(table.T.to_string(), *lines, sep="\n")
    return table


if __name__ == "__main__":
    main()
