"""``latent_noise="auto"``: how far a class's synthetic cells spread around its real ones.

A diffusion model that learned a rare type from ten cells samples codes close to those ten,
and the decoded cells act as near-copies: they miss the type's real cells that lie
elsewhere (``evaluation/results/experiments.md``, sections 13 and 15). Gaussian noise added
to the sampled codes widens them, which helps where a type's cells spread widely and harms
where widening only blurs the type toward its neighbours. ``"auto"`` decides per class by
measuring, on the training cells of the fit, how novel the synthetic cells are:

1. embed the training cells (:class:`~scld_aug.metrics.ReferenceEmbedding`: highly
   variable genes, log-normalized when the data are counts, PCA) and fit a logistic
   regression of their types in that embedding (:func:`fit_reference`);
2. the class's own spread: the median distance from each of its real cells to the nearest
   other real cell of the class (leave-one-out, a stand-in for how far a new real cell of
   the type lies from the ones seen);
3. for every noise level of :data:`GRID`, decode the same :data:`PROBE_CELLS` codes (same
   noise direction, scaled) and take the median distance from each synthetic cell to its
   nearest real cell of the class; novelty is the ratio of this to the spread of step 2
   (:func:`novelty`);
4. allow only the levels at which the logistic regression calls at most
   :data:`MAX_RECOGNITION_DROP` fewer of the probe cells the class than without noise,
   and keep the smallest allowed level whose novelty reaches :data:`TARGET`, or the most
   novel allowed level when none does.

Noise that moves cells without making them more novel (the decoder maps it onto the same
cells) is never chosen over less noise unless it reaches the target, and noise that carries
cells toward another type is refused by the guard. Costs one probe of latent sampling and
at most four small decodes per class (about 0.5 s per class on Baron's 20,125 genes, one
thread; ``evaluation/results/experiments.md``, section 16).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from scld_aug import sampling
from scld_aug.data import CellRows
from scld_aug.metrics import ReferenceEmbedding, nearest_distances
from scld_aug.params import SamplingParams

if TYPE_CHECKING:
    from scld_aug.generator import SCLDGenerator

#: Noise levels tried, in standard deviations of the training codes per latent dimension.
GRID = (0.0, 0.2, 0.4, 0.6)
#: Novelty (synthetic-to-real over real-to-real nearest distance) to reach.
TARGET = 0.6
#: Codes drawn per class for the choice.
PROBE_CELLS = 256
#: Real cells per class used as the reference (a random subset of larger classes).
MAX_CLASS_CELLS = 1000
#: Cells the embedding is fitted on (a random subset of larger data).
MAX_EMBEDDING_CELLS = 5000
#: A class needs this many real cells for a leave-one-out spread.
MIN_CLASS_CELLS = 3
#: Largest drop, against no noise, in the share of probe cells the training cells'
#: classifier calls the class (None: no guard).
MAX_RECOGNITION_DROP = 0.05


@dataclass
class Reference:
    """What the choice compares synthetic cells with, fitted on the training cells: an
    embedding, a classifier of their types in it (the fidelity guard), and each class's
    embedded real cells (at most :data:`MAX_CLASS_CELLS`)."""

    embedding: ReferenceEmbedding
    judge: LogisticRegression | None  # None with a single type: nothing to confuse it with
    cells: dict


def fit_reference(X, y, counts: bool, seed: int) -> Reference:
    """The :class:`Reference` of the training cells ``X`` (validated matrix, or the
    ``scld_aug.data.CellRows`` of training) with labels
    ``y``. The embedding and the classifier see at most :data:`MAX_EMBEDDING_CELLS`; in
    larger data every type keeps an equal share of them (all its cells if fewer), so that
    a rare type is never left out of the classifier."""
    rng = np.random.default_rng(seed)
    labels = np.unique(y)
    rows = np.arange(X.shape[0])
    if len(rows) > MAX_EMBEDDING_CELLS:
        share = max(MAX_EMBEDDING_CELLS // len(labels), 1)
        rows = np.sort(
            np.concatenate([_at_most(np.flatnonzero(y == t), share, rng) for t in labels])
        )
    subset = _take(X, rows)
    # PCA takes 32-bit seeds.
    embedding = ReferenceEmbedding(counts=counts, random_state=seed % 2**32).fit(subset)
    judge = None
    if len(labels) > 1:
        with warnings.catch_warnings():
            # A rough judge serves the guard; its convergence is not the user's concern.
            warnings.simplefilter("ignore", ConvergenceWarning)
            judge = LogisticRegression(max_iter=1000).fit(embedding.transform(subset), y[rows])
    cells = {
        t: embedding.transform(_take(X, _at_most(np.flatnonzero(y == t), MAX_CLASS_CELLS, rng)))
        for t in labels
    }
    return Reference(embedding, judge, cells)


def _take(X, rows: np.ndarray):
    """Sorted rows of a matrix, or of :class:`~scld_aug.data.CellRows` (read from a backed
    file), kept sparse."""
    return X.csr_rows(rows) if isinstance(X, CellRows) else X[rows]


def _at_most(rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``rows``, or a random sorted subset of ``n`` of them."""
    return rows if len(rows) <= n else np.sort(rng.choice(rows, n, replace=False))


def novelty(real: np.ndarray, synthetic: np.ndarray) -> float:
    """Median distance from synthetic cells to their nearest real cell, over the median
    distance from each real cell to its nearest other real cell (all embedded, one class).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> real = rng.normal(size=(30, 5))
    >>> round(novelty(real, real[:10] + 1e-9), 3)  # copies
    0.0
    >>> 0.6 < novelty(real, rng.normal(size=(200, 5))) < 1.4  # new cells of the same kind
    True
    """
    own = float(np.median(nearest_distances(real, real, k=2)[:, 1]))
    new = float(np.median(nearest_distances(synthetic, real)[:, 0]))
    return new / own if own > 0 else float("inf")


def probe_scores(
    generator: SCLDGenerator,
    label,
    params: SamplingParams,
    seed: int,
    reference: Reference,
    levels=GRID,
) -> Iterator[tuple[float, dict[str, float]]]:
    """``(level, scores)`` of class ``label``'s probe cells at each noise level, in the
    order given and decoded lazily (a caller that stops early decodes no more).

    The probe is :data:`PROBE_CELLS` codes drawn with ``params`` (its ``latent_noise``
    ignored) and one noise direction, scaled by each level. ``scores`` holds the probe
    cells' ``"novelty"`` (:func:`novelty` against the class's real cells) and the share
    of them the training cells' classifier calls ``label`` (``"recognised"``). Nothing is
    yielded when the training data hold fewer than :data:`MIN_CLASS_CELLS` cells of the
    class (a pretrained generator may know classes the data lack).
    """
    real = reference.cells.get(label)
    if real is None or len(real) < MIN_CLASS_CELLS:
        return
    code = generator.class_code(label)
    torch_rng = torch.Generator().manual_seed(seed)
    probe = replace(params, latent_noise=0.0)
    # The probe's size does not depend on the request: a class gets the same level
    # whether its cells are asked for by fit_resample, generate or a loaded file.
    z = sampling.latents(generator, code, PROBE_CELLS, probe, torch_rng)
    direction = torch.randn(z.shape, generator=torch_rng).numpy()
    for level in levels:
        cells = generator.decode(z + np.float32(level) * direction, code, params.output, seed)
        embedded = reference.embedding.transform(cells)
        yield (
            float(level),
            {
                "novelty": novelty(real, embedded),
                "recognised": 1.0
                if reference.judge is None
                else float(np.mean(reference.judge.predict(embedded) == label)),
            },
        )


def choose_noise(
    generator: SCLDGenerator,
    label,
    params: SamplingParams,
    seed: int,
    reference: Reference,
) -> tuple[float, dict[float, dict[str, float]]]:
    """The noise level of :data:`GRID` for class ``label``.

    Parameters
    ----------
    generator : SCLDGenerator
    label : class label
    params : SamplingParams
        The class's other sampling settings (its guidance scale included); its
        ``latent_noise`` is ignored.
    seed : int
        Seed of the probe's latent draws, noise and decoding.
    reference : Reference
        From :func:`fit_reference` on the training cells.

    Returns
    -------
    noise : float
    scores : dict
        For every level tried (in increasing order, up to the chosen one when it reaches
        the target), the probe cells' ``"novelty"`` and the share of them the training
        cells' classifier calls ``label`` (``"recognised"``). Empty when the
        training data hold fewer than :data:`MIN_CLASS_CELLS` cells of the class (a
        pretrained generator may know classes the data lack): no noise is added then.
    """
    drop = np.inf if MAX_RECOGNITION_DROP is None else MAX_RECOGNITION_DROP
    scores: dict[float, dict[str, float]] = {}
    # Levels in increasing order, stopping at the first allowed one that reaches the
    # target: that is the answer, and larger levels need not be decoded.
    for level, score in probe_scores(generator, label, params, seed, reference, GRID):
        scores[level] = score
        # No noise (GRID[0]) is always allowed.
        allowed = score["recognised"] >= scores[GRID[0]]["recognised"] - drop
        if allowed and score["novelty"] >= TARGET:
            return level, scores
    if not scores:
        return 0.0, {}
    floor = scores[GRID[0]]["recognised"] - drop
    allowed_levels = [level for level, score in scores.items() if score["recognised"] >= floor]
    best = max(scores[level]["novelty"] for level in allowed_levels)
    return next(level for level in allowed_levels if scores[level]["novelty"] == best), scores
