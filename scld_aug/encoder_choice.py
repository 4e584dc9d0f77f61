"""``kl_weight="auto"``: a deterministic or a variational encoder, chosen from the training cells.

With a deterministic autoencoder (``kl_weight=0``) the diffusion model learns one code per
cell. On some data it then reproduces the training cells: its synthetic cells lie much
closer to their nearest real cell than real cells lie to each other, and a classifier
gains little from them. A variational encoder (``kl_weight=1``) encodes each cell as a
posterior and the diffusion model learns draws of them, which fills the space between the
cells; that is the largest gain measured on such data, and a loss where the deterministic
codes already give novel cells (``evaluation/results/experiments.md``, sections 8, 13
and 17). ``"auto"`` tells the two cases apart after training the deterministic
generator (autoencoder, diffusion model and latent classifier):

1. for every class with at least :data:`~scld_aug.noise_choice.MIN_CLASS_CELLS` training
   cells, draw a probe of latent codes with the default sampling settings and neither latent
   noise nor interpolation, decode it and measure its novelty against the class's training
   cells (:func:`scld_aug.noise_choice.probe_scores`: the median distance from a synthetic
   cell to its nearest real cell of the class, over the class's own leave-one-out spread, in
   an embedding of the training cells);
2. if the median novelty over the classes is below :data:`TARGET` (the cells are
   near-copies of the training cells), train again with ``kl_weight=1``; otherwise keep the
   deterministic generator.

The whole data set is judged, not the classes a sampler will generate, so the choice
depends on the training data only (a trained generator serves any ``sampling_strategy``).
It costs one probe per class (seconds) and, where it retrains, a second training.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from scld_aug import likelihoods, noise_choice
from scld_aug.params import SamplingParams

if TYPE_CHECKING:
    from scld_aug.generator import SCLDGenerator

#: The two encoders: deterministic, and a standard variational one.
DETERMINISTIC, VARIATIONAL = 0.0, 1.0
#: Median novelty over the classes below which the deterministic encoder's cells count as
#: near-copies (the target of ``latent_noise="auto"``).
TARGET = noise_choice.TARGET


def median_novelty(generator: SCLDGenerator, X, labels: np.ndarray, seed: int) -> float:
    """Median over the classes of the novelty of ``generator``'s cells without latent noise
    or interpolation.

    Parameters
    ----------
    generator : SCLDGenerator
        Trained on ``X`` and ``labels``.
    X : scipy.sparse.csr_matrix or CellRows
        The training cells (all genes).
    labels : ndarray
        The class of every training cell.
    seed : int
        Seed of the reference embedding, the probes and their decoding.

    Returns
    -------
    float
        ``nan`` when no class has enough cells to measure.
    """
    counts = likelihoods.get(generator.config["likelihood"]).counts
    reference = noise_choice.fit_reference(X, labels, counts, seed)
    probe = replace(SamplingParams(), latent_noise=0.0, latent_interpolation=0.0)
    values = [
        score["novelty"]
        for label in generator.classes
        for _, score in noise_choice.probe_scores(
            generator, label, probe, seed, reference, levels=(0.0,)
        )
    ]
    return float(np.median(values)) if values else float("nan")


def needs_variational(novelty: float) -> bool:
    """Whether a deterministic generator whose cells have this median novelty should be
    replaced by a variational one (an unmeasurable novelty keeps the deterministic one).

    Examples
    --------
    >>> needs_variational(0.45), needs_variational(0.75), needs_variational(float("nan"))
    (True, False, False)
    """
    return bool(novelty < TARGET)
