"""scVI as an over-sampler: the deep generative baseline of the benchmark.

scVI (Lopez et al. 2018, scvi-tools) is a VAE with a zero-inflated negative binomial
decoder. It has no class-conditional prior, so class-specific cells come from its
posterior predictive distribution: pick a real training cell of the class at random, draw
a latent code from q(z | cell), decode it with the cell's own library size and sample
counts. Synthetic cells are therefore integer counts of every input gene, like SCLD's.
Input is raw counts in any array or sparse form; the output is a CSR matrix.

scvi-tools is an optional dependency (``pip install "scld-aug[scvi]"``).
"""

from __future__ import annotations

import logging
import os
import shutil
from numbers import Integral
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from imblearn.over_sampling.base import BaseOverSampler
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, check_random_state

from scld_aug.data import as_csr, fingerprint, is_count_matrix
from scld_aug.store import is_seeded


def _import_scvi():
    try:
        import scvi
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            'The scVI baseline needs scvi-tools: pip install "scld-aug[scvi]" (or pip install '
            '"scvi-tools>=1.4"), or leave "scVI" out of --methods.'
        ) from err
    return scvi


class SCVISampler(BaseOverSampler):
    """Over-sample classes with scVI posterior predictive samples of their real cells.

    Parameters
    ----------
    sampling_strategy : float, str, dict or callable, default="auto"
        imbalanced-learn's sampling strategy.
    random_state : int or None, default=None
        Seeds scvi-tools (``scvi.settings.seed``, which also seeds torch globally).
    n_latent : int, default=10
        scVI latent dimension (scvi-tools default).
    max_epochs : int or None, default=None
        Training epochs; ``None`` uses scvi-tools' heuristic (400 for up to 20,000 cells).
        Fewer epochs also shorten the KL warm-up to match.
    gene_likelihood : {"zinb", "nb", "poisson"}, default="zinb"
        scVI's decoder likelihood (scvi-tools default).
    memory : str or None, default=None
        Directory where trained models are cached by data, labels, parameters and seed.
    verbose : bool, default=False
        Show scvi-tools' training progress bar.
    """

    _parameter_constraints: dict = {
        **BaseOverSampler._parameter_constraints,
        "random_state": [None, "random_state"],
        "n_latent": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left"), None],
        "gene_likelihood": [str],
        "memory": [None, str, os.PathLike],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        sampling_strategy="auto",
        random_state=None,
        n_latent: int = 10,
        max_epochs: int | None = None,
        gene_likelihood: str = "zinb",
        memory=None,
        verbose: bool = False,
    ) -> None:
        super().__init__(sampling_strategy=sampling_strategy)
        self.random_state = random_state
        self.n_latent = n_latent
        self.max_epochs = max_epochs
        self.gene_likelihood = gene_likelihood
        self.memory = memory
        self.verbose = verbose

    def _key(self, X: sp.csr_matrix, y: np.ndarray) -> str:
        # The library's fingerprint: labels keyed with their types, as for SCLD's cache.
        params = [self.n_latent, self.max_epochs, self.gene_likelihood, int(self.random_state)]
        return fingerprint(X, y, "scvi", params)

    def _fit_resample(self, X, y):
        scvi = _import_scvi()
        import anndata

        X = as_csr(X)
        if not is_count_matrix(X):
            raise ValueError(
                "SCVISampler needs raw counts (non-negative integers); scVI models counts."
            )
        if not self.verbose:
            scvi.settings.verbosity = logging.WARNING
            for name in (
                "lightning.fabric.utilities.seed",
                "lightning.pytorch.utilities.rank_zero",
            ):
                logging.getLogger(name).setLevel(logging.WARNING)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        scvi.settings.seed = seed
        adata = anndata.AnnData(X.astype(np.float32))
        scvi.model.SCVI.setup_anndata(adata)
        path = None
        # Only seeded fits can be reused (as for SCLDSampler's memory=).
        if self.memory is not None and is_seeded(self.random_state):
            path = Path(self.memory) / "scvi" / f"model-{self._key(X, y)}"
        if path is not None and (path / "model.pt").exists():
            model = scvi.model.SCVI.load(str(path), adata=adata, accelerator="cpu")
        else:
            model = scvi.model.SCVI(
                adata, n_latent=self.n_latent, gene_likelihood=self.gene_likelihood
            )
            # scvi-tools warms the KL weight up over 400 epochs, all of a default small-data
            # run; a shorter run keeps that shape, compressed, so it ends at full weight.
            warmup = None if self.max_epochs is None else min(400, self.max_epochs)
            model.train(
                max_epochs=self.max_epochs,
                plan_kwargs=None if warmup is None else {"n_epochs_kl_warmup": warmup},
                enable_progress_bar=bool(self.verbose),
                enable_checkpointing=False,
            )
            if path is not None:
                # Our own temporary folder: concurrent writers of one key do not collide.
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                model.save(str(tmp), overwrite=True)
                try:
                    tmp.replace(path)  # a directory rename: readers never see a partial model
                except OSError:  # another process saved the same model first
                    shutil.rmtree(tmp, ignore_errors=True)
        self.model_ = model
        return self._draw(adata, X, y, seed)

    def _draw(self, adata, X: sp.csr_matrix, y: np.ndarray, seed: int):
        """``X, y`` followed by the synthetic cells of ``sampling_strategy_``, drawn from
        ``model_`` with ``seed`` (reseeded, so a cached model samples exactly what a freshly
        trained one does)."""
        scvi = _import_scvi()
        scvi.settings.seed = seed
        rng = np.random.default_rng(seed)
        blocks, labels = [X], [y]
        for label, n in self.sampling_strategy_.items():
            if n == 0:
                continue
            members = np.flatnonzero(y == label)
            picks = np.sort(rng.choice(members, size=n, replace=True))
            sample = self.model_.posterior_predictive_sample(adata, indices=picks.tolist())
            blocks.append(sp.csr_matrix(sample.to_scipy_sparse()).astype(X.dtype))
            labels.append(np.full(n, label, dtype=y.dtype))
        return sp.vstack(blocks, format="csr"), np.concatenate(labels)

    def redraw(self, X, y, random_state: int):
        """Draw the cells of the last ``fit_resample`` again from the trained model, with
        another ``random_state`` (no training): the resampled ``X, y`` of another draw.

        ``X, y`` must be the data of that fit. Draws of one trained model tell how much of
        a difference between methods is the random draw of the cells.
        """
        import anndata

        check_is_fitted(self, "model_")
        X = as_csr(X)
        y = np.asarray(y)
        adata = anndata.AnnData(X.astype(np.float32))
        self.model_.__class__.setup_anndata(adata)
        return self._draw(adata, X, y, int(random_state))
