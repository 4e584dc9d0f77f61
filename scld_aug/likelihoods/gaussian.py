"""Normalized or scaled values: a Gaussian decoder on standardized expression."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from scld_aug.likelihoods.base import GeneStatistics, Likelihood
from scld_aug.statistics import class_sums, column_range, weighted_moments


class Gaussian(Likelihood):
    """Each modelled gene is normal around the decoder's (standardized) mean with a
    gene-wise standard deviation. Each other gene is zero at the class's observed zero rate
    and otherwise normal with the class's mean and spread of non-zero values; generated
    values stay within each gene's observed range. Genes are chosen by variance."""

    name = "gaussian"

    def output_dtype(self, input_dtype: np.dtype, output: str) -> np.dtype:
        if not np.issubdtype(input_dtype, np.floating):
            return np.dtype(np.float64)
        return np.dtype(input_dtype)

    def check_output(self, output: str) -> None:
        if output == "counts":
            raise ValueError(
                "output='counts' needs a generator trained on counts (likelihood='nb'); this "
                "one models normalized values. Use output='sample' or 'mean'."
            )

    def gene_statistics(self, X, weights, library):
        mean, var, log_mean, log_var = weighted_moments(X, weights, None)
        return GeneStatistics(mean, var, log_mean, log_var, var.copy(), np.flatnonzero(var > 0))

    def other_genes(self, X, codes, n_classes, rest):
        sums, nonzeros, squares = class_sums(X, codes, n_classes, with_spread=True)
        n_c = np.bincount(codes, minlength=n_classes)[:, None].astype(float)
        n_nz = nonzeros[:, rest]
        profile = np.divide(sums[:, rest], n_nz, out=np.zeros_like(n_nz), where=n_nz > 0)
        second = np.divide(squares[:, rest], n_nz, out=np.zeros_like(n_nz), where=n_nz > 0)
        lower, upper = column_range(X)
        return dict(
            rest_profile=profile,
            rest_spread=np.sqrt(np.maximum(second - profile**2, 0.0)),
            rest_zero_rate=1.0 - n_nz / np.maximum(n_c, 1.0),
            lower=lower,
            upper=upper,
            rest_overdispersion=np.zeros(0),
        )

    def output_prior(self, mean, n_rest):
        return np.zeros(len(mean))

    def encoder_input(self, values, library, panel):
        return ((values - panel.center) / panel.scale).astype(np.float32)

    def decoder_target(self, values, other, panel):
        return ((values - panel.center) / panel.scale).astype(np.float32)

    def log_likelihood(self, decoded, target, log_dispersion, library):
        log_sigma = log_dispersion
        z = (target - decoded) / log_sigma.exp()
        return (-0.5 * z**2 - log_sigma - 0.5 * math.log(2 * math.pi)).sum(-1)

    def decode(self, decoded, dispersion, panel, code, output, generator, libraries: Any):
        n, device = decoded.shape[0], decoded.device

        def tensor(values: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(values, dtype=torch.float32, device=device)

        def normal(shape: tuple[int, int]) -> torch.Tensor:
            return torch.randn(shape, generator=generator, device=device)

        cells = torch.zeros(n, panel.n_genes, device=device)
        scale = tensor(panel.scale)
        values = decoded * scale + tensor(panel.center)
        if output != "mean":
            values += normal(values.shape) * dispersion * scale
        cells[:, torch.as_tensor(panel.genes, device=device)] = values
        if len(panel.rest):
            rest = torch.as_tensor(panel.rest, device=device)
            zero_rate = tensor(panel.rest_zero_rate[code])
            loc, spread = tensor(panel.rest_profile[code]), tensor(panel.rest_spread[code])
            if output == "mean":
                cells[:, rest] = (1 - zero_rate) * loc
            else:
                draws = loc + spread * normal((n, len(panel.rest)))
                zero = torch.rand((n, len(panel.rest)), generator=generator, device=device)
                cells[:, rest] = torch.where(zero < zero_rate, 0.0, draws)
        cells = torch.clamp(cells, tensor(panel.lower), tensor(panel.upper))
        return cells.cpu().double().numpy()
