"""Building blocks shared by the networks, and their random numbers.

Training draws every random number of the networks (initial weights, dropout masks,
posterior samples) from ``torch.Generator`` objects it owns, never from torch's global
generator: that one is shared by every thread of the process, so two fits running in
threads would draw from one stream, and seeding it would change what the caller's own code
draws. :func:`reset_parameters` initializes a network from a generator;
:class:`StochasticModule` is a network part that draws while training, from the generator
:func:`use_generator` gives it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn


class StochasticModule(nn.Module):
    """A module that draws random numbers while it trains, from :attr:`generator`.

    The training code sets :attr:`generator` (:func:`use_generator`) for as long as it
    trains; a module asked to draw without one raises instead of falling back on torch's
    global generator.
    """

    #: Where training draws come from; on the device of the module's tensors.
    generator: torch.Generator | None = None

    def training_generator(self) -> torch.Generator:
        """:attr:`generator`, or a RuntimeError saying it is missing."""
        if self.generator is None:
            raise RuntimeError(
                f"{type(self).__name__} draws random numbers in training mode from its own "
                "generator, and none is set: train it inside "
                "scld_aug.model.layers.use_generator(module, generator)."
            )
        return self.generator


class Dropout(StochasticModule):
    """``nn.Dropout`` whose masks come from :attr:`generator`.

    Identical to ``nn.Dropout`` in evaluation mode (the input itself) and with ``p=0``; in
    training, each element is kept with probability ``1 - p`` and scaled by ``1 / (1 - p)``,
    the arithmetic of ``nn.Dropout`` on the CPU, so the output has the input's expectation.

    Parameters
    ----------
    p : float, default=0.5
        Probability that an element is zeroed, in [0, 1).

    Examples
    --------
    >>> layer = Dropout(0.5).train()
    >>> x = torch.ones(2, 4)
    >>> with use_generator(layer, torch.Generator().manual_seed(0)):
    ...     y = layer(x)
    >>> set(y.flatten().tolist()) <= {0.0, 2.0}  # dropped, or kept and scaled by 1 / (1 - p)
    True
    >>> torch.equal(layer.eval()(x), x)
    True
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty_like(x).bernoulli_(keep, generator=self.training_generator())
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@contextlib.contextmanager
def use_generator(module: nn.Module, generator: torch.Generator) -> Iterator[nn.Module]:
    """Let every :class:`StochasticModule` in ``module`` draw from ``generator`` inside the
    block; afterwards they have none again.

    They do not keep it: a trained network then pickles and copies without a generator,
    and cannot draw from a stream that belonged to a finished fit.
    """
    parts = [m for m in module.modules() if isinstance(m, StochasticModule)]
    for part in parts:
        part.generator = generator
    try:
        yield module
    finally:
        for part in parts:
            part.generator = None


def reset_parameters(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Initialize every parameter of ``module`` in place from ``generator``; returns it.

    Layers get PyTorch's default initialization, drawn from ``generator`` instead of the
    global generator: ``nn.Linear`` Kaiming-uniform weights (``a=sqrt(5)``) and biases
    uniform in ``+-1/sqrt(fan_in)``, ``nn.Embedding`` standard normal weights, ``nn.LayerNorm``
    ones and zeros. Then every module with an ``init_fixed_parameters()`` method sets the
    parameters it gives fixed values (zeroed output layers, starting dispersions); such a
    method must set every parameter of the module's own that is not in one of those layers.
    Any other module with parameters of its own raises a TypeError, so that a new kind of
    layer cannot silently keep uninitialized memory or an initialization from the global
    generator.

    The draws are those of PyTorch's own initialization from a global generator seeded as
    ``generator`` is, layer by layer in the order of ``module.modules()``.

    Parameters
    ----------
    module : torch.nn.Module
        Its parameters may be uninitialized (``module.to_empty(device=...)``).
    generator : torch.Generator
        On the device of the parameters.

    Returns
    -------
    torch.nn.Module
        ``module``.

    Examples
    --------
    >>> with torch.device("meta"):  # built without drawing from the global generator
    ...     layers = [nn.Linear(4, 2) for _ in range(2)]
    >>> a, b = (reset_parameters(m.to_empty(device="cpu"), torch.Generator().manual_seed(3))
    ...         for m in layers)
    >>> torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    True
    """
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                if layer.bias is not None:
                    fan_in = layer.weight.shape[1]
                    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
            elif isinstance(layer, nn.Embedding):
                nn.init.normal_(layer.weight, generator=generator)
                if layer.padding_idx is not None:
                    layer.weight[layer.padding_idx].zero_()
            elif isinstance(layer, nn.LayerNorm):
                layer.reset_parameters()  # ones and zeros: nothing random
            elif next(layer.parameters(recurse=False), None) is not None and not hasattr(
                layer, "init_fixed_parameters"
            ):
                raise TypeError(f"no initialization from a generator for {type(layer).__name__}")
        for layer in module.modules():
            if hasattr(layer, "init_fixed_parameters"):
                layer.init_fixed_parameters()
    return module


def mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers with LayerNorm + SiLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers += [nn.LayerNorm(n_out), nn.SiLU()]
            if dropout > 0:
                layers.append(Dropout(dropout))
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
        self.dropout = Dropout(dropout)
        self.fc2 = nn.Linear(dim, dim)
        self.init_fixed_parameters()

    def init_fixed_parameters(self) -> None:
        """Zero the output layer: a new block is the identity, so a deep stack trains as a
        shallow one at first."""
        with torch.no_grad():
            self.fc2.weight.zero_()
            self.fc2.bias.zero_()

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
