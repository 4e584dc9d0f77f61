"""Data layer: matrices as users pass them (dense, any scipy sparse format), as training
reads them (canonical float32 CSR, :class:`CellRows` over memory or a backed file) and as
results go back (the input's container, originals first).

It checks values (finite, counts or not, not all zero), fingerprints data for caching,
streams row blocks and minibatches without densifying the matrix, and sizes outputs
before they are made. AnnData and ``.h5ad`` files are :mod:`scld_aug.anndata_io`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp

CHUNK_ROWS = 4096
# Largest copy of the modelled genes' columns kept in memory (see CellRows.columns).
COLUMN_COPY_BYTES = 256 * 2**20


def plain_scalar(value: Any) -> Any:
    """Python scalar for messages and JSON (numpy scalars print as ``np.str_('x')``)."""
    return value.item() if isinstance(value, np.generic) else value


def label_tokens(labels: Any) -> list[list[str]]:
    """Each label as ``[type name, repr]``: ``1``, ``1.0`` and ``"1"`` stay different labels
    (a numpy scalar counts as its Python type, so ``np.int64(1)`` and ``1`` are the same).

    Examples
    --------
    >>> label_tokens([1, "1", np.int64(2)])
    [['int', '1'], ['str', "'1'"], ['int', '2']]
    """
    tokens = []
    for label in labels:
        value = plain_scalar(label)
        tokens.append([type(value).__name__, repr(value)])
    return tokens


def fingerprint(matrix: sp.csr_matrix, labels: np.ndarray, *extra: Any) -> str:
    """Content digest of canonical CSR ``matrix`` (as :func:`as_csr` returns it), the labels
    (values and types, see :func:`label_tokens`) and any JSON-serializable ``extra``.

    Equal data give equal digests whatever the index dtype; the matrix is hashed in blocks,
    so no copy of it is made.

    Examples
    --------
    >>> X = as_csr(np.array([[0, 2], [3, 0]]))
    >>> fingerprint(X, np.array([1, 2])) == fingerprint(X, np.array(["1", "2"]))
    False
    """
    classes, codes = np.unique(np.asarray(labels), return_inverse=True)
    h = hashlib.blake2b(digest_size=20)
    step = 1 << 22
    for array, dtype in (
        (matrix.data, np.float32),
        (matrix.indices, np.int64),
        (matrix.indptr, np.int64),
        (codes.ravel(), np.int64),
    ):
        h.update(str(len(array)).encode())
        for start in range(0, len(array), step):
            block = np.ascontiguousarray(array[start : start + step], dtype=dtype)
            h.update(block.view(np.uint8).data)
    h.update(json.dumps([list(matrix.shape), label_tokens(classes), *extra]).encode())
    return h.hexdigest()


def as_csr(X: np.ndarray | sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    """Canonical float32 CSR of ``X`` (sorted indices, duplicates summed, no stored zeros).

    The caller's object is never modified and the result shares no array with it, except
    when ``X`` already is canonical float32 CSR without stored zeros: then it is used as it
    is (training only reads it), so atlas-sized input is not duplicated.
    """
    if sp.issparse(X):
        if (
            X.format == "csr"
            and X.dtype == np.float32
            and X.has_canonical_format
            and not any(np.any(v == 0) for v in _data_values(X))
        ):
            return X if isinstance(X, sp.csr_matrix) else sp.csr_matrix(X, copy=False)
        out = sp.csr_matrix(X, dtype=np.float32)
        # scipy may hand back the caller's index arrays (a CSR of another dtype keeps its
        # indices and indptr); canonicalizing below rewrites them in place.
        if _shares_memory(out, X):
            out = sp.csr_matrix(
                (
                    np.array(out.data, dtype=np.float32),
                    np.array(out.indices),
                    np.array(out.indptr),
                ),
                shape=out.shape,
            )
        out.sum_duplicates()
        out.eliminate_zeros()
        return out
    return sp.csr_matrix(np.asarray(X, dtype=np.float32))


def _shares_memory(a: Any, b: Any) -> bool:
    """Whether sparse matrices ``a`` and ``b`` have any array in common."""

    def arrays(m: Any) -> list[np.ndarray]:
        names = ("data", "indices", "indptr", "row", "col", "coords", "offsets")
        found = []
        for name in names:
            value = getattr(m, name, None)
            if isinstance(value, tuple):
                found += [v for v in value if isinstance(v, np.ndarray)]
            elif isinstance(value, np.ndarray):
                found.append(value)
        return found

    return any(np.shares_memory(x, y) for x in arrays(a) for y in arrays(b))


def iter_row_chunks(X: Any, chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[int, sp.csr_matrix]]:
    """Row blocks of ``X`` (start index, CSR block) so whole-matrix passes stay sparse."""
    if isinstance(X, CellRows):
        yield from X.blocks(chunk_rows)
        return
    for start in range(0, X.shape[0], chunk_rows):
        yield start, X[start : start + chunk_rows]


def _canonical_block(block: Any) -> sp.csr_matrix:
    out = sp.csr_matrix(block, dtype=np.float32)
    out.sum_duplicates()
    out.eliminate_zeros()
    return out


class CellRows:
    """Rows of a cells x genes matrix, in memory (CSR) or on disk (a backed ``.h5ad``).

    Training reads expression in two ways only: row blocks for whole-data passes
    (statistics, encoding) and minibatches of rows. Both return float32 values of the
    selected genes (all genes unless :meth:`columns` narrowed them), so the training code
    does not care where the matrix lives. On-disk matrices are never loaded whole: memory
    stays at a block or a minibatch whatever the number of cells.
    """

    def __init__(self, matrix: Any, genes: np.ndarray | None = None) -> None:
        self.matrix = matrix
        self.genes = genes
        self.backed = not sp.issparse(matrix)

    @property
    def shape(self) -> tuple[int, int]:
        n_genes = self.matrix.shape[1] if self.genes is None else len(self.genes)
        return (int(self.matrix.shape[0]), int(n_genes))

    def _select(self, block: sp.csr_matrix) -> sp.csr_matrix:
        return block if self.genes is None else block[:, self.genes]

    def _read(self, rows: slice | np.ndarray) -> sp.csr_matrix:
        """CSR rows (a slice, or sorted distinct indices) of the selected genes."""
        block = self.matrix[rows]
        return self._select(_canonical_block(block) if self.backed else block)

    def blocks(self, chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[int, sp.csr_matrix]]:
        """(start row, CSR block) over the whole matrix."""
        for start in range(0, self.shape[0], chunk_rows):
            yield start, self._read(slice(start, start + chunk_rows))

    def values(self) -> Iterator[np.ndarray]:
        """The stored (non-zero) values, in blocks."""
        if self.backed or self.genes is not None:
            for _, block in self.blocks():
                yield block.data
        else:
            yield from _data_values(self.matrix)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Dense float32 rows (sorted indices, repeats allowed) of the selected genes."""
        if self.backed:  # h5py reads distinct indices only
            unique, inverse = np.unique(rows, return_inverse=True)
            return self._read(unique).toarray()[inverse]
        return self._read(rows).toarray()

    def csr_rows(self, rows: np.ndarray) -> sp.csr_matrix:
        """CSR rows (sorted, distinct indices) of the selected genes: a sample of cells
        that stays sparse."""
        return self._read(rows)

    def columns(self, genes: np.ndarray) -> CellRows:
        """The same cells restricted to ``genes``.

        The selection is applied as rows are read, except for a small in-memory matrix: when
        the selected columns fit in ``COLUMN_COPY_BYTES`` they are copied once, which makes
        minibatches a little cheaper. So memory never grows with the cells beyond the input.
        """
        if self.genes is not None:
            raise ValueError("columns() of a column selection is not supported")
        genes = np.asarray(genes)
        if len(genes) == self.shape[1] and np.array_equal(genes, np.arange(self.shape[1])):
            return self
        if not self.backed:
            selected = np.zeros(self.shape[1], dtype=bool)
            selected[genes] = True
            # Blocks of the index array: a whole-matrix mask would be one byte per value.
            nnz = sum(
                int(np.count_nonzero(selected[self.matrix.indices[i : i + (1 << 22)]]))
                for i in range(0, self.matrix.nnz, 1 << 22)
            )
            if nnz * 8 + self.matrix.indptr.nbytes <= COLUMN_COPY_BYTES:
                return CellRows(sp.csr_matrix(self.matrix[:, genes]))
        return CellRows(self.matrix, genes)

    def row_sums(self) -> np.ndarray:
        """Per-row totals (library sizes for counts), float64."""
        if not self.backed and self.genes is None:
            return np.asarray(self.matrix.sum(axis=1), dtype=np.float64).ravel()
        return np.concatenate(
            [np.asarray(b.sum(axis=1), dtype=np.float64).ravel() for _, b in self.blocks()]
            or [np.zeros(0)]
        )


def cell_rows(X: Any) -> CellRows:
    """:class:`CellRows` over CSR/CSC/dense input (converted once by :func:`as_csr`) or over
    the matrix of a backed AnnData (``adata.X`` / a layer of ``read_h5ad(..., backed="r")``),
    which is read block by block and never loaded whole."""
    if isinstance(X, CellRows):
        return X
    if sp.issparse(X) or isinstance(X, np.ndarray):
        return CellRows(as_csr(X))
    fmt = getattr(X, "format", None)
    if fmt == "csc":
        raise ValueError(
            "The on-disk matrix is stored column-major (CSC), which cannot be read by rows "
            "efficiently. Convert it once to CSR (e.g. adata = anndata.read_h5ad(path); "
            "adata.X = adata.X.tocsr(); adata.write_h5ad(path)) or load it into memory."
        )
    if fmt == "csr" or (hasattr(X, "shape") and hasattr(X, "dtype") and len(X.shape) == 2):
        return CellRows(X)  # backed CSR dataset or HDF5 dense dataset
    return CellRows(as_csr(np.asarray(X)))


def _data_values(X: sp.csr_matrix) -> Iterator[np.ndarray]:
    for start in range(0, X.nnz, 1 << 22):
        yield X.data[start : start + (1 << 22)]


def _given_value_blocks(X: Any) -> Iterator[np.ndarray]:
    """The values of ``X`` in their own dtype, in blocks: stored values of sparse input
    (duplicate entries summed, as scipy defines the matrix), rows of dense input, and the
    stored values of a :class:`CellRows` as they are on disk. No whole-matrix copy."""
    if isinstance(X, CellRows):
        source = X.matrix
        for start in range(0, X.shape[0], CHUNK_ROWS):
            block = source[start : start + CHUNK_ROWS]
            if sp.issparse(block):
                block = _summed(sp.csr_matrix(block))
                yield (block if X.genes is None else block[:, X.genes]).data
            else:
                block = np.asarray(block)
                yield block if X.genes is None else block[:, X.genes]
    elif sp.issparse(X):
        if X.format in ("csr", "csc") and X.has_canonical_format:
            yield from _data_values(X)
        else:
            # Duplicate entries count as their sum (2.5 + 2.5 is the count 5): canonical
            # row blocks, one at a time.
            rows = X if X.format == "csr" else sp.csr_matrix(X)
            for i in range(0, rows.shape[0], CHUNK_ROWS):
                yield _summed(rows[i : i + CHUNK_ROWS]).data
    else:
        X = np.asarray(X)
        for i in range(0, len(X), CHUNK_ROWS):
            yield X[i : i + CHUNK_ROWS]


def first_non_count(X: Any) -> np.generic | None:
    """A value of ``X`` that is not a non-negative whole number, or None for count data.

    The one rule for "raw counts" wherever scld-aug asks (``likelihood="auto"``, a count
    model's input check, the command line's check of an ``.h5ad`` file): values are judged
    in the dtype they were given in, before any conversion, so a value ``1e-12`` away from
    a whole number is not a count anywhere. ``X``: dense, any scipy sparse format or
    :class:`CellRows` (read in blocks: no whole-matrix mask or conversion).

    Examples
    --------
    >>> first_non_count(np.array([[0, 3], [18, 2]])) is None
    True
    >>> print(exact(first_non_count(np.array([[0.0, 18.000000000001]]))))
    18.000000000001
    """
    for v in _given_value_blocks(X):
        v = np.asarray(v)
        if v.dtype.kind in "biu":
            bad = v < 0
        else:
            bad = ~((v >= 0) & (v == np.round(v)))
        if bad.any():
            return v[bad][0]
    return None


def exact(value: Any) -> str:
    """``value`` written out with every digit its dtype holds (``%g`` shows 18.000000000001
    as 18).

    Examples
    --------
    >>> exact(np.float64(18.000000000001)), exact(np.float32(0.1)), exact(np.int64(-3))
    ('18.000000000001', '0.1', '-3')
    """
    if isinstance(value, (np.floating, float)):
        return np.format_float_positional(value, trim="-")
    return str(plain_scalar(value))


def non_count_message(value: Any, where: str = "X") -> str:
    """What to say about data that are not raw counts, given a value that shows it (the
    same words on every path that needs counts; callers add how to fix it there)."""
    near = (
        isinstance(value, (np.floating, float))
        and np.isfinite(value)
        and value >= 0
        and abs(value - np.round(value)) < 1e-6
    )
    if not np.isfinite(value) or value < 0:
        what = "which is negative" if value < 0 else "which is not a finite number"
    else:
        what = "which is not a whole number"
    return f"{where} does not hold raw counts: it has the value {exact(value)}, {what}" + (
        " (it is within 1e-6 of one: if these are counts with rounding noise, round them "
        "first, e.g. X = X.round())"
        if near
        else " (normalized or scaled data?)"
    )


def _summed(block: sp.csr_matrix) -> sp.csr_matrix:
    """A copy of a CSR block with duplicate entries summed, in its own dtype."""
    block = sp.csr_matrix(block, copy=True)
    block.sum_duplicates()
    return block


def is_count_matrix(X: Any) -> bool:
    """True when every value is a non-negative whole number (raw UMI or read counts)."""
    return first_non_count(X) is None


def resolve_likelihood(X: Any, likelihood: str, given: Any = None) -> str:
    """Pick the decoder likelihood and check that the data suit it.

    ``X`` is what training reads (canonical float32 CSR or :class:`CellRows`); ``given`` the
    data as the caller passed them (default ``X``), on which counts are judged
    (:func:`first_non_count`). Also refuses NaN and infinite values, which on-disk data
    reach here unchecked, and data without any non-zero value.
    """
    from scld_aug import likelihoods

    values = X.values if isinstance(X, CellRows) else lambda: _data_values(X)
    nonzero = False
    for v in values():
        nonzero = nonzero or bool(np.any(v != 0))
        if not np.isfinite(v).all():
            raise ValueError(
                "X has NaN or infinite values (e.g. "
                f"{v[~np.isfinite(v)][0]}). Remove or impute them before training."
            )
    if not nonzero:
        raise ValueError(
            "X holds no non-zero value: every cell is empty, so there is nothing to learn. "
            "Check that X is the expression matrix (cells in rows, genes in columns) and, "
            "for AnnData, that layer= names the layer with the counts."
        )
    bad = first_non_count(X if given is None else given)
    if likelihood == "auto":
        return likelihoods.for_data(bad is None)
    likelihoods.get(likelihood).check_values(bad)
    return likelihood


def library_sizes(X: Any) -> np.ndarray:
    """Total counts per cell (``X``: CSR or :class:`CellRows`)."""
    if isinstance(X, CellRows):
        return X.row_sums()
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


# --------------------------------------------------------------------------- output


def stack_rows(X: Any, synthetic: list[Any], dtype: Any = None) -> Any:
    """Originals first, then synthetic rows, in the container of ``X`` and ``dtype`` (by
    default ``X``'s; a wider one keeps the original values exactly)."""
    dtype = X.dtype if dtype is None else np.dtype(dtype)
    if not synthetic:
        return X.astype(dtype, copy=True)
    if sp.issparse(X):
        fmt = X.format if X.format in ("csr", "csc") else "csr"
        parts = [X] + [sp.csr_matrix(s) for s in synthetic]
        return sp.vstack(parts, format=fmt, dtype=dtype)
    return np.vstack([X] + [np.asarray(s) for s in synthetic]).astype(dtype, copy=False)


def cast_checked(values: Any, dtype: np.dtype) -> Any:
    """``values`` (dense or sparse) as ``dtype``, refusing values an integer ``dtype`` cannot
    hold instead of wrapping them around."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu" and values.size:
        data = values.data if sp.issparse(values) else values
        if data.size:
            low, high = float(data.min()), float(data.max())
            info = np.iinfo(dtype)
            if low < info.min or high > info.max:
                raise OverflowError(
                    f"Synthetic values from {low:g} to {high:g} do not fit the output dtype "
                    f"{dtype} ({info.min} to {info.max}). Pass X with a wider dtype, e.g. "
                    "X.astype('int64')."
                )
    return values.astype(dtype, copy=False)


def nnz_per_row(X: Any) -> np.ndarray:
    """Stored values per row of a validated matrix (CSR/CSC; dense rows count every gene)."""
    if not sp.issparse(X):
        return np.full(X.shape[0], X.shape[1], dtype=np.float64)
    if X.format == "csr":
        return np.diff(X.indptr).astype(np.float64)
    if X.format == "csc":
        return np.bincount(X.indices, minlength=X.shape[0]).astype(np.float64)
    return np.diff(sp.csr_matrix(X).indptr).astype(np.float64)


def available_memory() -> int | None:
    """Bytes of memory available to new allocations, or None where the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _size(n_bytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n_bytes < 1024 or unit == "TiB":
            return f"{n_bytes:,.0f} {unit}" if unit == "bytes" else f"{n_bytes:,.1f} {unit}"
        n_bytes /= 1024
    raise AssertionError("unreachable")


def check_output_fits(
    n_new: int, row_bytes: float, kept_bytes: float = 0.0, available: int | None = None
) -> None:
    """Refuse, before any work, an output that cannot fit in memory.

    ``n_new`` synthetic rows of about ``row_bytes`` each exist twice at the end (the blocks
    and the stacked result), next to ``kept_bytes`` (the copy of the original rows).

    Examples
    --------
    >>> check_output_fits(10**9, 8 * 20_000, available=16 * 2**30)
    Traceback (most recent call last):
    ...
    ValueError: Generating 1,000,000,000 synthetic cells needs about 291.0 TiB of memory for the output, but about 16.0 GiB is available. Ask for fewer cells (a smaller sampling_strategy, or --target on the command line), or call generate(n, cell_type) in chunks and write each chunk out.
    """
    need = 2.0 * n_new * row_bytes + kept_bytes
    available = available_memory() if available is None else available
    if available is not None and need > available:
        raise ValueError(
            f"Generating {n_new:,} synthetic cells needs about {_size(need)} of memory for the "
            f"output, but about {_size(available)} is available. Ask for fewer cells (a "
            "smaller sampling_strategy, or --target on the command line), or call "
            "generate(n, cell_type) in chunks and write each chunk out."
        )
