"""Per-gene statistics of a cells x genes matrix, streamed by row blocks (never densified).

The gene panel and the likelihoods compute what they need from these passes: weighted
moments (of normalized counts and their logarithm, or of the values), per-class sums, and
per-gene ranges.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from scld_aug.data import iter_row_chunks

# Counts per cell after library-size normalization (the "10k" of log-normalized counts).
TARGET_SUM = 1e4


def normalize_rows(chunk: sp.csr_matrix, library: np.ndarray) -> sp.csr_matrix:
    """Rows scaled to ``TARGET_SUM`` counts (an empty cell counts as a library of 1)."""
    scale = TARGET_SUM / np.maximum(library, 1.0)
    return sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ chunk)


def weighted_moments(X, weights: np.ndarray, library: np.ndarray | None):
    """Weighted mean and variance per gene, ``(mean, var, log_mean, log_var)``.

    With ``library``, of library-normalized counts and of their ``log1p``; without, of the
    values themselves (returned twice).
    """
    n_genes = X.shape[1]
    s1 = np.zeros(n_genes)
    s2 = np.zeros(n_genes)
    l1 = np.zeros(n_genes)
    l2 = np.zeros(n_genes)
    total = weights.sum()
    for start, chunk in iter_row_chunks(X):
        w = weights[start : start + chunk.shape[0]]
        values = (
            normalize_rows(chunk, library[start : start + chunk.shape[0]])
            if library is not None
            else chunk
        )
        s1 += values.T @ w
        s2 += values.multiply(values).T @ w
        if library is not None:
            logged = values.log1p()
            l1 += logged.T @ w
            l2 += logged.multiply(logged).T @ w
    mean = s1 / total
    var = np.maximum(s2 / total - mean**2, 0.0)
    if library is None:
        return mean, var, mean, var
    log_mean = l1 / total
    log_var = np.maximum(l2 / total - log_mean**2, 0.0)
    return mean, var, log_mean, log_var


def class_sums(X, codes: np.ndarray, n_classes: int, with_spread: bool):
    """Per-class sums of values (and of non-zero indicators and squares), streamed by rows."""
    shape = (n_classes, X.shape[1])
    sums, nonzeros, squares = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for start, chunk in iter_row_chunks(X):
        c = codes[start : start + chunk.shape[0]]
        onehot = sp.csr_matrix((np.ones(len(c)), (c, np.arange(len(c)))), shape=(n_classes, len(c)))
        sums += (onehot @ chunk).toarray()
        if with_spread:
            indicator = chunk.copy()
            indicator.data = (indicator.data != 0).astype(indicator.data.dtype)
            nonzeros += (onehot @ indicator).toarray()
            squares += (onehot @ chunk.multiply(chunk)).toarray()
    return sums, nonzeros, squares


# Bound of the overdispersion estimate: a gene seen in a single cell has an unbounded one,
# and at 1/theta = 100 almost all of a gene's counts already come as rare bursts.
MAX_OVERDISPERSION = 100.0


def class_composition(
    X, codes: np.ndarray, n_classes: int, columns: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each class's composition of the genes ``columns`` (shares of their total, rows sum to
    1; zero for a class without counts there) and each gene's overdispersion ``1/theta``
    around it: gamma-Poisson (negative binomial) counts around ``mu = T_i p_cg``, the cell's
    total over ``columns`` times its class's share.

    Method of moments pooled over cells and classes, ``sum((x - mu)^2 - mu) / sum(mu^2)``
    (0 for Poisson counts), streamed by rows in one pass and clipped to
    ``[0, MAX_OVERDISPERSION]``. The class's composition takes the differences between
    types out, so what is left is the cell-to-cell spread within a type.
    """
    n = len(columns)
    counts = np.zeros((n_classes, n))  # sum of x
    squares = np.zeros((n_classes, n))  # sum of x^2
    cross = np.zeros((n_classes, n))  # sum of T_i x
    total_squares = np.zeros(n_classes)  # sum of T_i^2
    for start, chunk in iter_row_chunks(X):
        part = sp.csr_matrix(chunk[:, columns], dtype=np.float64)
        c = codes[start : start + part.shape[0]]
        t = np.asarray(part.sum(axis=1)).ravel()
        onehot = sp.csr_matrix((np.ones(len(c)), (c, np.arange(len(c)))), shape=(n_classes, len(c)))
        counts += (onehot @ part).toarray()
        squares += (onehot @ part.multiply(part)).toarray()
        cross += (onehot @ sp.diags(t) @ part).toarray()
        total_squares += np.bincount(c, weights=t * t, minlength=n_classes)
    totals = counts.sum(1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    mu_squares = share**2 * total_squares[:, None]
    excess = (squares - 2.0 * share * cross + mu_squares - counts).sum(0)
    spread = np.divide(excess, mu_squares.sum(0), out=np.zeros(n), where=mu_squares.sum(0) > 0)
    return share, np.clip(spread, 0.0, MAX_OVERDISPERSION)


def column_range(X) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene minimum and maximum (implicit zeros included), streamed by rows."""
    lower = upper = None
    for _, chunk in iter_row_chunks(X):
        lo = np.asarray(chunk.min(axis=0).todense()).ravel()
        hi = np.asarray(chunk.max(axis=0).todense()).ravel()
        lower = lo if lower is None else np.minimum(lower, lo)
        upper = hi if upper is None else np.maximum(upper, hi)
    return lower, upper
