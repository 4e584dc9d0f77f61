"""Ready-made choices: which cell types count as rare, and tiny model configurations.

The command line, the demo, the recipes, the evaluation harness and the tests share these,
so that "rare" and "quick" mean the same thing everywhere.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

#: A cell type under this fraction of the cells is rare.
RARE_FRACTION = 0.02
#: Fewest cells a type needs to be generated (the sampler's default ``min_class_size``).
MIN_CELLS = 3

#: A small model with few steps: the smoke-test mode of the demo, the command line
#: (``--quick``) and the recipes (``--smoke``). Tens of seconds on the shipped data.
QUICK = dict(
    autoencoder_steps=40,
    diffusion_steps=60,
    classifier_steps=20,
    n_sampling_steps=5,
    hidden_dim=64,
)

#: A tiny model for API tests and examples: a second or two per fit.
TINY = dict(
    autoencoder_steps=30,
    diffusion_steps=30,
    classifier_steps=10,
    n_sampling_steps=5,
    hidden_dim=32,
    latent_dim=8,
    batch_size=32,
    n_top_genes=50,
)


def rare_strategy(y, target: int | None = None) -> dict:
    """Raise every type with under 2% of the cells (and at least 3 cells) to the median class size.

    Parameters
    ----------
    y : array-like of shape (n_cells,)
        Cell-type labels.
    target : int or None, default=None
        Cells per rare type after over-sampling; ``None`` uses the median class size.
        Types that already have ``target`` cells or more are left out.

    Returns
    -------
    strategy : dict
        ``{type: cells after over-sampling}``, usable as an imbalanced-learn
        ``sampling_strategy`` (so is the function itself).

    Examples
    --------
    >>> import numpy as np
    >>> from scld_aug.presets import rare_strategy
    >>> y = np.array(["beta"] * 300 + ["alpha"] * 100 + ["mast"] * 5 + ["t_cell"] * 2)
    >>> rare_strategy(y)  # t_cell has fewer than 3 cells
    {'mast': 52}
    """
    counts = Counter(np.asarray(y).tolist())
    if target is None:
        target = int(np.median(list(counts.values())))
    return {
        label: target
        for label, n in counts.items()
        if n < RARE_FRACTION * len(y) and n >= MIN_CELLS and n < target
    }
