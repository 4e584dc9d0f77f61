"""Data layer: the only module that knows about sparse formats, pandas and AnnData.

It checks what users pass, turns it into a CSR matrix plus integer class codes for
training, streams minibatches without densifying the matrix, and puts results back into
the user's container.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

CHUNK_ROWS = 4096


def plain_scalar(value: Any) -> Any:
    """Python scalar for messages and JSON (numpy scalars print as ``np.str_('x')``)."""
    return value.item() if isinstance(value, np.generic) else value


def as_csr(X: np.ndarray | sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    """CSR float32 view or copy of ``X``; the caller's object is never modified.

    A matrix that is already canonical float32 CSR without stored zeros is used as it is
    (training only reads it): atlas-sized input is not duplicated.
    """
    if sp.issparse(X):
        if (
            X.format == "csr"
            and X.dtype == np.float32
            and X.has_canonical_format
            and not np.any(X.data == 0)
        ):
            return X if isinstance(X, sp.csr_matrix) else sp.csr_matrix(X, copy=False)
        out = sp.csr_matrix(X, dtype=np.float32, copy=False)
        if out is X or (hasattr(out, "data") and np.shares_memory(out.data, X.data)):
            out = out.copy()
        out.sum_duplicates()
        out.eliminate_zeros()
        return out
    return sp.csr_matrix(np.asarray(X, dtype=np.float32))


def iter_row_chunks(
    X: sp.csr_matrix, chunk_rows: int = CHUNK_ROWS
) -> Iterator[tuple[int, sp.csr_matrix]]:
    """Row blocks of ``X`` (start index, CSR block) so whole-matrix passes stay sparse."""
    for start in range(0, X.shape[0], chunk_rows):
        yield start, X[start : start + chunk_rows]


def _data_values(X: sp.csr_matrix) -> Iterator[np.ndarray]:
    for start in range(0, X.nnz, 1 << 22):
        yield X.data[start : start + (1 << 22)]


def first_non_count(X: Any) -> float | None:
    """A value of ``X`` (sparse or dense) that is not a non-negative whole number, or None
    for count data. Reads in blocks: no whole-matrix mask or conversion."""
    if sp.issparse(X):
        blocks = _data_values(X if X.format in ("csr", "csc", "coo") else sp.csr_matrix(X))
    else:
        X = np.asarray(X)
        blocks = (X[i : i + CHUNK_ROWS] for i in range(0, len(X), CHUNK_ROWS))
    for v in blocks:
        bad = ~((v >= 0) & (v == np.round(v)))
        if bad.any():
            return float(np.asarray(v)[bad][0])
    return None


def is_count_matrix(X: Any) -> bool:
    """True when every value is a non-negative whole number (raw UMI or read counts)."""
    return first_non_count(X) is None


def resolve_likelihood(X: sp.csr_matrix, likelihood: str) -> str:
    """Pick the decoder likelihood and check that the data suits it."""
    if likelihood == "auto":
        return "nb" if is_count_matrix(X) else "gaussian"
    if likelihood == "nb":
        for v in _data_values(X):
            if (v < 0).any():
                raise ValueError(
                    f"likelihood='nb' needs raw counts, but X has negative values (min "
                    f"{v.min():g}). Pass raw counts (e.g. adata.layers['counts']) or use "
                    "likelihood='gaussian' for normalized or scaled data."
                )
            if (v != np.round(v)).any():
                bad = v[v != np.round(v)][0]
                raise ValueError(
                    f"likelihood='nb' needs integer counts, but X has non-integer values "
                    f"(e.g. {bad:g}). Pass raw counts, or use likelihood='gaussian' for "
                    "log-normalized data."
                )
    return likelihood


def library_sizes(X: sp.csr_matrix) -> np.ndarray:
    """Total counts per cell."""
    return np.asarray(X.sum(axis=1)).ravel().astype(np.float64)


def sampling_weights(codes: np.ndarray, n_classes: int, class_balance: float) -> np.ndarray:
    """Per-cell sampling probability proportional to ``n_class ** -class_balance``.

    ``class_balance=0`` is uniform over cells; ``1`` gives each class the same share of
    minibatches, so a 10-cell type is seen as often as a 1,000-cell type.
    """
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    per_class = np.zeros(n_classes)
    present = counts > 0
    per_class[present] = counts[present] ** -class_balance
    weights = per_class[codes]
    return weights / weights.sum()


class MinibatchSampler:
    """Draws weighted minibatches of row indices with its own random generator."""

    def __init__(self, weights: np.ndarray, batch_size: int, rng: np.random.Generator) -> None:
        self.cumulative = np.cumsum(weights)
        self.cumulative[-1] = 1.0
        self.batch_size = batch_size
        self.rng = rng

    def draw(self) -> np.ndarray:
        idx = np.searchsorted(self.cumulative, self.rng.random(self.batch_size), side="right")
        return np.sort(np.minimum(idx, len(self.cumulative) - 1))


def dense_rows(X: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """Densify only the requested rows."""
    return X[rows].toarray()


# --------------------------------------------------------------------------- output


def stack_rows(X: Any, synthetic: list[Any]) -> Any:
    """Originals first, then synthetic rows, in the container and dtype of ``X``."""
    if not synthetic:
        return X.copy()
    if sp.issparse(X):
        fmt = X.format if X.format in ("csr", "csc") else "csr"
        parts = [X] + [sp.csr_matrix(s) for s in synthetic]
        return sp.vstack(parts, format=fmt).astype(X.dtype, copy=False)
    return np.vstack([X] + [np.asarray(s) for s in synthetic]).astype(X.dtype, copy=False)


def output_dtype(input_dtype: np.dtype, output: str, likelihood: str) -> np.dtype:
    """Counts keep the input dtype; expected or normalized values need a float dtype."""
    if (output == "mean" or likelihood == "gaussian") and not np.issubdtype(
        input_dtype, np.floating
    ):
        return np.dtype(np.float64)
    return np.dtype(input_dtype)


# --------------------------------------------------------------------------- AnnData


def _require_anndata():
    try:
        import anndata
    except ImportError as err:  # pragma: no cover - anndata is a core dependency
        raise ImportError(
            "AnnData support needs the 'anndata' package: pip install anndata"
        ) from err
    return anndata


def anndata_arrays(adata: Any, labels_key: str, layer: str | None) -> tuple[Any, np.ndarray]:
    """Expression matrix and labels of an AnnData object, checked, not copied."""
    anndata = _require_anndata()
    if not isinstance(adata, anndata.AnnData):
        raise TypeError(f"Expected an AnnData object, got {type(adata).__name__}.")
    if labels_key not in adata.obs:
        raise KeyError(
            f"labels_key={labels_key!r} is not a column of adata.obs; available columns: "
            f"{list(adata.obs.columns)}."
        )
    if layer is None:
        X = adata.X
        if X is None:
            raise ValueError("adata.X is empty; pass layer= to name the layer holding expression.")
    else:
        if layer not in adata.layers:
            raise KeyError(
                f"layer={layer!r} not found; available layers: {list(adata.layers.keys())}."
            )
        X = adata.layers[layer]
    if getattr(adata, "isbacked", False) and layer is None:
        X = X[:]  # backed data is read in one go here; see the docs for large files
    labels = adata.obs[labels_key]
    if labels.isna().any():
        raise ValueError(
            f"adata.obs[{labels_key!r}] has {int(labels.isna().sum())} missing labels; drop or "
            "label those cells first."
        )
    return X, np.asarray(
        labels.astype(str) if isinstance(labels.dtype, pd.CategoricalDtype) else labels
    )


def augmented_anndata(
    adata: Any, X_res: Any, y_res: np.ndarray, labels_key: str, layer: str | None
) -> Any:
    """New AnnData: the original cells (with their obs) first, then synthetic cells.

    ``obs["is_synthetic"]`` marks the new cells; ``var`` is kept. The resampled matrix goes
    where it came from (``X`` or ``layers[layer]``); other layers, ``obsm`` and ``obsp``
    cannot be defined for synthetic cells and are left out.
    """
    anndata = _require_anndata()
    n_orig = adata.n_obs
    n_new = X_res.shape[0] - n_orig
    synthetic_names = pd.Index([f"synthetic-{i}" for i in range(n_new)])
    if synthetic_names.isin(adata.obs_names).any():
        synthetic_names = pd.Index([f"scld-synthetic-{i}" for i in range(n_new)])
    obs_new = pd.DataFrame(index=synthetic_names)
    obs_new[labels_key] = y_res[n_orig:]
    obs = pd.concat([adata.obs.copy(), obs_new], axis=0)
    original_labels = adata.obs[labels_key]
    if isinstance(original_labels.dtype, pd.CategoricalDtype):
        # Labels went through str(); map them back onto the original categories.
        categories = original_labels.cat.categories
        lookup = dict(zip(categories.astype(str), categories, strict=True))
        obs[labels_key] = pd.Categorical(
            [lookup.get(str(v), v) for v in obs[labels_key]], categories=categories
        )
    _keep_obs_dtypes(obs, adata.obs)
    obs["is_synthetic"] = np.r_[np.zeros(n_orig, bool), np.ones(n_new, bool)]
    if layer is None:
        return anndata.AnnData(X=X_res, obs=obs, var=adata.var.copy(), uns=dict(adata.uns))
    return anndata.AnnData(
        X=None, obs=obs, var=adata.var.copy(), layers={layer: X_res}, uns=dict(adata.uns)
    )


def _keep_obs_dtypes(obs: pd.DataFrame, original: pd.DataFrame) -> None:
    """Nullable dtypes for columns the synthetic cells have no value in.

    Concatenation with missing values turns bool columns into object columns (which
    ``write_h5ad`` rejects) and integer columns into floats; ``boolean`` / ``Int64`` keep both.
    """
    for column in original.columns:
        dtype = original[column].dtype
        if not isinstance(dtype, np.dtype) or not obs[column].isna().any():
            continue  # extension dtypes hold missing values already
        if dtype.kind == "b":
            obs[column] = obs[column].astype("boolean")
        elif dtype.kind in "iu":
            obs[column] = obs[column].astype(
                f"{'U' if dtype.kind == 'u' else ''}Int{8 * dtype.itemsize}"
            )
