"""Latent interpolation: spread a class's sampled codes between its training codes.

A diffusion model trained on a class of a few cells (class-balanced minibatches show them
thousands of times) learns those cells' latent codes almost exactly: its samples of a
10-cell class sit about a tenth as far from the nearest training code as the training codes
are from each other, so the decoded cells vary only by count noise around ten points.
Interpolation moves each sampled code a uniform random fraction, up to ``level``, of the
way toward a random training code of its class: SMOTE between the class's cells, in the
autoencoder's latent space, decoded into count cells by the generator.

``"auto"`` interpolates a class fully (``level`` 1) when its sampled codes are memorized:
:func:`latent_novelty` below :data:`MEMORIZED`, i.e. the codes sit less than half as far
from the class's training codes as those are from each other. It leaves classes the model
generalizes alone, and those of a variational encoder (trained on draws of each cell's
posterior, its codes are not copies), where interpolation lowered logistic regression on
PBMC (``evaluation/results/experiments.md``, section 19). Anchored generation
(``anchor_strength < 1``) starts from the training codes by request, and ``"auto"`` leaves
it alone.
"""

from __future__ import annotations

import numpy as np
import torch

#: Latent novelty below which a class's sampled codes count as copies of its training codes.
MEMORIZED = 0.5
#: Codes drawn to measure a class's latent novelty (a fixed size, so that a class gets the
#: same choice whatever the number of cells asked for).
PROBE_CODES = 256
#: Seed of the probe: the choice belongs to the generator and the sampling parameters, not
#: to the seed of one request.
PROBE_SEED = 0
#: Training codes a class needs for its latent novelty to be measured.
MIN_CODES = 2


def latent_novelty(codes: np.ndarray, training: np.ndarray) -> float:
    """:func:`scld_aug.noise_choice.novelty` of sampled latent codes against the class's
    training codes: the median distance from each code to its nearest training code, over
    the median distance from each training code to its nearest other one; about 1 for codes
    as novel as new cells of the class, near 0 for copies (``nan`` with fewer than
    :data:`MIN_CODES` training codes, ``inf`` when most of them coincide).

    Examples
    --------
    >>> training = np.eye(4, dtype=np.float32)
    >>> round(latent_novelty(training + 0.01, training), 3)
    0.014
    >>> bool(np.isnan(latent_novelty(training[:1], training[:1])))  # one code: no spread
    True
    """
    # Imported here: noise_choice imports sampling, which imports this module.
    from scld_aug.noise_choice import novelty

    if len(training) < MIN_CODES:
        return float("nan")
    return novelty(np.asarray(training), np.asarray(codes))


def auto_level(novelty: float) -> float:
    """``"auto"``'s level for a class of this latent novelty: 1 when its codes are
    memorized, else 0 (also when the novelty cannot be measured, or is infinite).

    Examples
    --------
    >>> auto_level(0.12), auto_level(0.7), auto_level(float("nan"))
    (1.0, 0.0, 0.0)
    """
    return 1.0 if novelty < MEMORIZED else 0.0


def interpolate(
    codes: np.ndarray, training: np.ndarray, level: float, rng: torch.Generator
) -> np.ndarray:
    """``codes`` each moved a uniform fraction in ``[0, level)`` of the way toward a training
    code of the class drawn at random (new array; ``codes`` is not modified)."""
    n = len(codes)
    partner = torch.randint(len(training), (n,), generator=rng).numpy()
    fraction = torch.rand((n, 1), generator=rng).numpy() * np.float32(level)
    return (codes + fraction * (training[partner] - codes)).astype(np.float32, copy=False)
