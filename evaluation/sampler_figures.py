"""Figures of the core sampler on the shipped Baron data, with default parameters.

Prints fit time, sampling throughput, and per cell type the share of synthetic cells a
classifier trained on real cells assigns to their intended type (conditional accuracy).

    python -m evaluation.sampler_figures [--cells-per-type 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression

from scld_aug import SCLDSampler, datasets
from scld_aug.preprocessing import log_normalize


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells-per-type", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    adata = datasets.baron_pancreas()
    X, y = adata.X, adata.obs["cell_type"].astype(str).to_numpy()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, default n_jobs (1 torch thread)"
    )
    print(f"data: Baron pancreas {X.shape[0]} cells x {X.shape[1]} genes")

    sampler = SCLDSampler(random_state=args.seed)
    start = time.perf_counter()
    sampler.fit(X, y)
    fit_s = time.perf_counter() - start
    print(f"fit (defaults, {sampler.device_}): {fit_s:.1f} s")

    reference = LogisticRegression(max_iter=2000).fit(log_normalize(X), y)
    types = [
        t for t in pd.Series(y).value_counts().index if (y == t).sum() >= sampler.min_class_size
    ]
    rows, total_cells, total_s = [], 0, 0.0
    for cell_type in types:
        start = time.perf_counter()
        synthetic = sampler.generate(args.cells_per_type, cell_type)
        total_s += time.perf_counter() - start
        total_cells += synthetic.shape[0]
        predicted = reference.predict(log_normalize(synthetic))
        real = X[y == cell_type]
        rows.append(
            {
                "cell_type": cell_type,
                "real_cells": real.shape[0],
                "recognised": float(np.mean(predicted == cell_type)),
                "median_umi_real": float(np.median(np.asarray(real.sum(1)))),
                "median_umi_synthetic": float(np.median(np.asarray(synthetic.sum(1)))),
                "nonzero_real": real.nnz / np.prod(real.shape),
                "nonzero_synthetic": sp.csr_matrix(synthetic).nnz / np.prod(synthetic.shape),
            }
        )
    table = pd.DataFrame(rows).set_index("cell_type")
    print(
        f"sampling: {total_cells} cells in {total_s:.1f} s = {total_cells / total_s:.0f} cells/s "
        f"({sampler.n_sampling_steps} {sampler.solver} steps, guidance {sampler.guidance_scale}, all {X.shape[1]} genes, counts)"
    )
    print("conditional accuracy (LogisticRegression trained on real cells):")
    print(table.round(3).to_string())
    print(
        f"mean recognised: {table['recognised'].mean():.3f}, min: {table['recognised'].min():.3f}"
    )
    return table


if __name__ == "__main__":
    main()
