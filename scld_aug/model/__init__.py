"""Torch modules of the generator. They see tensors only: no AnnData, pandas or scipy."""

from scld_aug.model.autoencoder import Autoencoder
from scld_aug.model.classifier import LatentClassifier
from scld_aug.model.denoiser import Denoiser
from scld_aug.model.schedule import NoiseSchedule

__all__ = ["Autoencoder", "Denoiser", "LatentClassifier", "NoiseSchedule"]
