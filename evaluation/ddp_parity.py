"""Does DDP training (``torchrun``, gloo on CPUs) reach the quality of one process?

On the shipped Baron data, with default training parameters, trains one generator in a
single process (``scld-aug train``) and one with ``torchrun --nproc_per_node N`` (each
process draws its own minibatches; DDP averages the gradients), then scores both the same
way: for every cell type with at least 3 cells, 200 synthetic cells are

* classified by a logistic regression trained on the real cells (share recognised as the
  intended type), and
* compared with the real cells of the type by MMD in a PCA embedding fitted on real cells.

    python -m evaluation.ddp_parity [--nproc 2] [--threads 1] [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _train(h5ad: Path, out: Path, nproc: int, threads: int, quick: bool) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    launcher = [sys.executable, "-m", "scld_aug"]
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launcher += [f"--nproc_per_node={nproc}", "-m", "scld_aug"]
    start = time.perf_counter()
    subprocess.run(
        launcher
        + ["train", str(h5ad), str(out), "--device=cpu", f"--n-jobs={threads}", "--quiet"]
        + ["--overwrite"]
        + (["--quick"] if quick else []),
        check=True,
        env=env,
    )
    return time.perf_counter() - start


def score(generator, X, y, reference, embedding, n: int = 200) -> pd.DataFrame:
    """Recognition by a real-data classifier and MMD to real cells, per cell type."""
    from scld_aug import SCLDSampler
    from scld_aug.metrics import mmd_rbf
    from scld_aug.preprocessing import log_normalize

    sampler = SCLDSampler(generator=generator, random_state=0).fit(X, y)
    rows = []
    for cell_type in sorted(set(y)):
        real = np.flatnonzero(y == cell_type)
        if len(real) < 3:
            continue
        cells = sampler.generate(n, cell_type)
        rows.append(
            {
                "cell_type": cell_type,
                "real_cells": len(real),
                "recognised": float(np.mean(reference.predict(log_normalize(cells)) == cell_type)),
                "mmd": mmd_rbf(embedding.transform(X[real]), embedding.transform(cells)),
            }
        )
    return pd.DataFrame(rows).set_index("cell_type")


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--out", default="evaluation/results/ddp_parity")
    parser.add_argument("--quick", action="store_true", help="tiny model: checks the script only")
    args = parser.parse_args(argv)
    from sklearn.linear_model import LogisticRegression

    from scld_aug import SCLDGenerator, datasets
    from scld_aug.metrics import ReferenceEmbedding
    from scld_aug.preprocessing import log_normalize

    adata = datasets.baron_pancreas()
    X, y = adata.X, adata.obs["cell_type"].astype(str).to_numpy()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results, seconds = {}, {}
    reference = LogisticRegression(max_iter=2000).fit(log_normalize(X), y)
    embedding = ReferenceEmbedding().fit(X)
    with tempfile.TemporaryDirectory() as tmp:
        h5ad = Path(tmp) / "baron.h5ad"
        adata.write_h5ad(h5ad)
        for name, nproc, threads in (
            ("1 process", 1, args.threads * args.nproc),
            (f"DDP, {args.nproc} processes", args.nproc, args.threads),
        ):
            path = Path(tmp) / f"{nproc}.pt"
            seconds[name] = _train(h5ad, path, nproc, threads, args.quick)
            results[name] = score(SCLDGenerator.load(path), X, y, reference, embedding)
            print(f"{name}: trained in {seconds[name]:.0f} s", flush=True)
    table = pd.concat(results, axis=1)
    table.to_csv(out / "per_type.csv")
    summary = pd.DataFrame(
        {
            name: {
                "train_s (incl. start-up)": seconds[name],
                "mean_recognised": part["recognised"].mean(),
                "min_recognised": part["recognised"].min(),
                "mean_mmd": part["mmd"].mean(),
                "max_mmd": part["mmd"].max(),
            }
            for name, part in results.items()
        }
    ).T
    summary.to_csv(out / "summary.csv")
    (out / "summary.json").write_text(json.dumps(summary.to_dict(orient="index"), indent=1))
    print(table.round(3).to_string())
    print(summary.round(3).to_string())
    return summary


if __name__ == "__main__":
    main()
