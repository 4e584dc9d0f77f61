"""Autoencoder that compresses expression into the latent space the diffusion model learns."""

from __future__ import annotations

import torch
from torch import nn

from scld_aug import likelihoods
from scld_aug.model.layers import mlp


class Autoencoder(nn.Module):
    """MLP encoder and decoder with the likelihood of :mod:`scld_aug.likelihoods` named
    ``likelihood``.

    For counts (``"nb"``) the decoder outputs gene proportions (softmax); the mean of each
    gene is library size x proportion, and a gene-wise inverse dispersion is learned. For
    ``"gaussian"`` the decoder outputs the (standardized) expression mean and a gene-wise
    standard deviation is learned.
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
        self.likelihood = likelihood
        self.distribution = likelihoods.get(likelihood)
        self.encoder = mlp([n_input, hidden_dim, hidden_dim, latent_dim], dropout)
        self.decoder = mlp([latent_dim, hidden_dim, hidden_dim, n_output], dropout)
        # NB: log inverse dispersion; Gaussian: log standard deviation.
        self.log_dispersion = nn.Parameter(
            torch.full((n_output,), self.distribution.dispersion_init)
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output: log proportions (NB) or standardized means (Gaussian)."""
        return self.distribution.transform(self.decoder(z))

    def log_likelihood(
        self, decoded: torch.Tensor, target: torch.Tensor, library: torch.Tensor | None
    ) -> torch.Tensor:
        """Per-cell log-likelihood of ``target`` given decoder output."""
        decoded = decoded.float()  # float32 even when the networks run in bfloat16
        return self.distribution.log_likelihood(decoded, target, self.log_dispersion, library)

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
