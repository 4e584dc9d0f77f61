"""Raw counts: a negative binomial decoder on library size x gene proportions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch

from scld_aug.likelihoods.base import GeneStatistics, Likelihood
from scld_aug.statistics import TARGET_SUM, class_sums, weighted_moments

if TYPE_CHECKING:
    pass


def negative_binomial_log_prob(
    x: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor
) -> torch.Tensor:
    """Log-probability of counts ``x`` under NB(mean=exp(log_mu), inverse dispersion=exp(log_theta)).

    Written in log space so that tiny means (lowly expressed genes) stay finite.
    """
    theta = log_theta.exp()
    log_theta_mu = torch.logaddexp(log_theta, log_mu)
    return (
        theta * (log_theta - log_theta_mu)
        + x * (log_mu - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
    )


def normalized_dispersion(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
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


def _sorted_csr(parts: list[np.ndarray], columns: np.ndarray, n_genes: int) -> sp.csr_matrix:
    """Canonical CSR (float64) of dense integer blocks side by side whose columns are the
    genes ``columns``, without copying the blocks into gene order: only the nonzero mask is
    reordered, and the values are gathered from their block."""
    order = np.argsort(columns, kind="stable")
    mask = np.concatenate([part != 0 for part in parts], axis=1)[:, order]
    rows, position = np.nonzero(mask)  # row-major: rows ascending, genes ascending within
    source = order[position]
    data = np.empty(len(rows))
    start = 0
    for part in parts:
        mine = (source >= start) & (source < start + part.shape[1])
        data[mine] = part[rows[mine], source[mine] - start]
        start += part.shape[1]
    indptr = np.zeros(mask.shape[0] + 1, dtype=np.int64)
    np.cumsum(mask.sum(axis=1), out=indptr[1:])
    return sp.csr_matrix((data, columns[source], indptr), shape=(mask.shape[0], n_genes))


class NegativeBinomial(Likelihood):
    """Counts of each modelled gene are NB with mean library size x the decoder's softmax
    proportion and a gene-wise inverse dispersion. The decoder has one more output, the
    total of all other genes, which decoding splits over them by the class's observed
    composition (multinomial). Genes are chosen by dispersion normalized within bins of
    mean expression; the encoder reads log-normalized counts."""

    name = "nb"
    counts = True
    uses_library = True
    dispersion_init = 1.0  # inverse dispersion theta = e

    def check_values(self, values: np.ndarray) -> None:
        if (values < 0).any():
            raise ValueError(
                f"likelihood='nb' needs raw counts, but X has negative values (min "
                f"{values.min():g}). Pass raw counts (e.g. adata.layers['counts']) or use "
                "likelihood='gaussian' for normalized or scaled data."
            )
        fractional = values != np.round(values)
        if fractional.any():
            raise ValueError(
                f"likelihood='nb' needs integer counts, but X has non-integer values "
                f"(e.g. {values[fractional][0]:g}). Pass raw counts, or use "
                "likelihood='gaussian' for log-normalized data."
            )

    def output_dtype(self, input_dtype: np.dtype, output: str) -> np.dtype:
        if output == "mean" and not np.issubdtype(input_dtype, np.floating):
            return np.dtype(np.float64)
        return np.dtype(input_dtype)

    def gene_statistics(self, X, weights, library):
        mean, var, log_mean, log_var = weighted_moments(X, weights, library)
        score = normalized_dispersion(mean, var)
        return GeneStatistics(mean, var, log_mean, log_var, score, np.flatnonzero(mean > 0))

    def other_genes(self, X, codes, n_classes, rest):
        sums, _, _ = class_sums(X, codes, n_classes, with_spread=False)
        rest_sums = sums[:, rest]
        totals = rest_sums.sum(1, keepdims=True)
        profile = np.divide(rest_sums, totals, out=np.zeros_like(rest_sums), where=totals > 0)
        empty = np.zeros((n_classes, 0))
        return dict(
            rest_profile=profile,
            rest_spread=empty,
            rest_zero_rate=empty,
            lower=np.zeros(0),
            upper=np.zeros(0),
        )

    def n_outputs(self, n_genes, n_rest):
        return n_genes + (1 if n_rest else 0)

    def output_prior(self, mean, n_rest):
        fractions = mean / TARGET_SUM
        if n_rest:
            fractions = np.append(fractions, max(1.0 - fractions.sum(), 1e-6))
        return np.log(np.maximum(fractions, 1e-8))

    def other_totals(self, library, modelled_totals):
        return np.maximum(library - modelled_totals, 0.0)

    def encoder_input(self, values, library, panel):
        values = np.log1p(values * (TARGET_SUM / np.maximum(library, 1.0))[:, None])
        return ((values - panel.center) / panel.scale).astype(np.float32)

    def decoder_target(self, values, other, panel):
        if other is not None:
            values = np.concatenate([values, other[:, None]], axis=1)
        return values.astype(np.float32)

    def transform(self, out):
        return torch.log_softmax(out, dim=-1)

    def log_likelihood(self, decoded, target, log_dispersion, library):
        log_mu = decoded + library.log()[:, None]
        return negative_binomial_log_prob(target, log_mu, log_dispersion).sum(-1)

    def decode(self, decoded, dispersion, panel, code, output, rng, libraries: Any):
        n = len(decoded)
        library = rng.choice(libraries, size=n, replace=True)
        mu = library[:, None] * np.exp(decoded)
        if output == "mean":
            cells = np.zeros((n, panel.n_genes))
            cells[:, panel.genes] = mu[:, : len(panel.genes)]
            if len(panel.rest):
                cells[:, panel.rest] = mu[:, -1:] * panel.rest_profile[code]
            return cells
        # Counts are sparse, so the block is built as CSR: no dense rows over all genes.
        rate = rng.gamma(dispersion, mu / dispersion)
        modelled = len(panel.genes)
        genes, counts = [panel.genes], [rng.poisson(rate[:, :modelled])]
        profile = panel.rest_profile[code] if len(panel.rest) else np.zeros(0)
        if profile.sum() > 0:
            # The other genes' total is Poisson(rate) split by the class's profile, which is
            # the same as independent Poisson counts at each gene's share of the rate: drawn
            # that way, in one vectorized call, and only for genes the class expresses.
            expressed = np.flatnonzero(profile)
            genes.append(panel.rest[expressed])
            counts.append(rng.poisson(rate[:, modelled:] * profile[expressed]))
        return _sorted_csr(counts, np.concatenate(genes), panel.n_genes)
