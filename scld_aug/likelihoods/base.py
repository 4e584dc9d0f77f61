"""What a likelihood of the decoder owns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

if TYPE_CHECKING:
    from scld_aug.genes import GenePanel


class GeneStatistics(NamedTuple):
    """Per-gene statistics of the training cells, as a likelihood sees them."""

    mean: np.ndarray
    var: np.ndarray
    log_mean: np.ndarray
    log_var: np.ndarray
    score: np.ndarray  # how informative a gene is (higher: modelled first)
    candidates: np.ndarray  # genes that may be modelled at all


def holding_counts(dtype: np.dtype) -> np.dtype:
    """``dtype``, widened to 32 bits when it is narrower (``int8``, ``uint8``, ``int16``,
    ``uint16``, ``bool``, ``float16``), so that synthetic counts beyond the input's largest
    value never wrap around or overflow to infinity. The widening depends on the dtype
    only, not on the cells drawn: a pipeline always sees the same output dtype.

    Examples
    --------
    >>> [str(holding_counts(np.dtype(t))) for t in ("uint8", "int16", "float16", "int64")]
    ['uint32', 'int32', 'float32', 'int64']
    """
    dtype = np.dtype(dtype)
    if dtype.itemsize >= 4:
        return dtype
    if dtype.kind == "u":
        return np.dtype(np.uint32)
    if dtype.kind in "ib":
        return np.dtype(np.int32)
    if dtype.kind == "f":
        return np.dtype(np.float32)
    return dtype


class Likelihood:
    """The decoder's likelihood, and everything that follows from it.

    A likelihood owns, for its kind of data: the check of input values, which genes are
    worth modelling, the statistics that generate the genes outside the modelled panel,
    the encoder's input and the decoder's target, the decoder's output transform and
    log-likelihood (tensors), decoding to cells, and the dtype of generated cells. Adding
    a likelihood is one module that subclasses this one, registered in
    ``scld_aug.likelihoods.LIKELIHOODS``.
    """

    #: Name used in parameters and saved generators.
    name: str = ""
    #: Whether it models raw counts (non-negative whole numbers) only.
    counts: bool = False
    #: Whether a cell's library size (total counts) scales its decoded means.
    uses_library: bool = False
    #: Start value of the decoder's gene-wise log-dispersion parameter.
    dispersion_init: float = 0.0

    # ------------------------------------------------------------------ input

    def check_values(self, non_count: np.generic | None) -> None:
        """Raise a ValueError (saying how to fix it) for data it cannot model, given a
        value of them that is not a count (``scld_aug.data.first_non_count``) or None for
        count data."""

    def output_dtype(self, input_dtype: np.dtype, output: str) -> np.dtype:
        """dtype of generated cells (and of the resampled matrix): the input's, unless the
        values need a float dtype or a wider one
        (:func:`~scld_aug.likelihoods.base.holding_counts`)."""
        raise NotImplementedError

    def check_output(self, output: str) -> None:
        """Raise a ValueError for an ``output`` mode this likelihood cannot produce."""

    # ------------------------------------------------------------------ genes

    def gene_statistics(self, X, weights: np.ndarray, library: np.ndarray | None):
        """``GeneStatistics`` of the training cells (weighted like the minibatches)."""
        raise NotImplementedError

    def other_genes(self, X, codes: np.ndarray, n_classes: int, rest: np.ndarray) -> dict:
        """Per-class statistics that generate the genes outside the panel (``rest``):
        ``rest_profile``, ``rest_spread``, ``rest_zero_rate``, ``lower``, ``upper``,
        ``rest_overdispersion``."""
        raise NotImplementedError

    def n_outputs(self, n_genes: int, n_rest: int) -> int:
        """Decoder outputs for ``n_genes`` modelled genes and ``n_rest`` others."""
        return n_genes

    def output_prior(self, mean: np.ndarray, n_rest: int) -> np.ndarray:
        """Start value of the decoder's output bias (``mean``: of the modelled genes)."""
        raise NotImplementedError

    def other_totals(self, library: np.ndarray, modelled_totals: np.ndarray) -> np.ndarray | None:
        """Per cell, the total of the genes outside the panel, when the decoder models it."""
        return None

    def encoder_input(
        self, values: np.ndarray, library: np.ndarray | None, panel: GenePanel
    ) -> np.ndarray:
        """Standardized encoder input (float32) from dense rows of the modelled genes."""
        raise NotImplementedError

    def decoder_target(
        self, values: np.ndarray, other: np.ndarray | None, panel: GenePanel
    ) -> np.ndarray:
        """What the decoder reconstructs (float32) from dense rows of the modelled genes."""
        raise NotImplementedError

    # ------------------------------------------------------------------ tensors

    def transform(self, out: torch.Tensor) -> torch.Tensor:
        """The decoder's last layer to what :meth:`log_likelihood` and :meth:`decode` read."""
        return out

    def log_likelihood(
        self,
        decoded: torch.Tensor,
        target: torch.Tensor,
        log_dispersion: torch.Tensor,
        library: torch.Tensor | None,
    ) -> torch.Tensor:
        """Per-cell log-likelihood of ``target``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ decoding

    def decode(
        self,
        decoded: torch.Tensor,
        dispersion: torch.Tensor,
        panel: GenePanel,
        code: int,
        output: str,
        generator: torch.Generator,
        libraries: Any,
    ) -> np.ndarray | sp.csr_matrix:
        """Cells of class ``code`` (all genes, float64) from decoder output ``decoded``
        (float32, on the networks' device), drawing on that device from ``generator`` unless
        ``output == "mean"``: a dense array, or a CSR matrix where the cells are sparse
        (sampled counts). ``dispersion`` is the decoder's per-output dispersion on the same
        device; ``libraries`` holds the observed library sizes of the class (counts only)."""
        raise NotImplementedError
