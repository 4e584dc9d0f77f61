"""Augment the rare cell types of an ``.h5ad`` file: the library behind ``scld-aug augment``.

:func:`augment_h5ad` reads an AnnData file, checks everything that can be checked before
training (paths, labels, layer, count data, which types to augment), trains
:class:`~scld_aug.SCLDSampler` on all cells, and writes the original cells followed by the
synthetic ones (``obs["is_synthetic"]``) to a new ``.h5ad`` atomically: the output appears
complete or not at all.

Examples
--------
>>> from scld_aug.apps.augment import augment_h5ad
>>> summary = augment_h5ad("pancreas.h5ad", "pancreas_aug.h5ad", labels_key="cell_type",
...                        layer="counts")  # doctest: +SKIP
>>> summary.loc["mast"].tolist()  # doctest: +SKIP
[8, 73, 81]
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from scld_aug import anndata_io
from scld_aug import data as data_layer
from scld_aug.files import OutputConflictError, OutputPathError, check_output_path, same_file
from scld_aug.presets import MIN_CELLS, RARE_FRACTION, rare_strategy

logger = logging.getLogger(__name__)

__all__ = ["AugmentError", "augment", "augment_h5ad", "plan_augmentation"]


class AugmentError(ValueError):
    """A problem with the input file or the options; the message says how to fix it.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array(["beta"] * 300 + ["mast"] * 5)
    >>> try:
    ...     plan_augmentation(y, cell_types=["schwann"])
    ... except AugmentError as err:
    ...     print(err)
    Unknown cell type(s) ['schwann']. Available types (cells): beta (300), mast (5).
    """


def _listing(counts: dict) -> str:
    return ", ".join(f"{label} ({n})" for label, n in sorted(counts.items(), key=lambda t: -t[1]))


def plan_augmentation(
    y: np.ndarray,
    cell_types: Iterable[str] | None = None,
    target: int | None = None,
    min_cells: int = MIN_CELLS,
    options: tuple[str, str] = ("--types", "--target"),
) -> dict:
    """Which cell types to augment and to how many cells, checked before any training.

    Parameters
    ----------
    y : ndarray of shape (n_cells,)
        Cell-type labels.
    cell_types : iterable of str or None, default=None
        Types to augment, matched to the labels as text. ``None`` picks the rare types:
        under 2% of the cells, at least ``min_cells`` cells and fewer than ``target``
        (the rule of :func:`scld_aug.presets.rare_strategy`).
    target : int or None, default=None
        Cells per augmented type after augmentation; ``None`` is the median type size.
    min_cells : int, default=3
        Fewest cells a type needs to be generated.
    options : tuple of str, default=("--types", "--target")
        How the caller names ``cell_types`` and ``target``, for the error messages.

    Returns
    -------
    strategy : dict
        ``{label: cells after augmentation}`` with labels as they appear in ``y``.

    Raises
    ------
    AugmentError
        For unknown types, types that are too small or already at the target, or when
        no type qualifies.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array(["beta"] * 300 + ["alpha"] * 100 + ["mast"] * 5 + ["t_cell"] * 2)
    >>> plan_augmentation(y)  # rare types (t_cell is too small) to the median type size
    {'mast': 52}
    >>> plan_augmentation(y, cell_types=["alpha", "mast"], target=150)
    {'alpha': 150, 'mast': 150}
    """
    types_option, target_option = options
    counts = Counter(np.asarray(y).tolist())
    if target is None:
        target = int(np.median(list(counts.values())))
    if target < 1:
        raise AugmentError(f"target must be a positive number of cells, got {target}.")
    if cell_types is None:
        strategy = {
            label: n for label, n in rare_strategy(y, target).items() if counts[label] >= min_cells
        }
        if not strategy:
            raise AugmentError(
                f"No rare cell type to augment: no type has under {RARE_FRACTION:.0%} of the "
                f"{len(y)} cells, at least {min_cells} cells and fewer than the target of "
                f"{target}. Name the types to augment with {types_option} (and the size to "
                f"reach with {target_option}). Types: {_listing(counts)}."
            )
        return strategy
    by_text = {str(label): label for label in counts}
    requested = list(dict.fromkeys(str(t) for t in cell_types))
    unknown = [t for t in requested if t not in by_text]
    if unknown:
        raise AugmentError(
            f"Unknown cell type(s) {unknown}. Available types (cells): {_listing(counts)}."
        )
    too_small = {t: counts[by_text[t]] for t in requested if counts[by_text[t]] < min_cells}
    if too_small:
        raise AugmentError(
            "Too few cells to learn from: "
            + ", ".join(f"{t!r} has {n}" for t, n in too_small.items())
            + f"; a type needs at least {min_cells} cells. Leave it out of {types_option}, or "
            "merge it with a related type in the labels first."
        )
    full = {t: counts[by_text[t]] for t in requested if counts[by_text[t]] >= target}
    if full:
        raise AugmentError(
            "Nothing to add: "
            + ", ".join(f"{t!r} already has {n} cells" for t, n in full.items())
            + f", at least the target of {target}. Raise {target_option} or leave "
            + ("it" if len(full) == 1 else "them")
            + f" out of {types_option}."
        )
    return {by_text[t]: target for t in requested}


def _check_paths(
    inputs: list, output_path: Path, save_sampler: Path | None, overwrite: bool
) -> None:
    input_path = inputs[0]
    if not input_path.is_file():
        where = "is a directory" if input_path.is_dir() else "does not exist"
        raise AugmentError(
            f"Input file {str(input_path)!r} {where}; pass the path of an .h5ad file."
        )
    outputs = {"output": output_path}
    if save_sampler is not None:
        outputs["--save-sampler"] = save_sampler
    try:
        for what, path in outputs.items():
            check_output_path(path, inputs=inputs, overwrite=overwrite, what=what)
    except OutputPathError as err:
        raise AugmentError(str(err)) from None
    if save_sampler is not None and same_file(save_sampler, output_path):
        raise AugmentError("--save-sampler and the output must be different files.")


def checked_input(
    input_path: str | os.PathLike,
    labels_key: str,
    layer: str | None,
    likelihood: str,
    counts_only: bool = False,
) -> tuple[Any, Any, np.ndarray]:
    """``(adata, X, y)`` of an ``.h5ad`` file, checked, with messages that name the
    command's options (:class:`AugmentError`). Values other than raw counts are refused
    unless ``likelihood`` is "gaussian" and not ``counts_only`` (the benchmark's pipelines
    normalize counts themselves)."""
    try:
        adata = anndata_io.read(input_path)
    except Exception as err:  # h5py and anndata raise many types for unreadable files
        raise AugmentError(
            f"Could not read {str(input_path)!r} as an .h5ad file ({type(err).__name__}: {err})."
        ) from err
    X, y = _checked_arrays(adata, labels_key, layer, likelihood, counts_only)
    return adata, X, y


def _checked_arrays(
    adata: Any, labels_key: str, layer: str | None, likelihood: str, counts_only: bool = False
):
    """Expression and labels, checked, with messages that name the command's options."""
    try:
        X, y = anndata_io.arrays(adata, labels_key, layer)
    except anndata_io.MissingLabelsKey as err:
        raise AugmentError(
            f"Labels key {labels_key!r} is not a column of obs; pass --labels-key with one of "
            f"{list(map(str, err.available))}."
        ) from None
    except anndata_io.MissingLabels as err:
        raise AugmentError(
            f"obs[{labels_key!r}] has {err.n_missing} cell(s) without a label; drop or label "
            "them first."
        ) from None
    except anndata_io.MissingLayer as err:
        raise AugmentError(
            f"Layer {layer!r} not found; "
            + (
                f"available layers: {err.available}."
                if err.available
                else "the file has no layers."
            )
            + " Leave out --layer to use X."
        ) from None
    except anndata_io.EmptyX as err:
        raise AugmentError(
            f"X is empty; pass --layer with the layer of raw counts ({err.layers})."
        ) from None
    where = "X" if layer is None else f"layer {layer!r}"
    bad = data_layer.first_non_count(X)
    if bad is not None and (counts_only or likelihood != "gaussian"):
        count_layers = [
            name
            for name, M in adata.layers.items()
            if name != layer and data_layer.first_non_count(M) is None
        ]
        raw_hint = anndata_io.raw_counts_hint(adata)
        if count_layers:
            hint = f"pass --layer {count_layers[0]} (layers with counts: {count_layers})"
        elif raw_hint:
            hint = f"{raw_hint} with --layer (scld-aug does not read .raw)"
        else:
            hint = "pass --layer with the layer of raw counts"
        alternative = (
            f", or pass --likelihood gaussian to model the values of {where} as they are"
            if not counts_only
            else ""
        )
        raise AugmentError(
            f"{data_layer.non_count_message(bad, where)}. SCLD models raw UMI counts; "
            f"{hint}{alternative}."
        )
    return X, y


def _check_result_writable(
    adata: Any,
    y: np.ndarray,
    labels_key: str,
    layer: str | None,
    strategy: dict,
    normalize_x: bool,
) -> None:
    """Build a small result of the same make (the first cells, one synthetic cell per type
    to augment, a record that names the types) and store it in memory, so that whatever
    ``.h5ad`` cannot hold fails before training, not after it."""
    n = min(adata.n_obs, 20)
    labels = np.asarray(list(strategy), dtype=y.dtype)
    X = sp.csr_matrix((n + len(labels), adata.n_vars), dtype=np.float32)
    record = {
        "version": "0",
        "labels_key": labels_key,
        "matrix": "X" if layer is None else f"layers/{layer}",
        "cell_types": anndata_io.type_table(
            {label: {"cells": 1, "n_synthetic": 1} for label in labels}
        ),
        "generator_source": "trained",
        "generator_id": "0",
        "params": "{}",
    }
    probe = anndata_io.augmented(
        adata[:n], X, np.concatenate([y[:n], labels]), labels_key, layer, record, normalize_x
    )
    try:
        anndata_io.check_writable(probe)
    except Exception as err:  # noqa: BLE001 - anndata and h5py raise many types
        raise AugmentError(
            f"The result could not be stored as .h5ad ({type(err).__name__}: {err}); nothing "
            "was trained. Check the input's obs, var and uns for entries an .h5ad file cannot "
            "hold."
        ) from err


def augment(
    adata: Any,
    labels_key: str = "cell_type",
    *,
    cell_types: Iterable[str] | None = None,
    target: int | None = None,
    layer: str | None = None,
    key_added: str = "is_synthetic",
    normalize_x: bool | None = None,
    random_state: int | None = 0,
    verbose: bool = False,
    **sampler_params: Any,
) -> Any:
    """Add synthetic cells of the rare (or the named) cell types to an AnnData.

    The function-style entry point for the AnnData you hold, with the defaults of
    ``scld-aug augment``: the types with under 2% of the cells (and at least
    ``min_class_size``) are raised to the median type size. It returns a new AnnData (rows
    are added, so it cannot work in place); ``adata`` is not modified.

    Synthetic cells are for training classifiers. Do not use the result for differential
    expression, marker genes, cell-type composition or trajectories: statistics over
    synthetic cells describe the model, not the biology.

    Parameters
    ----------
    adata : anndata.AnnData
        Cells x genes, raw counts in ``X`` or in ``layer``.
    labels_key : str, default="cell_type"
        Column of ``obs`` with the cell types.
    cell_types : iterable of str or None, default=None
        Types to augment; ``None`` picks the rare ones (:func:`plan_augmentation`).
    target : int or None, default=None
        Cells per augmented type afterwards; ``None`` is the median type size.
    layer : str or None, default=None
        Layer with the expression to model (e.g. ``"counts"``); ``None`` uses ``X``.
    key_added : str, default="is_synthetic"
        Boolean column of ``obs`` marking the synthetic cells (must be new).
    normalize_x : bool or None, default=None
        With ``layer``: fill ``X`` with the log-normalized augmented layer (``log1p`` of
        counts per 10,000), so that ``sc.pp.pca`` runs on the result as it is. ``None``
        does so whenever ``layer`` is given.
    random_state : int or None, default=0
        Seed for training and sampling.
    verbose : bool, default=False
        Progress bars.
    **sampler_params
        Other :class:`~scld_aug.SCLDSampler` parameters (``guidance_scale``, ``device``,
        ``diffusion_steps``...), but not ``sampling_strategy``: the types and sizes are
        ``cell_types`` and ``target`` here.

    Returns
    -------
    adata_res : anndata.AnnData
        The original cells, then the synthetic ones, marked by ``obs[key_added]``. What
        is kept and what is left out is that of
        :meth:`~scld_aug.SCLDSampler.fit_resample_anndata`: ``var`` and ``uns`` are kept,
        with ``uns["scld_aug"]`` recording the augmentation; the augmented matrix is where
        it was (``X`` or ``layers[layer]``); other layers, ``.raw``, ``obsm``, ``obsp`` and
        the ``uns`` results of the real cells (PCA, neighbours, UMAP) have no rows for the
        synthetic cells and are left out, with a warning naming the layers and ``.raw``.
        Synthetic cells' ``obs`` columns hold the value every real cell of their type
        shares (e.g. a coarser annotation), missing values where the type's cells differ
        (e.g. batch or donor).

    Raises
    ------
    AugmentError
        For unknown types, types too small or already at the target, or no rare type.
    ValueError
        For a ``key_added`` that is already a column, or ``sampling_strategy`` among the
        sampler parameters. Every error comes before training.

    Examples
    --------
    >>> import anndata, numpy as np, pandas as pd
    >>> import scld_aug
    >>> counts = np.random.default_rng(0).poisson(2.0, size=(405, 30)).astype(np.float32)
    >>> obs = pd.DataFrame({"cell_type": ["a"] * 250 + ["b"] * 150 + ["rare"] * 5},
    ...                    index=[f"cell-{i}" for i in range(405)])
    >>> adata = anndata.AnnData(X=None, obs=obs, layers={"counts": counts})
    >>> out = scld_aug.augment(adata, "cell_type", layer="counts", autoencoder_steps=20,
    ...                        diffusion_steps=20, classifier_steps=10, n_sampling_steps=5)
    >>> out.obs["cell_type"].value_counts()["rare"], int(out.obs["is_synthetic"].sum())
    (np.int64(150), 145)
    >>> out.X is not None  # log-normalized from the layer, ready for sc.pp.pca
    True
    """
    import warnings

    from scld_aug import SCLDSampler

    if "sampling_strategy" in sampler_params:
        raise ValueError(
            "augment() chooses the types to augment with cell_types= and their size with "
            "target=; for imbalanced-learn's sampling_strategy use "
            "SCLDSampler(sampling_strategy=...).fit_resample_anndata(adata)."
        )
    sampler = SCLDSampler(random_state=random_state, verbose=verbose, **sampler_params)
    sampler._validate_params()  # bad parameters fail before anything else
    y = anndata_io.labels(adata.obs, labels_key)
    min_cells = sampler.min_class_size
    strategy = plan_augmentation(y, cell_types, target, min_cells, ("cell_types", "target"))
    if normalize_x is None:
        normalize_x = layer is not None
    dropped = [name for name in adata.layers if name != layer]
    if dropped:
        warnings.warn(
            f"Layers {dropped} are not carried over to the result: they have no rows for the "
            "synthetic cells. Keep them from the input for the real cells where you need them.",
            UserWarning,
            stacklevel=2,
        )
    sampler.set_params(sampling_strategy=strategy)
    return sampler.fit_resample_anndata(
        adata, labels_key=labels_key, layer=layer, normalize_x=normalize_x, key_added=key_added
    )


def augment_h5ad(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    labels_key: str = "cell_type",
    layer: str | None = None,
    cell_types: Iterable[str] | None = None,
    target: int | None = None,
    random_state: int | None = 0,
    overwrite: bool = False,
    save_sampler: str | os.PathLike | None = None,
    include_anchors: bool = True,
    normalize_x: bool = False,
    verbose: bool = False,
    **sampler_params: Any,
) -> pd.DataFrame:
    """Augment cell types of an ``.h5ad`` file with SCLD and write the result.

    Everything that can fail on the input is checked before training. The output holds
    the original cells (unchanged, with their ``obs``) followed by the synthetic cells,
    marked by ``obs["is_synthetic"]``; ``var`` and ``uns`` are kept, while other layers,
    ``obsm``, ``obsp`` and the ``uns`` results of the original cells (PCA, neighbours,
    UMAP...) are left out (they do not cover the synthetic cells);
    ``uns["scld_aug"]`` records the augmentation (see
    :meth:`~scld_aug.SCLDSampler.fit_resample_anndata`). With ``layer``, the augmented
    matrix is in that layer and ``X`` is empty, or log-normalized with ``normalize_x``.

    Parameters
    ----------
    input_path, output_path : str or path-like
        The ``.h5ad`` to read and the one to write (different files; missing folders are
        created). The output is written to a temporary file next to it and renamed, so an
        error never leaves a partial file.
    labels_key : str, default="cell_type"
        Column of ``obs`` with the cell types.
    layer : str or None, default=None
        Layer with raw counts (e.g. ``"counts"``); ``None`` uses ``X``.
    cell_types : iterable of str or None, default=None
        Types to augment; ``None`` picks the rare ones (see :func:`plan_augmentation`).
    target : int or None, default=None
        Cells per augmented type afterwards; ``None`` is the median type size.
    random_state : int or None, default=0
        Seed for training and sampling.
    overwrite : bool, default=False
        Replace existing output files.
    save_sampler : str, path-like or None, default=None
        Also save the fitted sampler there (:meth:`~scld_aug.SCLDSampler.save`).
    include_anchors : bool, default=True
        Whether the saved sampler keeps what its generator stores per training cell
        (see :meth:`~scld_aug.SCLDGenerator.save`); ``False`` before sharing it.
    normalize_x : bool, default=False
        With ``layer``: ``X`` of the output is the log-normalized layer (``log1p`` of
        counts scaled to 10,000 per cell), ready for PCA and UMAP.
    verbose : bool, default=False
        Progress bars for training and sampling. What is read, planned and written goes
        to the ``scld_aug`` logger at INFO level (the command line shows it).
    **sampler_params
        Other :class:`~scld_aug.SCLDSampler` parameters (``device``, ``guidance_scale``,
        ``diffusion_steps``...). Non-count data is refused unless
        ``likelihood="gaussian"`` is passed.

    Returns
    -------
    summary : pandas.DataFrame
        One row per cell type (largest first) with columns ``before``, ``synthetic`` and
        ``after``.

    Raises
    ------
    AugmentError
        For problems with the paths, the file or the options, before any training.
    sklearn.utils._param_validation.InvalidParameterError
        For an invalid sampler parameter (e.g. ``guidance_scale=inf``), before the input
        is read.
    ValueError
        When the requested cells cannot fit in memory, before any training.

    Examples
    --------
    >>> import anndata, numpy as np, pandas as pd
    >>> X = np.random.default_rng(0).poisson(2.0, size=(203, 30)).astype(np.float32)
    >>> obs = pd.DataFrame({"cell_type": ["common"] * 200 + ["rare"] * 3},
    ...                    index=[f"cell-{i}" for i in range(203)])
    >>> anndata.AnnData(X, obs=obs).write_h5ad("cells.h5ad")
    >>> summary = augment_h5ad("cells.h5ad", "augmented.h5ad", labels_key="cell_type",
    ...                        autoencoder_steps=20, diffusion_steps=20,
    ...                        classifier_steps=10, n_sampling_steps=5)
    >>> summary.loc["rare"].tolist()  # before, synthetic, after (the median type size)
    [3, 98, 101]
    >>> int(anndata.read_h5ad("augmented.h5ad").obs["is_synthetic"].sum())
    98
    """

    from scld_aug import SCLDSampler
    from scld_aug._random import resolve_device

    say = logger.info
    input_path, output_path = Path(input_path), Path(output_path)
    save_path = None if save_sampler is None else Path(save_sampler)
    pretrained = sampler_params.get("generator")
    inputs = [input_path] + ([pretrained] if isinstance(pretrained, (str, os.PathLike)) else [])
    _check_paths(inputs, output_path, save_path, overwrite)
    sampler = SCLDSampler(random_state=random_state, verbose=verbose, **sampler_params)
    sampler._validate_params()  # bad options fail before the input is even read
    requested_device = sampler_params.get("device", "auto")
    try:
        device = resolve_device(requested_device)
    except (ValueError, RuntimeError) as err:
        raise AugmentError(
            f"Device {requested_device!r} is not available on this machine; pass --device auto "
            "(a GPU when there is one, else the CPU) or --device cpu."
        ) from err

    likelihood = sampler_params.get("likelihood", "auto")
    adata, _, y = checked_input(input_path, labels_key, layer, likelihood)
    min_cells = sampler_params.get("min_class_size", MIN_CELLS)
    strategy = plan_augmentation(y, cell_types, target, min_cells)
    counts = Counter(y.tolist())
    say(
        f"Read {input_path}: {adata.n_obs} cells x {adata.n_vars} genes, {len(counts)} cell "
        f"types in obs[{labels_key!r}], expression from " + (f"layer {layer!r}" if layer else "X")
    )
    if cell_types is None:
        skipped = {t: n for t, n in counts.items() if n < RARE_FRACTION * len(y) and n < min_cells}
        if skipped:
            say(f"Too few cells to augment (< {min_cells}), left as they are: {_listing(skipped)}")
    say(
        "Augmenting "
        + ", ".join(
            f"{label} ({counts[label]} -> {n})"
            for label, n in sorted(strategy.items(), key=lambda t: -counts[t[0]])
        )
        + f"; training SCLD on {device}"
    )

    _check_result_writable(adata, y, labels_key, layer, strategy, normalize_x)

    sampler.set_params(sampling_strategy=strategy)
    start = time.perf_counter()
    result = sampler.fit_resample_anndata(
        adata, labels_key=labels_key, layer=layer, normalize_x=normalize_x
    )
    say(f"Trained and sampled in {time.perf_counter() - start:.1f} s")

    # Each output is written even when the other fails: a finished result is never lost.
    problems = []
    try:
        anndata_io.write(result, output_path, overwrite=overwrite)
    except OutputConflictError as err:
        problems.append(str(err))
    except OSError as err:
        problems.append(
            f"Could not write {str(output_path)!r} ({err}); no partial file was left. Check "
            "the folder's permissions and free disk space."
        )
    if save_path is not None:
        try:
            sampler._write(save_path, include_anchors, overwrite)  # path checked first
        except OutputConflictError as err:
            problems.append(str(err))
        except (OSError, OutputPathError) as err:
            problems.append(f"Could not save the sampler to {str(save_path)!r} ({err}).")
    if problems:
        raise AugmentError(" ".join(problems))

    after = Counter(result.obs[labels_key].astype(str))
    summary = pd.DataFrame(
        {
            "before": [counts[label] for label in counts],
            "after": [after[str(label)] for label in counts],
        },
        index=pd.Index([str(label) for label in counts], name=labels_key),
    )
    summary.insert(1, "synthetic", summary["after"] - summary["before"])
    return summary.sort_values(["before", "synthetic"], ascending=False)
