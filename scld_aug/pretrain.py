"""Pretrain a generator once on a large dataset, then reuse it in any number of samplers.

:func:`pretrain` trains on an AnnData object or an ``.h5ad`` file, optionally streamed from
disk (``backed=True``: the matrix is never loaded whole), on one process or on several
launched by ``torchrun`` (PyTorch DDP: one process per GPU, or gloo processes on CPUs).
The result is an :class:`~scld_aug.SCLDGenerator`; pass it (or its saved file) as
``SCLDSampler(generator=...)`` to augment data in Pipelines without training again::

    scld-aug train atlas.h5ad atlas.pt --labels-key cell_type --backed
    torchrun --nproc_per_node 4 -m scld_aug train atlas.h5ad atlas.pt --labels-key cell_type
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from scld_aug import anndata_io, params
from scld_aug import data as data_layer
from scld_aug.distributed import device_for, launched_world, process_group
from scld_aug.files import check_output_path
from scld_aug.generator import SCLDGenerator
from scld_aug.threads import torch_threads
from scld_aug.train import train_generator

TRAINING_OPTIONS = params.names("training", public=None)


def _validate_options(training: dict) -> None:
    """The constraints of the parameter table (:mod:`scld_aug.params`)."""
    from sklearn.utils._param_validation import validate_parameter_constraints

    validate_parameter_constraints(
        {k: params.BY_NAME[k].constraints for k in training}, training, caller_name="pretrain"
    )


def _in_memory(data: Any, labels_key: str, layer: str | None):
    adata = data if not isinstance(data, (str, os.PathLike)) else anndata_io.read(data)
    matrix, labels = anndata_io.arrays(adata, labels_key, layer, load_backed=False)
    return matrix, labels, adata.var_names


def pretrain(
    data: Any,
    labels_key: str = "cell_type",
    *,
    layer: str | None = None,
    backed: bool = False,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    include_anchors: bool = True,
    random_state: int = 0,
    device: str = "auto",
    n_jobs: int | None = None,
    verbose: bool = False,
    torch_compile: bool = False,
    **training: Any,
) -> SCLDGenerator:
    """Train an SCLD generator on an AnnData object or ``.h5ad`` file.

    Parameters
    ----------
    data : anndata.AnnData, str or path-like
        Cells x genes with cell types in ``obs[labels_key]``. A path is streamed from disk
        (``backed=True``) or loaded; an AnnData opened with ``backed="r"`` is streamed too.
    labels_key : str, default="cell_type"
        Column of ``obs`` with the cell types.
    layer : str or None, default=None
        Layer with the expression to model (e.g. ``"counts"``); ``None`` uses ``X``.
    backed : bool, default=False
        Stream the matrix (``X`` or the layer) of a path from disk: row blocks for the
        statistics, minibatches for the networks. Memory then stays flat in the number of
        cells (per-cell vectors aside); steps are slower than from memory because every
        minibatch is read from disk. The on-disk matrix must be CSR (or dense).
    out : str, path-like or None
        Where to save the generator (atomically; under ``torchrun`` by rank 0 only). Checked
        before training: it must not be the input file, a directory, or an existing file
        (unless ``overwrite``), and its folder must be writable.
    overwrite : bool, default=False
        Replace an existing ``out``.
    include_anchors : bool, default=True
        Save the per-cell data of the training cells (see :meth:`scld_aug.SCLDGenerator.save`);
        ``False`` before sharing the file.
    random_state : int, default=0
        Seed. One process with the same seed and parameters as ``SCLDSampler`` trains the
        same generator as ``SCLDSampler.fit``.
    device : str, default="auto"
        ``"auto"``: cuda, then mps, then cpu. Under ``torchrun`` each process takes the GPU
        of its ``LOCAL_RANK``.
    n_jobs : int or None, default=None
        CPU threads while training (None: 1; -1: all CPUs), as ``SCLDSampler``'s; under
        ``torchrun``, per process.
    verbose : bool, default=False
        Progress bars (rank 0 only).
    torch_compile : bool, default=False
        Train through ``torch.compile`` (see ``SCLDSampler``).
    **training
        :class:`~scld_aug.params.TrainingConfig` fields (``likelihood``, ``n_top_genes``,
        ``autoencoder_steps``, ``batch_size``, ``mixed_precision``, ...), defaults as in
        ``SCLDSampler``. Under DDP ``batch_size`` is per process: N processes see N times
        the cells per step.

    Returns
    -------
    SCLDGenerator
        On every process (identical weights).

    Examples
    --------
    >>> import anndata, numpy as np, pandas as pd
    >>> from scld_aug.pretrain import pretrain
    >>> X = np.random.default_rng(0).poisson(2.0, size=(60, 30)).astype(np.float32)
    >>> obs = pd.DataFrame({"cell_type": ["a"] * 50 + ["b"] * 10}, index=map(str, range(60)))
    >>> adata = anndata.AnnData(X, obs=obs)
    >>> generator = pretrain(adata, autoencoder_steps=20, diffusion_steps=20,
    ...                      classifier_steps=10, out="pretrained.pt")
    >>> generator.classes.tolist(), generator.n_genes
    (['a', 'b'], 30)
    """
    unknown = sorted(set(training) - set(TRAINING_OPTIONS))
    if unknown:
        raise TypeError(f"Unknown training option(s) {unknown}; known: {list(TRAINING_OPTIONS)}.")
    _validate_options(training)
    _validate_options({"n_jobs": n_jobs})
    if out is not None:
        inputs = [data] if isinstance(data, (str, os.PathLike)) else []
        if getattr(data, "filename", None) is not None:  # AnnData opened from a file
            inputs.append(data.filename)
        check_output_path(out, inputs=inputs, overwrite=overwrite, what="output")
    handle = None
    if isinstance(data, (str, os.PathLike)):
        if not Path(data).exists():
            raise FileNotFoundError(f"No such .h5ad file: {data}")
        if backed:
            handle, matrix, labels, var_names = anndata_io.open_on_disk(
                Path(data), labels_key, layer
            )
    if handle is None:
        matrix, labels, var_names = _in_memory(data, labels_key, layer)
    try:
        with torch_threads(n_jobs):
            return _pretrain(
                matrix,
                labels,
                var_names,
                out=out,
                overwrite=overwrite,
                include_anchors=include_anchors,
                random_state=random_state,
                device=device,
                verbose=verbose,
                compile_=torch_compile,
                training=training,
            )
    finally:
        if handle is not None:
            handle.close()


def _pretrain(
    matrix,
    labels,
    var_names,
    *,
    out,
    overwrite,
    include_anchors,
    random_state,
    device,
    verbose,
    compile_,
    training,
):
    if len(labels) < 2:
        raise ValueError(f"Need at least 2 cells to train, got {len(labels)}.")
    rows = data_layer.cell_rows(matrix)
    # As in SCLDSampler: counts are detected, anything else gets the Gaussian decoder.
    config = params.TrainingConfig(**training)
    # Counts are judged on the values as stored (rows on disk are read as they are).
    given = rows if rows.backed else matrix
    likelihood = data_layer.resolve_likelihood(rows, config.likelihood, given=given)
    config = replace(config, likelihood=likelihood)
    world = launched_world()
    device_ = device_for(world, device)
    with process_group(world, device_):
        generator = train_generator(
            rows,
            labels,
            config,
            random_state,
            device_,
            gene_names=var_names,
            verbose=verbose,
            compile_networks=compile_,
            world=world,
        )
        if out is not None and world.is_main:
            generator._write(out, include_anchors, overwrite)  # path checked first
        world.barrier()  # no process returns before the file is complete
    return generator
