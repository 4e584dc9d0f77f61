"""Normalized or scaled values: a Gaussian decoder on standardized expression."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

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

    def decode(self, decoded, dispersion, panel, code, output, rng, libraries: Any):
        n = len(decoded)
        cells = np.zeros((n, panel.n_genes))
        mean = decoded * panel.scale + panel.center
        if output == "mean":
            values = mean
        else:
            values = mean + rng.standard_normal(mean.shape) * dispersion * panel.scale
        cells[:, panel.genes] = values
        if len(panel.rest):
            zero_rate = panel.rest_zero_rate[code]
            loc, spread = panel.rest_profile[code], panel.rest_spread[code]
            if output == "mean":
                cells[:, panel.rest] = (1 - zero_rate) * loc
            else:
                draws = loc + spread * rng.standard_normal((n, len(panel.rest)))
                cells[:, panel.rest] = np.where(
                    rng.random((n, len(panel.rest))) < zero_rate, 0.0, draws
                )
        return np.clip(cells, panel.lower, panel.upper)
