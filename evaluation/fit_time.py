"""Fit time of the default sampler, per phase, on Baron and the benchmark panel, against
another version of the project, in one run.

``python -m evaluation.fit_time [--baseline DIR] [--datasets NAME ...] [--variants ...]``

Every fit runs in a fresh process with one torch thread (the default ``n_jobs``), one after
the other, so that both versions meet the same machine; the ratios hold even when the
machine is slower or faster than on another day. ``--baseline DIR`` times the defaults of
another version too (a checkout, e.g. ``git worktree add /tmp/before <commit>``), right
before this version's on each dataset.

Phases, read from the training log of each fit: the autoencoder, the diffusion model and
the latent classifier, their optimizer steps, and ``other``: the rest of the fit (data
preparation and everything outside the three training loops). A fit trains one generator
(``trainings`` is 1); a ``--baseline`` version that trained more than one per fit has its
phases summed over its trainings and counted in ``trainings``.

Datasets: ``baron`` is the shipped Baron pancreas data, whole (what the README quotes); the
panel's datasets are fitted on the training rows of their natural-protocol split, seed 0
(the cells a panel fit sees). Variants (``--variants "kl_weight=0"``) are timed after the
defaults on Baron, in the benchmark's method-name syntax.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("autoencoder", "diffusion", "classifier")

# Runs in a fresh process that imports ``scld_aug`` from argv[1]; fits the defaults (with
# the parameters in argv[3], JSON) on the cells in argv[2] and prints one JSON line.
FIT = r"""
import json, logging, re, sys, time, warnings, pathlib
import numpy as np, scipy.sparse as sp, scld_aug
if not pathlib.Path(scld_aug.__file__).resolve().is_relative_to(sys.argv[1]):
    sys.exit(f"scld_aug was imported from {scld_aug.__file__}, not from {sys.argv[1]}")
from scld_aug import SCLDSampler
warnings.simplefilter("ignore")
data = np.load(sys.argv[2], allow_pickle=False)
X = sp.csr_matrix((data["data"], data["indices"], data["indptr"]), shape=tuple(data["shape"]))
y = data["y"]
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
logger = logging.getLogger("scld_aug")
logger.addHandler(Keep()); logger.setLevel(logging.INFO); logger.propagate = False
start = time.perf_counter()
sampler = SCLDSampler(random_state=0, **json.loads(sys.argv[3])).fit(X, y)
total = time.perf_counter() - start
phases = {}
for message in records:
    found = re.match(r"\s*(\w+): (\d+) steps in ([\d.]+) s", message)
    if found:
        name, steps, seconds = found.group(1), int(found.group(2)), float(found.group(3))
        old = phases.get(name, [0, 0.0, 0])
        phases[name] = [old[0] + steps, old[1] + seconds, old[2] + 1]
kl = sampler.generator_.config.get("kl_weight")
print(json.dumps({"total": total, "phases": phases, "kl_weight": kl}))
"""


def parse(variant: str) -> dict:
    """``"kl_weight=1 autoencoder_class_balance=None"`` -> sampler parameters (the method
    names of the benchmark, :func:`scld_aug.benchmark.protocols.variant_params`)."""
    from scld_aug.benchmark.protocols import variant_params

    try:
        return variant_params("SCLD " + variant)
    except ValueError as err:
        raise SystemExit(str(err)) from None


def _training_cells(dataset: str) -> tuple:
    """Raw counts (CSR) and labels a default fit of ``dataset`` sees."""
    import scipy.sparse as sp

    if dataset == "baron":
        from scld_aug import datasets

        adata = datasets.baron_pancreas()
        return sp.csr_matrix(adata.X), adata.obs["cell_type"].astype(str).to_numpy()
    from evaluation.panel import Unit, load, split_of

    X, y = load(dataset)
    train, *_ = split_of(Unit(dataset, "natural", 0), y, 10)
    return X[train], y[train]


def save_cells(X, y, path: Path) -> None:
    X = X.tocsr()
    np.savez(
        path,
        data=X.data,
        indices=X.indices,
        indptr=X.indptr,
        shape=np.array(X.shape),
        y=np.asarray(y, dtype=str),
    )


def time_fit(checkout: Path, cells: Path, params: dict) -> dict:
    """Per-phase seconds and steps of one default fit by the ``scld_aug`` of ``checkout``."""
    root = str(checkout.resolve())
    env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", FIT, root, str(cells), json.dumps(params)],
        env=env,
        cwd=root,  # ``python -c`` puts the working directory first on sys.path
        capture_output=True,
        text=True,
    )
    if result.returncode:
        tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"fit with the scld_aug of {root} failed: {tail}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def row(version: str, dataset: str, shape: tuple, fit: dict) -> dict:
    phases = fit["phases"]
    out = {"dataset": dataset, "cells x genes": f"{shape[0]} x {shape[1]}", "version": version}
    trained = 0.0
    for name in PHASES:
        steps, seconds, _ = phases.get(name, [0, 0.0, 0])
        out[f"{name} s"] = seconds
        out[f"{name} steps"] = steps
        trained += seconds
    out["trainings"] = phases.get("autoencoder", [0, 0, 0])[2]
    out["other s"] = fit["total"] - trained
    out["fit s"] = fit["total"]
    out["kl_weight"] = fit["kl_weight"]
    return out


def commit_of(checkout: Path) -> str:
    result = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    )
    dirty = subprocess.run(
        ["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    )
    if result.returncode:
        return str(checkout)
    return result.stdout.strip() + (" + changes" if dirty.stdout.strip() else "")


def main(argv=None) -> int:
    from evaluation.panel import PANEL

    parser = argparse.ArgumentParser(prog="python -m evaluation.fit_time", description=__doc__)
    parser.add_argument(
        "--datasets", nargs="+", default=["baron", *PANEL], choices=["baron", *PANEL]
    )
    parser.add_argument("--baseline", help="a checkout of another version, timed first")
    parser.add_argument("--variants", nargs="*", default=[], help="timed on Baron")
    parser.add_argument("--output", default=str(ROOT / "evaluation/results/perf/fit_time"))
    args = parser.parse_args(argv)
    import torch

    from scld_aug.files import atomic_write
    from scld_aug.threads import available_cpus

    versions = {"this": ROOT}
    if args.baseline:
        versions = {"baseline": Path(args.baseline), **versions}
    names = {name: f"{name} ({commit_of(path)})" for name, path in versions.items()}
    header = (
        f"machine: {platform.machine()} ({platform.processor() or 'cpu'}), "
        f"{available_cpus()} CPUs available, torch {torch.__version__}, one torch thread; "
        + "; ".join(names.values())
    )
    print(header, flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            X, y = _training_cells(dataset)
            cells = Path(tmp) / f"{dataset}.npz"
            save_cells(X, y, cells)
            runs = [(v, {}) for v in versions]
            if dataset == "baron":
                runs += [(v, parse(v)) for v in args.variants]
            for version, params in runs:
                checkout = versions.get(version, ROOT)
                fit = time_fit(checkout, cells, params)
                label = names.get(version, f"this, {version}")
                rows.append(row(label, dataset, X.shape, fit))
                print(
                    f"  {dataset} {label}: fit {fit['total']:.1f} s "
                    + ", ".join(f"{k} {v[1]:.1f} s/{v[0]} steps" for k, v in fit["phases"].items()),
                    flush=True,
                )
    table = pd.DataFrame(rows)
    if args.baseline:
        base = table[table["version"] == names["baseline"]].set_index("dataset")["fit s"]
        table["speed-up"] = table["dataset"].map(base) / table["fit s"]
    text = f"# Fit time per phase\n\n{header}\n\n" + table.round(1).to_markdown(index=False) + "\n"
    print(text)
    out = Path(args.output)
    atomic_write(out.with_suffix(".md"), lambda p: p.write_text(text), overwrite=True)
    atomic_write(out.with_suffix(".csv"), lambda p: table.to_csv(p, index=False), overwrite=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
