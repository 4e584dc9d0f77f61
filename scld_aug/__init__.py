"""scld-aug: single-cell latent diffusion for augmenting scRNA-seq data."""

from scld_aug import datasets
from scld_aug.generator import SCLDGenerator
from scld_aug.sampler import SCLDSampler

__version__ = "0.1.0"

__all__ = ["SCLDGenerator", "SCLDSampler", "datasets", "__version__"]
