"""``guidance_scale="auto"``: a guidance scale per class, chosen from the data at fit time.

Guidance trades diversity for class identity, and the best trade depends on the class: a
type far from the others needs little, a look-alike subtype more. The generator is trained
once and sampling is cheap in latent space, so for each class to generate ``"auto"`` tries
every scale of :data:`GRID` and keeps the one under which the synthetic cells help a proxy
classifier most:

1. draw the class's synthetic latent codes at each scale, from the same noise (so scales
   are compared on the same draws; at most :data:`MAX_PROBE` codes, as many as will be
   generated otherwise);
2. add them to the stored latent codes of the real training cells of every class (the
   generator's anchors);
3. classify every real cell by its :data:`NEIGHBOURS` nearest other codes (leave-one-out
   k-nearest neighbours) and score the class's F1 on the real cells.

A scale that leaves the synthetic codes among another type's cells makes real cells of
that type look like the target (false positives); one that crowds them onto a few points
leaves real cells of the target unrecognised. Ties go to the smaller scale (more
diversity). Nothing is decoded, so the choice costs latent sampling and a neighbour search
per scale and class: seconds, measured in ``docs/benchmarks/experiments.md``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from scld_aug import sampling
from scld_aug.params import SamplingParams

if TYPE_CHECKING:
    from scld_aug.generator import SCLDGenerator

#: Scales tried by ``guidance_scale="auto"``.
GRID = (1.0, 2.0, 3.0, 4.0, 6.0)
#: Neighbours of the proxy classifier.
NEIGHBOURS = 5
#: Most synthetic codes drawn per scale; the real codes are subsampled in proportion.
MAX_PROBE = 1000


def choose_scale(
    generator: SCLDGenerator, label, n_new: int, params: SamplingParams, seed: int
) -> tuple[float, dict[float, float]]:
    """The scale of :data:`GRID` whose ``n_new`` synthetic cells of ``label`` give the best
    leave-one-out kNN F1 on the real cells' latent codes.

    Parameters
    ----------
    generator : SCLDGenerator
        Needs the latent codes of its training cells (saved with ``include_anchors=True``).
    label : class label
    n_new : int
        Number of cells that will be generated for the class.
    params : SamplingParams
        The other sampling settings (reference, post-guidance, steps, ...); its
        ``guidance_scale`` is ignored.
    seed : int
        Seed of the latent draws.

    Returns
    -------
    scale : float
    scores : dict
        F1 of the class on the real cells for every scale tried.
    """
    if generator.anchors is None:
        raise ValueError(
            "guidance_scale='auto' compares synthetic cells with the latent codes of the "
            "training cells, and this generator was saved without them "
            "(include_anchors=False). Pass a number as guidance_scale, or save the generator "
            "with its anchors."
        )
    code = generator.class_code(label)
    real = [np.asarray(a, dtype=np.float32) for a in generator.anchors]
    n_probe = int(min(max(n_new, 1), MAX_PROBE))
    # Subsampling keeps the ratio of synthetic to real cells the sampler will produce.
    keep = n_probe / max(n_new, 1)
    rng = np.random.default_rng(seed)
    real = [
        a if keep >= 1 or len(a) <= NEIGHBOURS + 1 else a[rng.random(len(a)) < keep] for a in real
    ]
    codes = np.concatenate(real)
    labels = np.concatenate([np.full(len(a), i) for i, a in enumerate(real)])
    scores = {}
    for scale in GRID:
        trial = replace(params, guidance_scale=float(scale), filter_threshold=None)
        z = sampling.latents(generator, code, n_probe, trial, torch.Generator().manual_seed(seed))
        scores[float(scale)] = _leave_one_out_f1(codes, labels, z, code)
    best = max(scores.values())
    return next(s for s in scores if scores[s] == best), scores


def _leave_one_out_f1(real: np.ndarray, labels: np.ndarray, synthetic, code: int) -> float:
    """F1 of class ``code`` on the real codes, each classified by the majority of its
    nearest other codes among real and synthetic ones."""
    from sklearn.metrics import f1_score
    from sklearn.neighbors import NearestNeighbors

    pool = np.concatenate([real, synthetic])
    pool_labels = np.concatenate([labels, np.full(len(synthetic), code)])
    k = min(NEIGHBOURS, len(pool) - 1)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(pool).kneighbors(real)
    # Leave each real cell itself out, wherever ties with duplicates placed it.
    is_self = idx == np.arange(len(real))[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")
    neighbours = np.take_along_axis(idx, order, axis=1)[:, :k]
    votes = pool_labels[neighbours]
    predicted = np.array([np.bincount(v).argmax() for v in votes])
    return float(f1_score(labels == code, predicted == code, zero_division=0.0))
