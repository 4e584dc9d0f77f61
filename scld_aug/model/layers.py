"""Building blocks shared by the denoiser and the latent classifier."""

from __future__ import annotations

import math

import torch
from torch import nn


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers with LayerNorm + SiLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers += [nn.LayerNorm(n_out), nn.SiLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class TimestepEmbedding(nn.Module):
    """Sinusoidal embedding of integer timesteps followed by a small MLP."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.proj = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(
            -math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half
        )
        angles = t.float()[:, None] * freqs[None, :]
        return self.proj(torch.cat([angles.sin(), angles.cos()], dim=-1))


def distinct_rows(*keys: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """The distinct combinations of integer ``keys`` (e.g. timestep and class) and each
    row's index into them, when that saves work; else the keys unchanged and None.

    A sampling batch shares one timestep and one or two classes, so the conditioning
    networks (timestep MLP, FiLM layers: ~45% of the denoiser's multiply-adds per row) need
    to run on those few combinations only. In training every row has its own timestep and
    gradients flow through every row, so nothing is merged there (and shapes stay static
    for ``torch.compile``).
    """
    if torch.is_grad_enabled() or len(keys[0]) < 64:
        return list(keys), None
    bases = [int(k.max()) + 1 for k in keys]
    combined = torch.zeros_like(keys[0])
    for key, base in zip(keys, bases, strict=True):
        combined = combined * base + key
    distinct, index = torch.unique(combined, return_inverse=True)
    if len(distinct) * 4 > len(combined):
        return list(keys), None
    parts = []
    for base in reversed(bases):
        parts.append(distinct % base)
        distinct = distinct // base
    return parts[::-1], index


class ResidualBlock(nn.Module):
    """Pre-norm residual MLP block modulated by a conditioning vector (FiLM)."""

    def __init__(self, dim: int, cond_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim)
        self.film = nn.Linear(cond_dim, 2 * dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(dim, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(
        self, h: torch.Tensor, cond: torch.Tensor, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``cond`` holds one row per row of ``h``, or, with ``index``, the distinct
        conditioning rows, row ``i`` of ``h`` taking ``cond[index[i]]``."""
        scale, shift = self.film(cond).chunk(2, dim=-1)
        scale = 1 + scale
        if index is not None:
            scale, shift = scale[index], shift[index]
        x = self.fc1(nn.functional.silu(self.norm1(h)))
        x = torch.addcmul(shift, self.norm2(x), scale)
        x = self.fc2(self.dropout(nn.functional.silu(x)))
        return h + x
