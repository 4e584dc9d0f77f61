"""Fit time of the default sampler on the shipped Baron data, against variants, in one run.

``python -m evaluation.fit_time --variants "autoencoder_class_balance=None" "n_jobs=2"``

Each variant is timed right after the defaults on the same machine, so the ratio
holds even when the machine is slower or faster than on another day. Values are read as
Python literals (``None``, ``0.5``), anything else as text (``confusable``); the short names
of the benchmark's method names (``kl=1``, ``aebalance=None``) work too.

``--baseline DIR`` also times the defaults of another version of the project, e.g. the code
before an issue (``git worktree add /tmp/before <commit>``), in a fresh process that imports
``scld_aug`` from ``DIR``, just before this version's defaults.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path


def parse(variant: str) -> dict:
    """``"kl_weight=1 autoencoder_class_balance=None"`` -> sampler parameters (the method
    names of the benchmark, :func:`scld_aug.benchmark.protocols.variant_params`)."""
    from scld_aug.benchmark.protocols import variant_params

    try:
        return variant_params("SCLD " + variant)
    except ValueError as err:
        raise SystemExit(str(err)) from None


BASELINE_FIT = """
import sys, time, warnings, pathlib, scipy.sparse as sp, scld_aug
if not pathlib.Path(scld_aug.__file__).resolve().is_relative_to(sys.argv[1]):
    sys.exit(f"scld_aug was imported from {scld_aug.__file__}, not from {sys.argv[1]}")
from scld_aug import SCLDSampler, datasets
warnings.simplefilter("ignore")
adata = datasets.baron_pancreas()
X, y = sp.csr_matrix(adata.X), adata.obs["cell_type"].astype(str).to_numpy()
start = time.perf_counter()
SCLDSampler(random_state=0).fit(X, y)
print(time.perf_counter() - start)
"""


def time_checkout(checkout: str) -> float:
    """Seconds of the default fit of the ``scld_aug`` found in ``checkout``, in a fresh
    process (which refuses to time any other ``scld_aug``)."""
    import os
    import subprocess
    import sys

    root = str(Path(checkout).resolve())
    env = {**os.environ, "PYTHONPATH": root}
    # Run from the checkout: ``python -c`` puts the working directory first on sys.path.
    result = subprocess.run(
        [sys.executable, "-c", BASELINE_FIT, root],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
    )
    if result.returncode:
        raise SystemExit(f"--baseline {checkout}: {result.stderr.strip().splitlines()[-1]}")
    return float(result.stdout.split()[-1])


def commit_of(checkout: str) -> str:
    """``", commit abc1234"`` when ``checkout`` is a git work tree, else ``""``."""
    import subprocess

    result = subprocess.run(
        ["git", "-C", checkout, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return f", commit {result.stdout.strip()}" if result.returncode == 0 else ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.fit_time", description=__doc__)
    parser.add_argument("--variants", nargs="*", default=[])
    parser.add_argument("--output", default="evaluation/results/perf/fit_time.txt")
    parser.add_argument(
        "--baseline", help="a checkout of another version whose defaults are timed too"
    )
    args = parser.parse_args(argv)

    import scipy.sparse as sp
    import torch

    from scld_aug import SCLDSampler, datasets
    from scld_aug.threads import available_cpus

    adata = datasets.baron_pancreas()
    X, y = sp.csr_matrix(adata.X), adata.obs["cell_type"].astype(str).to_numpy()
    lines = [
        f"machine: {platform.machine()}, {available_cpus()} CPUs, torch {torch.__version__}; "
        "defaults: n_jobs=None (1 thread)",
        f"data: Baron pancreas {X.shape[0]} cells x {X.shape[1]} genes; random_state=0",
    ]
    print(*lines, sep="\n", flush=True)
    seconds = {}
    if args.baseline:
        baseline = time_checkout(args.baseline)
        line = (
            f"baseline ({args.baseline}{commit_of(args.baseline)}) defaults: fit {baseline:.1f} s"
        )
        print(line, flush=True)
        lines.append(line)
    for name in ["defaults", *args.variants]:
        params = {} if name == "defaults" else parse(name)
        start = time.perf_counter()
        SCLDSampler(random_state=0, **params).fit(X, y)
        seconds[name] = time.perf_counter() - start
        line = f"{name}: fit {seconds[name]:.1f} s = {seconds[name] / seconds['defaults']:.2f}x defaults"
        print(line, flush=True)
        lines.append(line)
    if args.baseline:
        line = f"defaults / baseline defaults: {seconds['defaults'] / baseline:.2f}x"
        print(line, flush=True)
        lines.append(line)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
