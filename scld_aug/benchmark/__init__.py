"""Benchmark augmentation methods on labelled counts: does augmentation help a classifier
on rare cell types, and do the synthetic cells look like held-out real ones?

The protocols of the project's evaluation, runnable on any dataset with
``scld-aug benchmark IN.h5ad`` or :func:`run_benchmark`:

* ``scld_aug.benchmark.protocols``: splits, the natural-imbalance, rare-cell downsampling
  and fidelity protocols;
* ``scld_aug.benchmark.methods``: the compared samplers and the downstream pipelines;
* ``scld_aug.benchmark.report``: tables and plots from the saved results;
* ``scld_aug.benchmark.scvi_baseline``: scVI posterior sampling as an over-sampler
  (``pip install "scld-aug[scvi]"``);
* ``scld_aug.benchmark.run``: :func:`run_benchmark`, which runs and writes all of it.

The report needs tabulate and matplotlib (``pip install "scld-aug[benchmark]"``).
"""

from scld_aug.benchmark.run import (
    DEFAULT_METHODS,
    PROTOCOLS,
    BenchmarkError,
    rebuild_report,
    run_benchmark,
)

__all__ = ["DEFAULT_METHODS", "PROTOCOLS", "BenchmarkError", "rebuild_report", "run_benchmark"]
