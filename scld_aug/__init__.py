"""scld-aug: single-cell latent diffusion for augmenting scRNA-seq data."""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["SCLDGenerator", "SCLDSampler", "augment", "datasets", "__version__"]

# Progress and what was done go to this logger at INFO level; silent unless the program
# configures logging (the scld-aug command line shows it).
logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from scld_aug import datasets
    from scld_aug.apps.augment import augment
    from scld_aug.generator import SCLDGenerator
    from scld_aug.sampler import SCLDSampler

# Imported on first use, so that the command line answers --help and --version without
# loading torch and scikit-learn.
_LAZY = {
    "SCLDGenerator": "scld_aug.generator",
    "SCLDSampler": "scld_aug.sampler",
    "augment": "scld_aug.apps.augment",
    "datasets": "scld_aug.datasets",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'scld_aug' has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    value = module if name == "datasets" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
