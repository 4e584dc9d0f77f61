"""Gene handling: which genes the networks model, and how the others are generated.

The networks model the ``n_top_genes`` most variable genes (Cell Ranger-style normalized
dispersion for counts, variance for normalized data). Gene moments are weighted like
the training minibatches, so markers of rare cell types are not drowned by large types.
Every other gene is still generated, from class-level statistics:

* counts: the decoder has one extra output, the total of all other genes, whose counts are
  split over those genes by the target class's observed composition (multinomial);
* normalized data: each other gene is zero with the class's observed zero rate and
  otherwise normal with the class's mean and spread of non-zero values.

Those genes are, by construction, the ones that vary least between cells, so class-level
statistics describe them well, and the output keeps every input gene.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import scipy.sparse as sp

from scld_aug.data import CellRows, cell_rows, iter_row_chunks

TARGET_SUM = 1e4


def _normalize_rows(chunk: sp.csr_matrix, library: np.ndarray) -> sp.csr_matrix:
    scale = TARGET_SUM / np.maximum(library, 1.0)
    return sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ chunk)


def _weighted_moments(X: sp.csr_matrix, weights: np.ndarray, library: np.ndarray | None):
    """Weighted mean and variance per gene of normalized counts and of their log1p."""
    n_genes = X.shape[1]
    s1 = np.zeros(n_genes)
    s2 = np.zeros(n_genes)
    l1 = np.zeros(n_genes)
    l2 = np.zeros(n_genes)
    total = weights.sum()
    for start, chunk in iter_row_chunks(X):
        w = weights[start : start + chunk.shape[0]]
        values = (
            _normalize_rows(chunk, library[start : start + chunk.shape[0]])
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


def _normalized_dispersion(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Dispersion normalized within bins of equal gene counts (Zheng et al. 2017, Cell Ranger).

    Bins are percentiles of mean expression, and each gene's dispersion is compared with the
    median and MAD of its bin. Equal-count bins matter: with equal-width bins the few most
    expressed genes (hormones, cell-type markers such as INS, GCG, SST) share a bin with
    hardly any others and lose their rank.
    """
    score = np.full(mean.shape, -np.inf)
    expressed = mean > 0
    dispersion = var[expressed] / mean[expressed]
    m = mean[expressed]
    edges = np.unique(np.percentile(m, np.arange(10, 100, 5)))
    bins = np.digitize(m, edges)
    z = np.zeros_like(dispersion)
    for b in np.unique(bins):
        in_bin = bins == b
        median = np.median(dispersion[in_bin])
        mad = np.median(np.abs(dispersion[in_bin] - median))
        z[in_bin] = (dispersion[in_bin] - median) / mad if mad > 0 else 0.0
    score[expressed] = z
    return score


def _class_sums(X: sp.csr_matrix, codes: np.ndarray, n_classes: int, with_spread: bool):
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


def _column_range(X) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene minimum and maximum (implicit zeros included), streamed by rows."""
    lower = upper = None
    for _, chunk in iter_row_chunks(X):
        lo = np.asarray(chunk.min(axis=0).todense()).ravel()
        hi = np.asarray(chunk.max(axis=0).todense()).ravel()
        lower = lo if lower is None else np.minimum(lower, lo)
        upper = hi if upper is None else np.maximum(upper, hi)
    return lower, upper


@dataclass
class GenePanel:
    """Fitted gene selection and gene statistics of a training set.

    Attributes
    ----------
    n_genes : int
        Number of input genes (all are generated).
    likelihood : {"nb", "gaussian"}
    genes : ndarray of int
        Indices of the genes modelled by the networks, sorted.
    center, scale : ndarray
        Standardization of the encoder input (log-normalized counts, or the values).
    rest : ndarray of int
        Indices of the other genes.
    rest_profile : ndarray of shape (n_classes, n_rest)
        Counts: composition of the other genes per class (rows sum to 1).
        Normalized data: mean of the non-zero values per class.
    rest_spread, rest_zero_rate : ndarray of shape (n_classes, n_rest)
        Normalized data only: standard deviation of non-zero values and fraction of zeros.
    lower, upper : ndarray of shape (n_genes,)
        Normalized data only: observed range of each gene, used to clip generated values.
    output_prior : ndarray of shape (n_outputs,)
        Average decoder output (log proportions for counts, zeros for standardized
        values); the decoder's output bias starts there so training does not spend its
        first steps learning average expression.
    """

    n_genes: int
    likelihood: str
    genes: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    rest: np.ndarray
    rest_profile: np.ndarray
    rest_spread: np.ndarray
    rest_zero_rate: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    output_prior: np.ndarray

    @property
    def n_outputs(self) -> int:
        """Decoder outputs: the modelled genes, plus the 'all other genes' total for counts."""
        return len(self.genes) + (1 if self.likelihood == "nb" and len(self.rest) else 0)

    @classmethod
    def fit(
        cls,
        X: sp.csr_matrix,
        codes: np.ndarray,
        n_classes: int,
        weights: np.ndarray,
        library: np.ndarray | None,
        n_top_genes: int | None,
        likelihood: str,
    ) -> GenePanel:
        counts = likelihood == "nb"
        mean, var, log_mean, log_var = _weighted_moments(X, weights, library if counts else None)
        n_top = X.shape[1] if n_top_genes is None else min(n_top_genes, X.shape[1])
        if counts:
            score = _normalized_dispersion(mean, var)
            candidates = np.flatnonzero(mean > 0)
        else:
            score = var.copy()
            candidates = np.flatnonzero(var > 0)
        if len(candidates) == 0:
            raise ValueError(
                "Every gene is constant across the training cells, so there is nothing to "
                "learn. Check that X holds expression values (cells in rows, genes in columns)."
            )
        order = candidates[np.argsort(-score[candidates], kind="stable")]
        genes = np.sort(order[:n_top])
        rest = np.setdiff1d(np.arange(X.shape[1]), genes)
        scale = np.sqrt(log_var[genes])
        scale[scale == 0] = 1.0

        sums, nonzeros, squares = _class_sums(X, codes, n_classes, with_spread=not counts)
        n_c = np.bincount(codes, minlength=n_classes)[:, None].astype(float)
        empty = np.zeros((n_classes, 0))
        if counts:
            rest_sums = sums[:, rest]
            totals = rest_sums.sum(1, keepdims=True)
            profile = np.divide(rest_sums, totals, out=np.zeros_like(rest_sums), where=totals > 0)
            spread, zero_rate = empty, empty
            lower = upper = np.zeros(0)
        else:
            n_nz = nonzeros[:, rest]
            profile = np.divide(sums[:, rest], n_nz, out=np.zeros_like(n_nz), where=n_nz > 0)
            second = np.divide(squares[:, rest], n_nz, out=np.zeros_like(n_nz), where=n_nz > 0)
            spread = np.sqrt(np.maximum(second - profile**2, 0.0))
            zero_rate = 1.0 - n_nz / np.maximum(n_c, 1.0)
            lower, upper = _column_range(X)
        if counts:
            fractions = mean[genes] / TARGET_SUM
            if len(rest):
                fractions = np.append(fractions, max(1.0 - fractions.sum(), 1e-6))
            prior = np.log(np.maximum(fractions, 1e-8))
        else:
            prior = np.zeros(len(genes))
        return cls(
            n_genes=X.shape[1],
            likelihood=likelihood,
            genes=genes.astype(np.int64),
            center=log_mean[genes].astype(np.float32),
            scale=scale.astype(np.float32),
            rest=rest.astype(np.int64),
            rest_profile=profile.astype(np.float64),
            rest_spread=spread.astype(np.float32),
            rest_zero_rate=zero_rate.astype(np.float32),
            lower=lower.astype(np.float32),
            upper=upper.astype(np.float32),
            output_prior=prior.astype(np.float32),
        )

    def modelled(self, X: sp.csr_matrix | CellRows) -> CellRows:
        """The modelled genes' columns of ``X``: all the networks read, a fraction of ``X``.

        Minibatches are densified from these genes only, so a step costs the modelled genes,
        not every input gene. Nothing is copied unless the columns are small (see
        :meth:`~scld_aug.data.CellRows.columns`).
        """
        return cell_rows(X).columns(self.genes)

    def other_totals(self, modelled: CellRows, library: np.ndarray) -> np.ndarray | None:
        """Per cell, the total count of the genes that are not modelled (counts only)."""
        if self.likelihood != "nb" or not len(self.rest):
            return None
        return np.maximum(library - modelled.row_sums(), 0.0)

    def encoder_input(self, values: np.ndarray, library: np.ndarray | None) -> np.ndarray:
        """Standardized encoder input (log-normalized for counts) from dense rows of the
        modelled genes."""
        if self.likelihood == "nb":
            values = np.log1p(values * (TARGET_SUM / np.maximum(library, 1.0))[:, None])
        return ((values - self.center) / self.scale).astype(np.float32)

    def decoder_target(self, values: np.ndarray, other: np.ndarray | None) -> np.ndarray:
        """What the decoder reconstructs from dense rows of the modelled genes: their counts
        (+ the other genes' total, ``other``), or their standardized values."""
        if self.likelihood == "nb":
            if other is not None:
                values = np.concatenate([values, other[:, None]], axis=1)
            return values.astype(np.float32)
        return ((values - self.center) / self.scale).astype(np.float32)

    def state(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state(cls, state: dict) -> GenePanel:
        return cls(**state)
