"""Augment an ``.h5ad`` file from the command line, end to end, on the shipped pancreas data.

What it does
    1. Writes the shipped Baron human pancreas data (donor 1: 1,937 cells x 20,125 genes,
       raw UMI counts, 14 cell types in ``obs["cell_type"]``) to
       ``OUTPUT_DIR/baron_pancreas.h5ad``.
    2. Runs the command line on it, exactly as you would in a shell::

           python -m scld_aug.apps.cli augment OUTPUT_DIR/baron_pancreas.h5ad \\
               OUTPUT_DIR/baron_pancreas_augmented.h5ad --labels-key cell_type --overwrite

       (``scld-aug augment ...`` is the same command). It trains SCLD on all cells and
       raises every rare type (under 2% of the cells, at least 3 cells) to the median type
       size.
    3. Reads the result back and checks it: the original cells come first, unchanged, and
       ``obs["is_synthetic"]`` marks the new ones.

How to run (from the repository root)::

    python recipes/augment_h5ad.py             # default model, ~2.5 minutes on 2 CPU cores
    python recipes/augment_h5ad.py --smoke     # tiny model, ~10 seconds

What it prints
    The command it runs; the command's own output (the types it augments and a table of
    cells per type before, synthetic and after); then, from the file read back, for every
    augmented type the number of real and synthetic cells and their median UMI count per
    cell (synthetic cells should have library sizes like the real cells of their type),
    and whether the original cells are unchanged.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def main(argv: list[str] | None = None) -> int:
    """Run the recipe; returns the exit status of the command line (0 on success)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", default="augment_h5ad_output", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny model (--quick), seconds")
    args = parser.parse_args(argv)

    import anndata

    from scld_aug import datasets

    start = time.perf_counter()
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    source, augmented_path = out / "baron_pancreas.h5ad", out / "baron_pancreas_augmented.h5ad"
    adata = datasets.baron_pancreas()
    adata.write_h5ad(source)
    print(f"Wrote the shipped Baron pancreas data to {source} ({adata.n_obs} cells)")

    command = [
        sys.executable,
        "-m",
        "scld_aug.apps.cli",
        "augment",
        str(source),
        str(augmented_path),
        "--labels-key",
        "cell_type",
        "--seed",
        str(args.seed),
        "--overwrite",  # the recipe rewrites its own output on every run
    ] + (["--quick"] if args.smoke else [])
    print("$ " + " ".join(["python"] + command[1:]), flush=True)
    status = subprocess.run(command, check=False).returncode
    if status != 0:
        print(f"scld-aug augment failed with exit status {status}", file=sys.stderr)
        return status

    augmented = anndata.read_h5ad(augmented_path)
    synthetic = augmented.obs["is_synthetic"].to_numpy()
    labels = augmented.obs["cell_type"].astype(str).to_numpy()
    umi = np.asarray(augmented.X.sum(axis=1)).ravel()
    rows = {}
    for cell_type in pd.unique(labels[synthetic]):
        real, fake = (labels == cell_type) & ~synthetic, (labels == cell_type) & synthetic
        rows[cell_type] = {
            "real cells": int(real.sum()),
            "synthetic cells": int(fake.sum()),
            "median UMI real": int(np.median(umi[real])),
            "median UMI synthetic": int(np.median(umi[fake])),
        }
    table = pd.DataFrame.from_dict(rows, orient="index").sort_values("real cells", ascending=False)
    table.index.name = "cell_type"
    print(f'\nRead back {augmented_path}: {int(synthetic.sum())} cells with obs["is_synthetic"]')
    print(table.to_string())
    unchanged = (
        synthetic[: adata.n_obs].sum() == 0
        and (augmented.obs_names[: adata.n_obs] == adata.obs_names).all()
        and (augmented.X[: adata.n_obs] != adata.X).nnz == 0
    )
    print(f"Original {adata.n_obs} cells first and unchanged: {unchanged}")
    print(f"Total time {time.perf_counter() - start:.0f} s")
    return 0 if unchanged else 1


if __name__ == "__main__":
    raise SystemExit(main())
