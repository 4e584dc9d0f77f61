"""Validate the GPU path and time it against the CPU on the same machine.

On the shipped Baron data, for each device: fit time per network, sampling throughput
(with decoding to counts), and conditional accuracy of the synthetic cells (share that a
logistic regression trained on real cells assigns to the intended type). Also checks that
a sampler fitted on the GPU saves, loads on the CPU and generates, and that GPU sampling
with a fixed seed repeats itself.

    python -m evaluation.gpu_check [--out DIR] [--devices cuda cpu]
        [--variants default amp compile amp+compile]   # training options, timed on the GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
            random_state=0, device=device, **(TINY if quick else {}), **VARIANTS[variant]
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
    # The goal's request: 10^5 cells (decoded on every CPU of the machine: n_jobs=-1).
    sampler.set_params(solver="dpm++", n_sampling_steps=20, n_jobs=-1)
    start = time.perf_counter()
    big = sampler.generate(10 if quick else 100_000, "beta")
    row["cells_per_s_100k_beta_all_cpus"] = big.shape[0] / (time.perf_counter() - start)
    del big
    sampler.set_params(n_jobs=None)
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
        default=["default"],
        help="training variants to time on the GPU (the CPU runs the default only)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "torch": torch.__version__,
        "cpu_threads": "n_jobs=None (1)",
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
    table.to_csv(out / "gpu_check.csv")
    (out / "gpu_check.json").write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    print(table.T.to_string())
    return table


if __name__ == "__main__":
    main()
