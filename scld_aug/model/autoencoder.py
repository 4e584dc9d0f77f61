"""Autoencoder that compresses expression into the latent space the diffusion model learns."""

from __future__ import annotations

import torch
from torch import nn

from scld_aug import likelihoods
from scld_aug.model.layers import StochasticModule, mlp


class Autoencoder(StochasticModule):
    """MLP encoder and decoder with the likelihood of :mod:`scld_aug.likelihoods` named
    ``likelihood``.

    For counts (``"nb"``) the decoder outputs gene proportions (softmax); the mean of each
    gene is library size x proportion, and a gene-wise inverse dispersion is learned. For
    ``"gaussian"`` the decoder outputs the (standardized) expression mean and a gene-wise
    standard deviation is learned.

    With ``variational=True`` the encoder also outputs a per-cell log-variance: a cell is
    encoded as a Gaussian posterior ``N(mean, var)`` (a VAE; the KL term to ``N(0, I)`` is
    weighted by the caller), and training decodes a draw from it, taken from
    :attr:`generator` (:class:`~scld_aug.model.layers.StochasticModule`), as are the
    dropout masks of its layers. ``encode`` always returns the posterior mean.
    """

    def __init__(
        self,
        n_input: int,
        n_output: int,
        latent_dim: int = 32,
        hidden_dim: int = 256,
        likelihood: str = "nb",
        dropout: float = 0.1,
        variational: bool = False,
    ) -> None:
        super().__init__()
        self.likelihood = likelihood
        self.distribution = likelihoods.get(likelihood)
        self.encoder = mlp([n_input, hidden_dim, hidden_dim, latent_dim], dropout)
        self.decoder = mlp([latent_dim, hidden_dim, hidden_dim, n_output], dropout)
        # The mean keeps the plain encoder's layers, so deterministic generators load as before.
        self.encoder_log_var = nn.Linear(hidden_dim, latent_dim) if variational else None
        # NB: log inverse dispersion; Gaussian: log standard deviation.
        self.log_dispersion = nn.Parameter(torch.empty(n_output))
        self.init_fixed_parameters()

    def init_fixed_parameters(self) -> None:
        """Start every gene's dispersion at the likelihood's default."""
        with torch.no_grad():
            self.log_dispersion.fill_(self.distribution.dispersion_init)

    @property
    def variational(self) -> bool:
        return self.encoder_log_var is not None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent code (the posterior mean when variational)."""
        return self.encoder(x)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of the encoder's posterior (log-variance -inf when not
        variational: a point mass)."""
        if self.encoder_log_var is None:
            mean = self.encoder(x)
            return mean, torch.full_like(mean, -torch.inf)
        h = self.encoder[:-1](x)
        # Bounded: exp() of an untrained head must not overflow.
        return self.encoder[-1](h), self.encoder_log_var(h).clamp(-12.0, 6.0)

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
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        library: torch.Tensor | None = None,
        kl_weight: float = 0.0,
    ) -> torch.Tensor:
        """Mean per-cell negative log-likelihood, plus ``kl_weight`` x KL(posterior || N(0, I))
        when variational (the negative evidence lower bound at ``kl_weight=1``)."""
        if self.encoder_log_var is None:
            return -self.log_likelihood(self.decode(self.encode(x)), target, library).mean()
        mean, log_var = self.posterior(x)
        noise = torch.randn(
            mean.shape, generator=self.training_generator(), device=mean.device, dtype=mean.dtype
        )
        z = mean + noise * (0.5 * log_var).exp()
        nll = -self.log_likelihood(self.decode(z), target, library)
        kl = 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(-1)
        return (nll + kl_weight * kl).mean()

    def forward(
        self,
        x: torch.Tensor,
        target: torch.Tensor,
        library: torch.Tensor | None = None,
        kl_weight: float = 0.0,
    ) -> torch.Tensor:
        """The training loss, as training calls it: DDP averages the gradients of work
        done in ``forward`` only."""
        return self.loss(x, target, library, kl_weight)
