"""AnnData and ``.h5ad`` files: the one module that reads, checks and writes them.

The sampler (:meth:`~scld_aug.SCLDSampler.fit_resample_anndata`), pretraining (in memory
or streamed from disk) and the command line read expression and labels through
:func:`expression` and :func:`labels`, open files with :func:`read` or :func:`open_on_disk`,
and build and write results with :func:`augmented` and :func:`write`. Problems with the
AnnData are :class:`AnnDataInputError` subclasses that carry what was asked and what is
available, so that each caller can word the fix in its own terms (``labels_key=`` in
Python, ``--labels-key`` on the command line).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from scld_aug.files import atomic_write


class AnnDataInputError(Exception):
    """The AnnData does not have what was asked for."""


class MissingLabelsKey(AnnDataInputError, KeyError):
    """``labels_key`` is not a column of ``obs``."""

    def __init__(self, key: str, available: list) -> None:
        self.key, self.available = key, list(available)
        super().__init__(
            f"labels_key={key!r} is not a column of adata.obs; available columns: {self.available}."
        )

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class MissingLayer(AnnDataInputError, KeyError):
    """``layer`` is not one of the AnnData's layers."""

    def __init__(self, layer: str, available: list, where: str = "") -> None:
        self.layer, self.available = layer, list(available)
        super().__init__(f"layer={layer!r} not found{where}; available layers: {self.available}.")

    def __str__(self) -> str:
        return str(self.args[0])


class EmptyX(AnnDataInputError, ValueError):
    """``X`` is empty and no layer was named."""

    def __init__(self, layers: list, where: str = "adata") -> None:
        self.layers = list(layers)
        super().__init__(
            f"{where}.X is empty; pass layer= to name the layer holding expression "
            f"(layers: {self.layers})."
        )


class MissingLabels(AnnDataInputError, ValueError):
    """Some cells have no label."""

    def __init__(self, key: str, n_missing: int) -> None:
        self.key, self.n_missing = key, n_missing
        super().__init__(
            f"adata.obs[{key!r}] has {n_missing} missing labels; drop or label those cells first."
        )


def _anndata():
    try:
        import anndata
    except ImportError as err:  # pragma: no cover - anndata is a core dependency
        raise ImportError(
            "AnnData support needs the 'anndata' package: pip install anndata"
        ) from err
    return anndata


def read(path: str | os.PathLike) -> Any:
    """The AnnData of an ``.h5ad`` file, in memory."""
    return _anndata().read_h5ad(path)


def labels(obs: pd.DataFrame, labels_key: str) -> np.ndarray:
    """Cell-type labels from an ``obs`` table, checked (present, no missing values).

    The labels keep their own values (for categoricals, their categories' values), so a
    dict ``sampling_strategy`` names classes as they are, e.g. ``{1: 30}`` for integers.
    """
    if labels_key not in obs:
        raise MissingLabelsKey(labels_key, obs.columns)
    column = obs[labels_key]
    if column.isna().any():
        raise MissingLabels(labels_key, int(column.isna().sum()))
    return np.asarray(column)


def expression(adata: Any, layer: str | None, load_backed: bool = True) -> Any:
    """The expression matrix (``X`` or ``layers[layer]``), checked, not copied.

    The matrix of a backed AnnData is read into memory unless ``load_backed=False``, which
    returns the on-disk dataset for ``scld_aug.data.cell_rows`` to stream.
    """
    anndata = _anndata()
    if not isinstance(adata, anndata.AnnData):
        raise TypeError(f"Expected an AnnData object, got {type(adata).__name__}.")
    if layer is None:
        X = adata.X
        if X is None:
            raise EmptyX(list(adata.layers.keys()))
    else:
        if layer not in adata.layers:
            raise MissingLayer(layer, list(adata.layers.keys()))
        X = adata.layers[layer]
    if getattr(adata, "isbacked", False) and layer is None and load_backed:
        X = X[:]  # estimators need the matrix in memory; pretrain() streams it instead
    return X


def arrays(adata: Any, labels_key: str, layer: str | None, load_backed: bool = True):
    """``(expression(adata, layer), labels(adata.obs, labels_key))``: labels checked first."""
    y = labels(adata.obs, labels_key)
    return expression(adata, layer, load_backed), y


def open_on_disk(path: Path, labels_key: str, layer: str | None):
    """Labels, gene names and the on-disk matrix of an ``.h5ad`` file, without loading it.

    Returns ``(handle, matrix, labels, var_names)``; close ``handle`` when done.
    (``anndata.read_h5ad(backed="r")`` keeps ``X`` on disk but reads every layer into
    memory, so the file is opened here element by element.)
    """
    import h5py
    from anndata.io import read_elem, sparse_dataset

    handle = h5py.File(path, "r")
    try:
        y = labels(read_elem(handle["obs"]), labels_key)
        var_names = read_elem(handle["var"]).index
        group = handle.get("X" if layer is None else f"layers/{layer}")
        if group is None and layer is None:
            raise EmptyX(list(handle["layers"].keys()) if "layers" in handle else [], str(path))
        if group is None:
            layers = list(handle["layers"].keys()) if "layers" in handle else []
            raise MissingLayer(layer, layers, f" in {path}")
        encoding = group.attrs.get("encoding-type", "array")
        matrix = sparse_dataset(group) if encoding in ("csr_matrix", "csc_matrix") else group
    except BaseException:
        handle.close()
        raise
    return handle, matrix, y, var_names


def write(adata: Any, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``adata`` to ``path`` atomically, replacing an existing file only with
    ``overwrite`` (``scld_aug.files.atomic_write``)."""
    return atomic_write(path, adata.write_h5ad, overwrite=overwrite)


def check_writable(adata: Any) -> None:
    """Write ``adata`` to an in-memory HDF5 file, so that what ``.h5ad`` cannot store (an
    ``obs`` column of mixed objects, an ``uns`` entry of an unsupported type) fails in
    seconds, before the minutes of training whose result it would otherwise lose."""
    import io
    import warnings

    import h5py
    from anndata.io import write_elem

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the real write warns, once
        with h5py.File(io.BytesIO(), "w") as handle:
            write_elem(handle, "/", adata)


#: Name of the index of ``uns["scld_aug"]["cell_types"]`` (a fixed word: ``.h5ad`` files
#: store a table's index under its name, which must be a valid key).
TYPE_INDEX = "cell_type"


def type_table(rows: dict[Any, dict[str, Any]]) -> pd.DataFrame:
    """``uns["scld_aug"]["cell_types"]``: one row per cell type (the type's name as text in
    the index, where any name is safe, ``/``, ``.`` and empty ones included), columns
    ``cells`` (real cells), ``n_synthetic`` and ``skipped`` (too few cells to generate).

    Examples
    --------
    >>> table = type_table({"NK/T": {"cells": 5, "n_synthetic": 20}})
    >>> table.loc["NK/T"].to_dict()
    {'cells': 5, 'n_synthetic': 20, 'skipped': False}
    """
    names = [str(label) for label in rows]
    column = {
        "cells": (np.int64, 0),
        "n_synthetic": (np.int64, 0),
        "skipped": (bool, False),
    }
    return pd.DataFrame(
        {
            name: np.array([row.get(name, empty) for row in rows.values()], dtype=dtype)
            for name, (dtype, empty) in column.items()
        },
        index=pd.Index(names, name=TYPE_INDEX, dtype=object),
    )


def raw_counts_hint(adata: Any) -> str | None:
    """How to model the counts of ``adata.raw``, when it holds raw counts of every gene of
    ``adata`` (None otherwise): scld-aug reads ``X`` or a layer, never ``.raw``."""
    from scld_aug.data import first_non_count

    raw = getattr(adata, "raw", None)
    if raw is None or getattr(adata, "isbacked", False):
        return None
    if not pd.Index(adata.var_names).isin(raw.var_names).all():
        return None
    counts = raw[:, adata.var_names].X
    if first_non_count(counts) is not None:
        return None
    return (
        "adata.raw holds raw counts: put them in a layer, adata.layers['counts'] = "
        "adata.raw[:, adata.var_names].X, and name that layer"
    )


#: ``uns`` entries of results computed from the original cells (scanpy's embeddings, graphs
#: and marker tests): they do not cover the synthetic cells, and tools that find them would
#: read them as describing the augmented data, so they are left out.
CELL_RESULTS = (
    "pca", "neighbors", "umap", "tsne", "draw_graph", "diffmap_evals", "paga",
    "rank_genes_groups", "dendrogram_", "spatial",
)  # fmt: skip


def _still_valid(key: str, x_replaced: bool) -> bool:
    if any(key == name or (name.endswith("_") and key.startswith(name)) for name in CELL_RESULTS):
        return False
    # "log1p" says that X holds log-transformed values: not so once X is replaced.
    return not (x_replaced and key == "log1p")


def augmented(
    adata: Any,
    X_res: Any,
    y_res: np.ndarray,
    labels_key: str,
    layer: str | None,
    record: dict | None = None,
    normalize_x: bool = False,
    key_added: str = "is_synthetic",
) -> Any:
    """New AnnData: the original cells (with their obs) first, then synthetic cells.

    ``obs[key_added]`` marks the new cells; ``var`` is kept. The synthetic cells' other
    ``obs`` columns hold the value the column has for every real cell of their type where
    there is one (e.g. a coarser annotation), else missing values (e.g. batch, donor). The resampled matrix goes
    where it came from (``X`` or ``layers[layer]``); other layers, ``obsm`` and ``obsp``
    cannot be defined for synthetic cells and are left out, and so are the ``uns`` results
    computed from the original cells (``CELL_RESULTS``). ``record`` goes to
    ``uns["scld_aug"]``. With a layer, ``X`` is empty, or with ``normalize_x`` the
    log-normalized layer (``log1p`` of counts scaled to 10,000 per cell, every cell
    recomputed from the layer; ``uns["log1p"]`` says so, as scanpy writes it).
    """
    anndata = _anndata()
    n_orig = adata.n_obs
    n_new = X_res.shape[0] - n_orig
    synthetic_names = synthetic_obs_names(adata.obs_names, n_new)
    obs = pd.concat(
        [
            _with_missing(adata.obs, labels_key, n_new > 0),
            _synthetic_obs(adata.obs, synthetic_names, labels_key, y_res[n_orig:]),
        ]
    )
    obs[key_added] = np.r_[np.zeros(n_orig, bool), np.ones(n_new, bool)]
    # Deep copies: nothing of the result may be an object the caller's AnnData still holds.
    uns = {
        key: copy.deepcopy(value)
        for key, value in adata.uns.items()
        if _still_valid(key, x_replaced=layer is not None)
    }
    if record is not None:
        uns["scld_aug"] = record
    var = adata.var.copy(deep=True)
    if layer is None:
        return anndata.AnnData(X=X_res, obs=obs, var=var, uns=uns)
    X = None
    if normalize_x:
        from scld_aug.preprocessing import log_normalize

        X = log_normalize(X_res)
        X = X.astype(np.float32) if sp.issparse(X) else X.astype(np.float32, copy=False)
        uns["log1p"] = {"base": None}
    return anndata.AnnData(X=X, obs=obs, var=var, layers={layer: X_res}, uns=uns)


def synthetic_obs_names(existing: pd.Index, n: int) -> pd.Index:
    """Names of ``n`` synthetic cells, none of them among ``existing``: ``synthetic-0``,
    ``synthetic-1``... unless one of those is taken, then ``synthetic1-0``... and so on.

    Examples
    --------
    >>> synthetic_obs_names(pd.Index(["a", "synthetic-1"]), 2).tolist()
    ['synthetic1-0', 'synthetic1-1']
    """
    taken = set(map(str, existing))
    attempt = 0
    while True:
        prefix = "synthetic" if attempt == 0 else f"synthetic{attempt}"
        names = [f"{prefix}-{i}" for i in range(n)]
        if taken.isdisjoint(names):
            return pd.Index(names)
        attempt += 1


def _nullable(dtype: Any) -> Any:
    """A dtype that holds missing values: ``boolean`` for bool, ``Int64``/``UInt64``... for
    integers (concatenation would otherwise make them object and float columns, and
    ``write_h5ad`` rejects object columns of bools); other dtypes hold them already."""
    if isinstance(dtype, np.dtype) and dtype.kind == "b":
        return "boolean"
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        return f"{'U' if dtype.kind == 'u' else ''}Int{8 * dtype.itemsize}"
    return dtype


def _with_missing(obs: pd.DataFrame, labels_key: str, needed: bool) -> pd.DataFrame:
    """A deep copy of ``obs`` whose columns (but the labels, which every synthetic cell has)
    can hold the synthetic cells' missing values."""
    out = obs.copy(deep=True)
    if needed:
        for column in out.columns:
            if column != labels_key:
                out[column] = out[column].astype(_nullable(out[column].dtype))
    return out


def _synthetic_obs(obs: pd.DataFrame, index: pd.Index, labels_key: str, labels) -> pd.DataFrame:
    """``obs`` rows of the synthetic cells: their labels; in every other column the value
    all real cells of their type share, where they share one, else a missing value (with
    the columns' own dtypes, so that concatenation keeps them)."""
    labels = np.asarray(labels)
    real = obs[labels_key].astype(object).to_numpy()
    columns = {}
    for column in obs.columns:
        if column == labels_key:
            continue
        values = pd.Series(index=index, dtype=_nullable(obs[column].dtype))
        # One pass over the real cells per column: each type's value where it has one.
        per_type = obs[column].groupby(real, observed=True, dropna=False)
        shared = per_type.nunique(dropna=False) == 1
        value_of = per_type.first()[shared]
        mapped = pd.Series(labels.astype(object), index=index).map(value_of)
        filled = mapped.notna().to_numpy()
        if filled.any():
            values[filled] = mapped[filled].to_numpy()
        columns[column] = values
    out = pd.DataFrame(columns, index=index)
    dtype = obs[labels_key].dtype
    # Categorical labels stay categorical, with the original categories and order.
    out[labels_key] = pd.Categorical(labels, dtype=dtype) if dtype == "category" else labels
    return out[list(obs.columns)]
