"""Likelihoods of the decoder, one module each: :class:`NegativeBinomial` for raw counts,
:class:`Gaussian` for normalized or scaled values. Everything that differs between the
two lives in its module (see :class:`~scld_aug.likelihoods.base.Likelihood`)."""

from __future__ import annotations

from scld_aug.likelihoods.base import GeneStatistics, Likelihood
from scld_aug.likelihoods.gaussian import Gaussian
from scld_aug.likelihoods.negative_binomial import NegativeBinomial

__all__ = [
    "LIKELIHOODS",
    "Gaussian",
    "GeneStatistics",
    "Likelihood",
    "NegativeBinomial",
    "for_data",
    "get",
]

#: The likelihoods by name (the ``likelihood`` parameter; ``"auto"`` picks one from data).
LIKELIHOODS: dict[str, Likelihood] = {"nb": NegativeBinomial(), "gaussian": Gaussian()}


def get(name: str) -> Likelihood:
    """The likelihood called ``name``.

    Examples
    --------
    >>> get("nb").uses_library, get("gaussian").uses_library
    (True, False)
    """
    try:
        return LIKELIHOODS[name]
    except KeyError:
        raise ValueError(
            f"likelihood must be one of {sorted(LIKELIHOODS)}, got {name!r}."
        ) from None


def for_data(counts: bool) -> str:
    """The likelihood ``"auto"`` picks: ``"nb"`` for raw counts (non-negative whole
    numbers), ``"gaussian"`` for anything else (log-normalized or scaled values)."""
    return "nb" if counts else "gaussian"
