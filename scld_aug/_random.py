"""Seeds derived from ``random_state``, and device selection.

Nothing here touches global random state: seeds feed generators that their user owns.
"""

from __future__ import annotations

import numpy as np
import torch


def resolve_device(device: str) -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; anything else is passed to torch."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available; use device='auto' or 'cpu'."
        )
    return resolved


def derive_seeds(random_state: int | np.random.RandomState | None, n: int) -> list[int]:
    """``n`` independent 63-bit seeds from a scikit-learn style ``random_state``."""
    if isinstance(random_state, (int, np.integer)):
        entropy = int(random_state)
    elif isinstance(random_state, np.random.RandomState):
        entropy = int(random_state.randint(np.iinfo(np.int32).max))
    else:
        entropy = None
    children = np.random.SeedSequence(entropy).spawn(n)
    return [int(c.generate_state(1, np.uint64)[0] >> np.uint64(1)) for c in children]


def stream_seed(seed: int, *key: int) -> int:
    """A 63-bit seed of its own for the random stream named by ``key`` under ``seed``.

    Streams with different keys are independent (numpy's ``SeedSequence``), so a training
    can give each of its generators one without any of them drawing from another.

    Examples
    --------
    >>> stream_seed(0, 1) == stream_seed(0, 1) != stream_seed(0, 2)
    True
    >>> 0 <= stream_seed(0, 1) < 2**63
    True
    """
    state = np.random.SeedSequence([int(seed), *map(int, key)]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))
