"""Gene handling: which genes the networks model, and how the others are generated.

The networks model the ``n_top_genes`` most variable genes (Cell Ranger-style normalized
dispersion for counts, variance for normalized data). Gene moments are weighted like
the training minibatches, so markers of rare cell types are not drowned by large types.
Every other gene is still generated, from class-level statistics:

* counts: the decoder has one extra output, the total of all other genes, which is split
  over those genes by the target class's observed composition, each gene's share drawn
  with the gene's observed overdispersion around it (gamma-Poisson: real cells vary more
  than Poisson counts would, median 1/theta 0.5 on the Baron data);
* normalized data: each other gene is zero with the class's observed zero rate and
  otherwise normal with the class's mean and spread of non-zero values.

Those genes are, by construction, the ones that vary least between cells, so class-level
statistics describe them well, and the output keeps every input gene.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import scipy.sparse as sp

from scld_aug import likelihoods
from scld_aug.data import CellRows, cell_rows


@dataclass
class GenePanel:
    """Fitted gene selection and gene statistics of a training set.

    Attributes
    ----------
    n_genes : int
        Number of input genes (all are generated).
    likelihood : {"nb", "gaussian"}
    genes : ndarray of int
        Indices of the genes modelled by the networks, sorted.
    center, scale : ndarray
        Standardization of the encoder input (log-normalized counts, or the values).
    rest : ndarray of int
        Indices of the other genes.
    rest_profile : ndarray of shape (n_classes, n_rest)
        Counts: composition of the other genes per class (rows sum to 1).
        Normalized data: mean of the non-zero values per class.
    rest_spread, rest_zero_rate : ndarray of shape (n_classes, n_rest)
        Normalized data only: standard deviation of non-zero values and fraction of zeros.
    lower, upper : ndarray of shape (n_genes,)
        Normalized data only: observed range of each gene, used to clip generated values.
    output_prior : ndarray of shape (n_outputs,)
        Average decoder output (log proportions for counts, zeros for standardized
        values); the decoder's output bias starts there so training does not spend its
        first steps learning average expression.
    rest_overdispersion : ndarray of shape (n_rest,) or (0,)
        Counts only: each other gene's ``1/theta`` around its class's share of the
        other genes' total (0: Poisson). Empty in generators saved before it existed,
        which draw every other gene as Poisson.
    """

    n_genes: int
    likelihood: str
    genes: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    rest: np.ndarray
    rest_profile: np.ndarray
    rest_spread: np.ndarray
    rest_zero_rate: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    output_prior: np.ndarray
    rest_overdispersion: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def distribution(self) -> likelihoods.Likelihood:
        """The likelihood object (:mod:`scld_aug.likelihoods`) of ``likelihood``."""
        return likelihoods.get(self.likelihood)

    @property
    def n_outputs(self) -> int:
        """Decoder outputs: the modelled genes, plus the 'all other genes' total for counts."""
        return self.distribution.n_outputs(len(self.genes), len(self.rest))

    @classmethod
    def fit(
        cls,
        X: sp.csr_matrix,
        codes: np.ndarray,
        n_classes: int,
        weights: np.ndarray,
        library: np.ndarray | None,
        n_top_genes: int | None,
        likelihood: str,
    ) -> GenePanel:
        distribution = likelihoods.get(likelihood)
        stats = distribution.gene_statistics(X, weights, library)
        n_top = X.shape[1] if n_top_genes is None else min(n_top_genes, X.shape[1])
        if len(stats.candidates) == 0:
            raise ValueError(
                "Every gene is constant across the training cells, so there is nothing to "
                "learn. Check that X holds expression values (cells in rows, genes in columns)."
            )
        order = stats.candidates[np.argsort(-stats.score[stats.candidates], kind="stable")]
        genes = np.sort(order[:n_top])
        rest = np.setdiff1d(np.arange(X.shape[1]), genes)
        scale = np.sqrt(stats.log_var[genes])
        scale[scale == 0] = 1.0
        other = distribution.other_genes(X, codes, n_classes, rest)
        return cls(
            n_genes=X.shape[1],
            likelihood=likelihood,
            genes=genes.astype(np.int64),
            center=stats.log_mean[genes].astype(np.float32),
            scale=scale.astype(np.float32),
            rest=rest.astype(np.int64),
            rest_profile=other["rest_profile"].astype(np.float64),
            rest_spread=other["rest_spread"].astype(np.float32),
            rest_zero_rate=other["rest_zero_rate"].astype(np.float32),
            lower=other["lower"].astype(np.float32),
            upper=other["upper"].astype(np.float32),
            output_prior=distribution.output_prior(stats.mean[genes], len(rest)).astype(np.float32),
            rest_overdispersion=other["rest_overdispersion"].astype(np.float64),
        )

    def modelled(self, X: sp.csr_matrix | CellRows) -> CellRows:
        """The modelled genes' columns of ``X``: all the networks read, a fraction of ``X``.

        Minibatches are densified from these genes only, so a step costs the modelled genes,
        not every input gene. Nothing is copied unless the columns are small (see
        :meth:`~scld_aug.data.CellRows.columns`).
        """
        return cell_rows(X).columns(self.genes)

    def other_totals(self, modelled: CellRows, library: np.ndarray | None) -> np.ndarray | None:
        """Per cell, the total of the genes that are not modelled, when the decoder models
        it (counts)."""
        if library is None or not len(self.rest):
            return None
        return self.distribution.other_totals(library, modelled.row_sums())

    def encoder_input(self, values: np.ndarray, library: np.ndarray | None) -> np.ndarray:
        """Standardized encoder input (log-normalized for counts) from dense rows of the
        modelled genes."""
        return self.distribution.encoder_input(values, library, self)

    def decoder_target(self, values: np.ndarray, other: np.ndarray | None) -> np.ndarray:
        """What the decoder reconstructs from dense rows of the modelled genes: their counts
        (+ the other genes' total, ``other``), or their standardized values."""
        return self.distribution.decoder_target(values, other, self)

    def state(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state(cls, state: dict) -> GenePanel:
        return cls(**state)
