"""Raw counts: a negative binomial decoder on library size x gene proportions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch

from scld_aug.likelihoods.base import GeneStatistics, Likelihood, holding_counts
from scld_aug.statistics import TARGET_SUM, class_composition, weighted_moments

if TYPE_CHECKING:
    from scld_aug.genes import GenePanel


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


def _count_layout(
    panel: GenePanel, code: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each drawn column goes: the genes drawn for class ``code`` (the modelled ones
    and the other genes the class expresses) in ascending order, the other genes' shares of
    the "all other genes" total and their overdispersions at their positions (zero at
    modelled genes), and the positions of the modelled genes. Drawing in gene order lets
    the nonzero entries come out as canonical CSR directly."""
    profile = panel.rest_profile[code] if len(panel.rest) else np.zeros(0)
    expressed = np.flatnonzero(profile)
    columns = np.concatenate([panel.genes, panel.rest[expressed]])
    order = np.argsort(columns, kind="stable")
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    rest_at = position[len(panel.genes) :]
    shares = np.zeros(len(columns), dtype=np.float32)
    shares[rest_at] = profile[expressed]
    overdispersion = np.zeros(len(columns), dtype=np.float32)
    if len(panel.rest_overdispersion):
        overdispersion[rest_at] = panel.rest_overdispersion[expressed]
    return (
        torch.as_tensor(columns[order], device=device),
        torch.as_tensor(shares, device=device),
        torch.as_tensor(position[: len(panel.genes)], device=device),
        torch.as_tensor(overdispersion, device=device),
    )


def _csr(counts: torch.Tensor, columns: torch.Tensor, n_genes: int) -> sp.csr_matrix:
    """Canonical CSR (float64) of ``counts``, whose columns are the ascending genes
    ``columns``; found on the counts' device, so only the nonzero entries are copied."""
    rows, position = torch.nonzero(counts, as_tuple=True)  # row-major: genes ascend per row
    values = counts[rows, position].double()
    indptr = torch.zeros(counts.shape[0] + 1, dtype=torch.long, device=counts.device)
    torch.cumsum(torch.bincount(rows, minlength=counts.shape[0]), 0, out=indptr[1:])
    return sp.csr_matrix(
        (values.cpu().numpy(), columns[position].cpu().numpy(), indptr.cpu().numpy()),
        shape=(counts.shape[0], n_genes),
    )


def _add_logarithmic_sums(
    counts: torch.Tensor,
    mean_phi: torch.Tensor,
    overdispersed: torch.Tensor,
    generator: torch.Generator,
) -> None:
    """In the columns marked ``overdispersed``, replace each count ``k`` by the sum of ``k`` draws of the
    logarithmic distribution with parameter ``q = m / (1 + m)``, ``m = mean_phi``: with
    ``k`` Poisson of mean ``log1p(m) / phi``, the sum is negative binomial with mean
    ``m / phi`` and overdispersion ``phi`` (Quenouille). Each draw is Kemp's
    ``floor(1 + log V / log(1 - (1 - q)^U))``; ``log(1 - q) = -log1p(m)`` has no
    cancellation however large ``m`` is."""
    rows, cols = torch.nonzero(counts * overdispersed, as_tuple=True)
    if not len(rows):
        return
    device = counts.device
    remaining = counts[rows, cols]
    log_keep = -torch.log1p(mean_phi[rows, cols])

    def draws(log_keep: torch.Tensor) -> torch.Tensor:
        u = torch.rand(len(log_keep), generator=generator, device=device)
        v = 1.0 - torch.rand(len(log_keep), generator=generator, device=device)
        return torch.floor(1.0 + v.log() / torch.log1p(-(u * log_keep).exp()))

    # Every entry has at least one draw; few have more, so later rounds index a short list.
    total = draws(log_keep)
    more = torch.nonzero(remaining > 1).squeeze(1)
    remaining, log_keep = remaining[more] - 1, log_keep[more]
    while len(more):
        total.index_add_(0, more, draws(log_keep))
        left = remaining > 1
        more, remaining, log_keep = more[left], remaining[left] - 1, log_keep[left]
    counts[rows, cols] = total


class NegativeBinomial(Likelihood):
    """Counts of each modelled gene are NB with mean library size x the decoder's softmax
    proportion and a gene-wise inverse dispersion. The decoder has one more output, the
    total of all other genes, which decoding splits over them by the class's observed
    composition, each gene with its observed overdispersion (gamma-Poisson). Genes are
    chosen by dispersion normalized within bins of mean expression; the encoder reads
    log-normalized counts."""

    name = "nb"
    counts = True
    uses_library = True
    dispersion_init = 1.0  # inverse dispersion theta = e

    def check_values(self, non_count: np.generic | None) -> None:
        from scld_aug.data import non_count_message

        if non_count is not None:
            raise ValueError(
                f"likelihood='nb' models raw counts, but {non_count_message(non_count)}. Pass "
                "raw counts (e.g. adata.layers['counts']) or use likelihood='gaussian' for "
                "normalized or scaled data."
            )

    def output_dtype(self, input_dtype: np.dtype, output: str) -> np.dtype:
        if output == "mean" and not np.issubdtype(input_dtype, np.floating):
            return np.dtype(np.float64)
        return holding_counts(input_dtype)

    def gene_statistics(self, X, weights, library):
        mean, var, log_mean, log_var = weighted_moments(X, weights, library)
        score = normalized_dispersion(mean, var)
        return GeneStatistics(mean, var, log_mean, log_var, score, np.flatnonzero(mean > 0))

    def other_genes(self, X, codes, n_classes, rest):
        profile, overdispersion = class_composition(X, codes, n_classes, rest)
        empty = np.zeros((n_classes, 0))
        return dict(
            rest_profile=profile,
            rest_overdispersion=overdispersion,
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

    def decode(self, decoded, dispersion, panel, code, output, generator, libraries: Any):
        n, device = decoded.shape[0], decoded.device
        libraries = torch.as_tensor(libraries, dtype=torch.float32, device=device)
        picks = torch.randint(len(libraries), (n,), generator=generator, device=device)
        mu = libraries[picks, None] * decoded.exp()
        if output == "mean":
            mu = mu.double().cpu().numpy()
            cells = np.zeros((n, panel.n_genes))
            cells[:, panel.genes] = mu[:, : len(panel.genes)]
            if len(panel.rest):
                cells[:, panel.rest] = mu[:, -1:] * panel.rest_profile[code]
            return cells
        # NB as a gamma-Poisson mixture. torch.distributions has no generator argument, so
        # the gamma draws come from the primitive it uses.
        rate = torch._standard_gamma(dispersion.expand(n, -1), generator=generator)
        rate *= mu / dispersion
        columns, shares, modelled_at, overdispersion = _count_layout(panel, code, device)
        modelled = len(panel.genes)
        # The other genes' total is Poisson(rate) split by the class's profile, which is the
        # same as independent Poisson counts at each gene's share of the rate: drawn that
        # way, in one call with the modelled genes, and only for genes the class expresses.
        # Genes with an overdispersion phi are negative binomial around their share instead
        # (real cells vary around their type's composition more than Poisson counts do).
        mean_phi = None
        if rate.shape[1] > modelled:
            full = rate[:, modelled:] * shares
            if bool((overdispersion > 0).any()):
                # NB as a Poisson number of logarithmic-series draws: the Poisson mean,
                # log1p(mean x phi) / phi, is at most the NB mean, so only the nonzero
                # entries need more draws (a gamma draw per entry costs 4x a Poisson one).
                # Where phi = 0 the division gives nan, which `where` discards.
                mean_phi = full * overdispersion
                full = torch.where(overdispersion > 0, torch.log1p(mean_phi) / overdispersion, full)
        else:
            full = torch.zeros(n, len(columns), device=device)
        full[:, modelled_at] = rate[:, :modelled]
        counts = torch.poisson(full, generator=generator)
        if mean_phi is not None:
            _add_logarithmic_sums(counts, mean_phi, overdispersion > 0, generator)
        return _csr(counts, columns, panel.n_genes)
