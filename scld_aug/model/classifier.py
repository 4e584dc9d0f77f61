"""Classifier on noisy latent codes: the source of post-guidance gradients and the filter."""

from __future__ import annotations

import torch
from torch import nn

from scld_aug.model.layers import ResidualBlock, TimestepEmbedding, distinct_rows


class LatentClassifier(nn.Module):
    """Predicts the class of a latent code ``x_t`` noised to timestep ``t``."""

    def __init__(
        self, latent_dim: int, n_classes: int, hidden_dim: int = 256, n_blocks: int = 2
    ) -> None:
        super().__init__()
        self.time_embedding = TimestepEmbedding(128, hidden_dim)
        self.input = nn.Linear(latent_dim, hidden_dim)
        self.blocks = nn.ModuleList(
            [ResidualBlock(hidden_dim, hidden_dim, 0.1) for _ in range(n_blocks)]
        )
        self.output = nn.Sequential(
            nn.LayerNorm(hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, n_classes)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        (t,), index = distinct_rows(t)
        cond = self.time_embedding(t)
        h = self.input(x)
        for block in self.blocks:
            h = block(h, cond, index)
        return self.output(h)
