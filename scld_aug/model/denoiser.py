"""Noise-prediction network for latent diffusion: residual MLP with time and class embeddings."""

from __future__ import annotations

import torch
from torch import nn

from scld_aug.model.layers import ResidualBlock, TimestepEmbedding, distinct_rows


class Denoiser(nn.Module):
    """Predicts the noise added to a latent code, conditioned on timestep and class.

    Class index ``n_classes`` is the learned "null" class used for classifier-free
    guidance: training drops labels to it, sampling contrasts it with the target class.
    """

    def __init__(
        self,
        latent_dim: int,
        n_classes: int,
        hidden_dim: int = 256,
        n_blocks: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.time_embedding = TimestepEmbedding(128, hidden_dim)
        self.class_embedding = nn.Embedding(n_classes + 1, hidden_dim)
        self.input = nn.Linear(latent_dim, hidden_dim)
        self.blocks = nn.ModuleList(
            [ResidualBlock(hidden_dim, hidden_dim, dropout) for _ in range(n_blocks)]
        )
        self.output = nn.Sequential(
            nn.LayerNorm(hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, latent_dim)
        )
        self.init_fixed_parameters()

    def init_fixed_parameters(self) -> None:
        """Zero the output layer: an untrained denoiser predicts no noise."""
        with torch.no_grad():
            self.output[-1].weight.zero_()
            self.output[-1].bias.zero_()

    @property
    def null_class(self) -> int:
        return self.n_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        (t, y), index = distinct_rows(t, y)
        cond = self.time_embedding(t) + self.class_embedding(y)
        h = self.input(x)
        for block in self.blocks:
            h = block(h, cond, index)
        return self.output(h)
