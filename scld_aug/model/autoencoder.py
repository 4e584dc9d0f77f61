"""Autoencoder that compresses expression into the latent space the diffusion model learns."""

from __future__ import annotations

import math

import torch
from torch import nn

from scld_aug.model.layers import mlp

LIKELIHOODS = ("nb", "gaussian")


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


class Autoencoder(nn.Module):
    """MLP encoder and decoder with a count (NB) or Gaussian likelihood.

    With ``likelihood="nb"`` the decoder outputs gene proportions (softmax); the mean of
    each gene is library size x proportion, and a gene-wise inverse dispersion is learned.
    With ``likelihood="gaussian"`` the decoder outputs the (standardized) expression mean
    and a gene-wise standard deviation is learned.
    """

    def __init__(
        self,
        n_input: int,
        n_output: int,
        latent_dim: int = 32,
        hidden_dim: int = 256,
        likelihood: str = "nb",
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}.")
        self.likelihood = likelihood
        self.encoder = mlp([n_input, hidden_dim, hidden_dim, latent_dim], dropout)
        self.decoder = mlp([latent_dim, hidden_dim, hidden_dim, n_output], dropout)
        # NB: log inverse dispersion (starts at theta = e); Gaussian: log standard deviation.
        init = 1.0 if likelihood == "nb" else 0.0
        self.log_dispersion = nn.Parameter(torch.full((n_output,), init))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output: log proportions (NB) or standardized means (Gaussian)."""
        out = self.decoder(z)
        return torch.log_softmax(out, dim=-1) if self.likelihood == "nb" else out

    def log_likelihood(
        self, decoded: torch.Tensor, target: torch.Tensor, library: torch.Tensor | None
    ) -> torch.Tensor:
        """Per-cell log-likelihood of ``target`` given decoder output."""
        decoded = decoded.float()  # float32 even when the networks run in bfloat16
        if self.likelihood == "nb":
            log_mu = decoded + library.log()[:, None]
            return negative_binomial_log_prob(target, log_mu, self.log_dispersion).sum(-1)
        log_sigma = self.log_dispersion
        z = (target - decoded) / log_sigma.exp()
        return (-0.5 * z**2 - log_sigma - 0.5 * math.log(2 * math.pi)).sum(-1)

    def loss(
        self, x: torch.Tensor, target: torch.Tensor, library: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean negative log-likelihood per cell (the reconstruction loss)."""
        return -self.log_likelihood(self.decode(self.encode(x)), target, library).mean()

    def forward(
        self, x: torch.Tensor, target: torch.Tensor, library: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The reconstruction loss, as training calls it: DDP averages the gradients of
        work done in ``forward`` only."""
        return self.loss(x, target, library)
