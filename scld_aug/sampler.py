"""``SCLDSampler``: an imbalanced-learn over-sampler backed by single-cell latent diffusion."""

from __future__ import annotations

import json
import os
import textwrap
import warnings
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from imblearn.over_sampling.base import BaseOverSampler
from imblearn.utils import check_sampling_strategy
from sklearn.base import _fit_context
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from scld_aug import anndata_io, likelihoods, params, store
from scld_aug import data as data_layer
from scld_aug import train as training
from scld_aug._random import derive_seeds, resolve_device
from scld_aug.data import plain_scalar
from scld_aug.files import atomic_torch_save, check_output_path, load_model_file
from scld_aug.generator import SCLDGenerator
from scld_aug.threads import torch_threads

FORMAT = "scld-aug-sampler"
FORMAT_VERSION = 2
SAMPLER_DESCRIPTION = "a saved SCLDSampler (written by SCLDSampler.save)"
SAVED_GENERATOR = "<saved with the sampler>"


class SCLDSampler(BaseOverSampler):
    """Over-sample classes with synthetic cells from a single-cell latent diffusion model.

    An autoencoder compresses expression into a latent space, a class-conditional
    diffusion model learns the distribution of latent codes, and sampling is steered to
    the requested cell type by classifier-free guidance (pre-guidance) and, optionally,
    by the gradient of a classifier on noisy latents (post-guidance) plus a filter.
    Decoded cells keep every input gene. Follows SCLD (Wang et al., arXiv 2312.14220).

    {reuse}

    {groups}

    Parameters
    ----------
    {parameters}

    Attributes
    ----------
    sampling_strategy_ : dict
        Number of synthetic cells per class.
    skipped_classes_ : dict
        Classes that a string, float or callable ``sampling_strategy`` asked to over-sample
        but that have fewer than ``min_class_size`` cells, with their cell counts. They are
        left as they are (one warning names them); a dict ``sampling_strategy`` that names
        such a class is an error instead.
    generator_ : SCLDGenerator
        The trained generator.
    generator_source_ : {"trained", "reused", "memory", "loaded", "pretrained"}
        Where ``generator_`` came from on the last fit.
    likelihood_ : str
        Likelihood actually used.
    device_ : torch.device
        Device used for training and sampling.
    n_features_in_ : int
        Number of genes.
    feature_names_in_ : ndarray of str
        Gene names, when X was a DataFrame.

    Examples
    --------
    >>> import numpy as np
    >>> from scld_aug import SCLDSampler
    >>> rng = np.random.default_rng(0)
    >>> X = rng.poisson(2.0, size=(60, 30))
    >>> y = np.array(["common"] * 50 + ["rare"] * 10)
    >>> sampler = SCLDSampler(random_state=0, autoencoder_steps=20, diffusion_steps=20,
    ...                       classifier_steps=10, n_sampling_steps=5)
    >>> X_res, y_res = sampler.fit_resample(X, y)
    >>> X_res.shape, (y_res == "rare").sum()
    ((100, 30), np.int64(50))
    """

    _parameter_constraints: dict = params.parameter_constraints()

    def __init__(
        self,
        *,
        sampling_strategy="auto",
        random_state=None,
        likelihood: str = "auto",
        n_top_genes: int | None = 2000,
        latent_dim: int = 32,
        hidden_dim: int = 256,
        class_balance: float = 1.0,
        autoencoder_class_balance: float | None = 0.0,
        kl_weight: float = 0.0,
        label_dropout: float = 0.15,
        autoencoder_steps: int = 1500,
        diffusion_steps: int = 4000,
        classifier_steps: int = 1000,
        batch_size: int = 128,
        learning_rate: float = 1e-3,
        mixed_precision: bool = False,
        torch_compile: bool = False,
        guidance_scale: float = 2.0,
        guidance_reference: str = "unconditional",
        post_guidance_scale: float = 0.0,
        anchor_strength: float = 1.0,
        n_sampling_steps: int = 20,
        solver: str = "dpm++",
        filter_threshold: float | None = None,
        max_filter_rounds: int = 10,
        output: str = "sample",
        min_class_size: int = 3,
        device: str = "auto",
        n_jobs: int | None = None,
        memory=None,
        generator=None,
        verbose: bool = False,
    ) -> None:
        super().__init__(sampling_strategy=sampling_strategy)
        self.random_state = random_state
        self.likelihood = likelihood
        self.n_top_genes = n_top_genes
        self.latent_dim = latent_dim
        self.hidden_dim = hidden_dim
        self.class_balance = class_balance
        self.autoencoder_class_balance = autoencoder_class_balance
        self.kl_weight = kl_weight
        self.label_dropout = label_dropout
        self.autoencoder_steps = autoencoder_steps
        self.diffusion_steps = diffusion_steps
        self.classifier_steps = classifier_steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.mixed_precision = mixed_precision
        self.torch_compile = torch_compile
        self.guidance_scale = guidance_scale
        self.guidance_reference = guidance_reference
        self.post_guidance_scale = post_guidance_scale
        self.anchor_strength = anchor_strength
        self.n_sampling_steps = n_sampling_steps
        self.solver = solver
        self.filter_threshold = filter_threshold
        self.max_filter_rounds = max_filter_rounds
        self.output = output
        self.min_class_size = min_class_size
        self.device = device
        self.n_jobs = n_jobs
        self.memory = memory
        self.generator = generator
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting

    def _check_X_y(self, X, y, accept_sparse=None):
        # Runs first in fit and fit_resample: checks that need the raw input happen here.
        self._check_strategy_values()
        self.input_format_ = X.format if sp.issparse(X) else "dense"
        self._sparse_array = isinstance(X, getattr(sp, "sparray", ()))
        X, y, binarize_y = super()._check_X_y(X, y, accept_sparse)
        self.input_dtype_ = np.dtype(X.dtype)
        self._record_row_sizes(X, y)
        return X, y, binarize_y

    def _check_strategy_values(self) -> None:
        """Cell numbers of a dict ``sampling_strategy`` must be whole and non-negative."""
        if not isinstance(self.sampling_strategy, dict):
            return
        for label, n in self.sampling_strategy.items():
            if isinstance(n, bool) or not isinstance(n, Integral) or n < 0:
                raise ValueError(
                    f"sampling_strategy[{plain_scalar(label)!r}] = {n!r}: the number of cells "
                    "a class should have after resampling must be a whole number >= 0, e.g. "
                    f"{{{plain_scalar(label)!r}: {max(0, int(n)) if _is_number(n) else 100}}}."
                )

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, **params):
        """Validate the input and train (or reuse) the generator, without resampling.

        Parameters
        ----------
        X : {array-like, sparse matrix, DataFrame} of shape (n_cells, n_genes)
            Expression matrix: raw counts or normalized values.
        y : array-like of shape (n_cells,)
            Cell-type labels.

        Returns
        -------
        self : SCLDSampler
        """
        check_classification_targets(y)
        X, y, _ = self._check_X_y(X, y)
        self.sampling_strategy_ = check_sampling_strategy(
            self.sampling_strategy, y, self._sampling_type
        )
        self._leave_out_small_classes(y, stacklevel=4)  # the caller of fit
        with torch_threads(self.n_jobs):
            self._ensure_generator(X, y)
        return self

    def _leave_out_small_classes(self, y, stacklevel: int) -> None:
        """Drop classes with fewer than ``min_class_size`` cells from ``sampling_strategy_``
        (with one warning) unless the user named them; checked before training, so minutes of
        training never end in this error."""
        labels, counts = np.unique(y, return_counts=True)
        size = dict(zip(labels.tolist(), counts.tolist(), strict=True))
        # A pretrained generator learned its classes elsewhere: few cells here are fine.
        small = {
            label: size[label]
            for label, n in self.sampling_strategy_.items()
            if n > 0 and size[label] < self.min_class_size and self.generator is None
        }
        self.skipped_classes_ = {plain_scalar(label): n for label, n in small.items()}
        if not small:
            return
        listing = ", ".join(f"{plain_scalar(label)!r} ({n})" for label, n in small.items())
        if isinstance(self.sampling_strategy, dict):
            raise ValueError(
                f"Class(es) with fewer than min_class_size={self.min_class_size} cells cannot "
                f"be generated: {listing}. Leave them out of the dict sampling_strategy, merge "
                "them with a related type, or lower min_class_size."
            )
        warnings.warn(
            f"Not over-sampling {len(small)} class(es) with fewer than "
            f"min_class_size={self.min_class_size} cells (cells in brackets): {listing}. They "
            "are kept as they are; see skipped_classes_. Lower min_class_size to generate "
            "them anyway.",
            UserWarning,
            stacklevel=stacklevel,
        )
        for label in small:
            self.sampling_strategy_[label] = 0

    def _check_class_size(self, label) -> None:
        """Refuse to generate a class with fewer than ``min_class_size`` training cells, as
        a fit does (a pretrained generator learned its classes elsewhere: no check)."""
        cells = getattr(self, "_class_sizes", {}).get(plain_scalar(label))
        if self.generator is None and cells is not None and cells < self.min_class_size:
            raise ValueError(
                f"Class {plain_scalar(label)!r} had {cells} cell(s) in the data the sampler "
                f"was fitted on, fewer than min_class_size={self.min_class_size}: too few to "
                "learn it from (fit_resample leaves it out for that reason). Lower "
                "min_class_size and fit again to generate it anyway."
            )

    def _fit_resample(self, X, y):
        self._leave_out_small_classes(y, stacklevel=6)  # the caller of fit_resample
        self._check_output_fits(self.sampling_strategy_, kept_bytes=_matrix_bytes(X))
        items = [(label, n) for label, n in self.sampling_strategy_.items() if n > 0]
        synthetic, synthetic_y = [], []
        with torch_threads(self.n_jobs):
            self._ensure_generator(X, y)
            for label, n in tqdm(items, desc="generate", disable=not self.verbose, leave=False):
                synthetic += self._generate_blocks(label, n, X.format if sp.issparse(X) else None)
                synthetic_y.append(np.full(n, label, dtype=y.dtype))
        dtype = likelihoods.get(self.likelihood_).output_dtype(self.input_dtype_, self.output)
        X_res = data_layer.stack_rows(X, synthetic, dtype)
        if sp.issparse(X_res) and X_res.format != self.input_format_:
            X_res = X_res.asformat(self.input_format_)  # e.g. COO in, COO out
        y_res = np.concatenate([y, *synthetic_y]) if synthetic_y else y.copy()
        return X_res, y_res

    def _record_row_sizes(self, X, y) -> None:
        """Cells and mean stored values per cell of each class, to size outputs before
        sampling and refuse classes too small to generate."""
        per_row = data_layer.nnz_per_row(X)
        labels, sizes = np.unique(y, return_counts=True)
        self._class_sizes = {
            plain_scalar(label): int(n) for label, n in zip(labels, sizes, strict=True)
        }
        self._nnz_per_cell = {
            plain_scalar(label): float(per_row[y == label].mean()) for label in labels
        }

    def _check_output_fits(self, strategy: dict, kept_bytes: float = 0.0) -> None:
        likelihood = likelihoods.get(getattr(self, "likelihood_", "nb"))
        dtype = likelihood.output_dtype(self.input_dtype_, self.output)
        n_genes = int(self.n_features_in_)
        total_new, total_bytes = 0, 0.0
        for label, n in strategy.items():
            if n <= 0:
                continue
            if self.input_format_ == "dense":
                row = n_genes * dtype.itemsize
            else:
                nnz = getattr(self, "_nnz_per_cell", {}).get(plain_scalar(label), n_genes)
                row = min(nnz, n_genes) * (dtype.itemsize + 8) + 8
            total_new += int(n)
            total_bytes += int(n) * row
        if total_new:
            data_layer.check_output_fits(total_new, total_bytes / total_new, kept_bytes)

    def _training_config(self, likelihood: str) -> params.TrainingConfig:
        values = {name: getattr(self, name) for name in params.TRAINING_PARAMS}
        values["likelihood"] = likelihood
        return params.TrainingConfig(**values)

    def _ensure_generator(self, X, y) -> None:
        """Train the generator unless one for this exact data and config is at hand."""
        self.device_ = resolve_device(self.device)
        names = getattr(self, "feature_names_in_", None)
        if self.generator is not None:
            self._load_pretrained()
            classes = [label for label, n in self.sampling_strategy_.items() if n > 0]
            self.likelihood_ = store.check_compatible(self.generator_, X, names, classes)
            self.generator_source_ = "pretrained"
            return
        matrix = data_layer.as_csr(X)
        self.likelihood_ = data_layer.resolve_likelihood(matrix, self.likelihood, given=X)
        config = self._training_config(self.likelihood_)
        key = store.training_key(matrix, y, config, self.random_state)
        if getattr(self, "generator_key_", None) == key and hasattr(self, "generator_"):
            self.generator_source_ = "reused"
            self.generator_.to(self.device_)
            return
        if getattr(self, "generator_source_", None) == "loaded":
            self._warn_loaded_generator_replaced(X)
        cache = store.GeneratorCache.for_fit(self.memory, self.random_state)
        cached = None if cache is None else cache.get(key, self.device_)
        if cached is not None:
            self.generator_, self.generator_source_ = cached, "memory"
        else:
            self.generator_ = training.train_generator(
                matrix,
                y,
                config,
                self.random_state,
                self.device_,
                verbose=self.verbose,
                compile_networks=self.torch_compile,
            )
            self.generator_source_ = "trained"
            if cache is not None:
                cache.put(key, self.generator_)
        self.generator_.gene_names = _gene_names(names)
        self.generator_key_ = key

    def _warn_loaded_generator_replaced(self, X) -> None:
        """A loaded sampler fitted on data its generator was not trained on trains a new
        generator (scikit-learn's ``fit`` semantics): say so, since that costs minutes and
        the loaded generator may be what was meant."""
        genes = self.generator_.n_genes
        differ = (
            f"X has {X.shape[1]} genes, the loaded generator {genes}"
            if X.shape[1] != genes
            else "X is not the data the loaded generator was trained on"
        )
        warnings.warn(
            f"This sampler was loaded from a file, and {differ}: fitting trains a new "
            "generator in place of the loaded one. To draw cells from the loaded generator "
            "without training, call generate(n_samples, cell_type); to over-sample other "
            "data with it, pass it as SCLDSampler(generator=sampler.generator_) (same genes "
            "needed).",
            UserWarning,
            stacklevel=5,
        )

    def _load_pretrained(self) -> SCLDGenerator:
        """The ``generator`` parameter as ``generator_`` on ``device_`` (a file is read once)."""
        self.device_ = resolve_device(self.device)
        loaded = (self.generator_key_, self.generator_) if hasattr(self, "generator_") else None
        self.generator_key_, self.generator_ = store.load_pretrained(
            self.generator, self.device_, loaded
        )
        return self.generator_

    # ------------------------------------------------------------------ generation

    def _sampling_params(self) -> params.SamplingParams:
        fields = params.names("sampling")
        return params.SamplingParams(
            **{name: getattr(self, name) for name in fields if name != "sampling_strategy"}
        )

    def _class_seed(self, label) -> int:
        code = self.generator_.class_code(label)
        base = derive_seeds(self.random_state, 2)[1]
        return int(
            np.random.SeedSequence([base, code]).generate_state(1, np.uint64)[0] >> np.uint64(1)
        )

    def _generate_blocks(self, label, n: int, sparse_format: str | None) -> list:
        params = self._sampling_params()
        dtype = likelihoods.get(self.likelihood_).output_dtype(self.input_dtype_, params.output)
        blocks = []
        seed = self._class_seed(label)
        for block in self.generator_.sample(label, n, params, seed):
            if sparse_format:
                blocks.append(data_layer.cast_checked(sp.csr_matrix(block), dtype))
            else:
                dense = block.toarray() if sp.issparse(block) else block
                blocks.append(data_layer.cast_checked(dense, dtype))
        return blocks

    def generate(self, n_samples: int, cell_type) -> Any:
        """Synthetic cells of one class only.

        Parameters
        ----------
        n_samples : int
            Number of cells to generate. A request whose output cannot fit in the available
            memory is refused before sampling.
        cell_type : label
            A class seen in training.

        Returns
        -------
        X_synthetic : ndarray, sparse matrix or DataFrame of shape (n_samples, n_genes)
            In the container of the training input (sparse input gives the same sparse
            format, a DataFrame keeps its columns). With an int ``random_state`` the cells
            equal the synthetic cells of that class produced by ``fit_resample``.
        """
        check_is_fitted(self, "generator_")
        self._validate_params()
        if isinstance(n_samples, bool) or not isinstance(n_samples, Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        self.generator_.class_code(cell_type)  # unknown classes fail before any work
        self._check_class_size(cell_type)
        self._check_output_fits({cell_type: int(n_samples)})
        sparse_format = None if self.input_format_ == "dense" else self.input_format_
        with torch_threads(self.n_jobs):
            blocks = self._generate_blocks(cell_type, int(n_samples), sparse_format)
        if sparse_format:
            out = sp.vstack(blocks, format=sparse_format)
            return _as_sparse_kind(out, getattr(self, "_sparse_array", False))
        out = np.vstack(blocks)
        if hasattr(self, "feature_names_in_"):
            import pandas as pd

            return pd.DataFrame(out, columns=self.feature_names_in_)
        return out

    # ------------------------------------------------------------------ AnnData

    def fit_resample_anndata(
        self,
        adata,
        labels_key: str = "cell_type",
        layer: str | None = None,
        normalize_x: bool = False,
        key_added: str = "is_synthetic",
    ):
        """Augment an AnnData object by cell type, with imbalanced-learn's semantics.

        ``sampling_strategy`` decides the cells per type: the default ``"auto"`` raises
        every type to the size of the largest one, which can make most of the result
        synthetic. :func:`scld_aug.augment` raises only the rare types, to the median type
        size, as ``scld-aug augment`` does.

        Parameters
        ----------
        adata : anndata.AnnData
            Cells x genes. Not modified.
        labels_key : str, default="cell_type"
            Column of ``adata.obs`` with the class labels.
        layer : str or None, default=None
            Layer holding the expression to model (e.g. ``"counts"``); ``None`` uses ``X``.
        normalize_x : bool, default=False
            With ``layer``: fill ``X`` with the log-normalized augmented layer
            (``log1p`` of counts scaled to 10,000 per cell, recomputed for every cell), so
            that ``sc.pp.pca`` and ``sc.tl.umap`` run on the result directly. Otherwise
            ``X`` is empty.
        key_added : str, default="is_synthetic"
            Column of ``obs`` that marks the synthetic cells; it must not be a column of
            ``adata.obs`` already (checked before training).

        Returns
        -------
        adata_res : anndata.AnnData
            Original cells first, then synthetic cells, with ``obs[key_added]``,
            ``obs[labels_key]`` and the original ``var``. The synthetic cells' other ``obs``
            columns hold the value every real cell of their type shares, where there is
            one (e.g. a coarser annotation), and missing values otherwise (e.g. batch or
            donor when a type spans several). The augmented matrix is in the
            same place as the input (``X`` or ``layers[layer]``). ``obsm``, ``obsp``, other
            layers, ``.raw`` (a warning says so) and the ``uns`` results of the original
            cells (PCA, neighbours, UMAP, ...) do not cover the synthetic cells and are left
            out: recompute them. Synthetic cells are named ``synthetic-0``, ... (another
            prefix where one of those names is taken). ``uns["scld_aug"]`` records what was
            done: the package version, where the matrix is, a ``cell_types`` table (real
            cells, cells generated and skipped types; see
            :func:`scld_aug.anndata_io.type_table`), the sampler's parameters (JSON) and
            the generator's identity.
        """
        if normalize_x and layer is None:
            raise ValueError(
                "normalize_x=True fills X from the augmented layer; pass layer= (e.g. "
                "layer='counts'), or leave normalize_x off: without a layer X itself is "
                "augmented."
            )
        if key_added in adata.obs.columns:
            raise ValueError(
                f"adata.obs already has a column {key_added!r} (an augmented dataset?); pass "
                "another key_added for the column that marks the synthetic cells."
            )
        X, y = anndata_io.arrays(adata, labels_key, layer)
        if self.generator is not None:
            # Genes are checked by name before anything is generated.
            store.check_gene_names(self._load_pretrained(), adata.var_names)
        X_res, y_res = self.fit_resample(X, y)
        if self.generator is None:
            self.generator_.gene_names = _gene_names(adata.var_names)
        if getattr(adata, "raw", None) is not None:
            hint = anndata_io.raw_counts_hint(adata) if self.likelihood_ == "gaussian" else None
            warnings.warn(
                "adata.raw is not carried over to the result (it has no rows for the "
                "synthetic cells)"
                + (
                    f". The {'layer' if layer else 'X'} modelled here is not raw counts "
                    f"(modelled as Gaussian) but {hint} with layer=."
                    if hint
                    else "; keep it from the input where you need it for the real cells."
                ),
                UserWarning,
                stacklevel=2,
            )
        y_res = np.asarray(y_res)
        record = self._augmentation_record(labels_key, layer, y_res[len(y) :])
        record["key_added"] = key_added
        return anndata_io.augmented(
            adata,
            X_res,
            y_res,
            labels_key,
            layer,
            record=record,
            normalize_x=normalize_x,
            key_added=key_added,
        )

    def _augmentation_record(self, labels_key: str, layer: str | None, new_labels) -> dict:
        """What ``uns["scld_aug"]`` holds: strings and a table (``cell_types``, see
        :func:`scld_aug.anndata_io.type_table`), what ``.h5ad`` files store whatever the
        cell types are called (type names are never used as keys)."""
        from scld_aug import __version__

        labels, counts = np.unique(new_labels, return_counts=True)
        made = {plain_scalar(k): int(n) for k, n in zip(labels, counts, strict=True)}
        rows = {}
        for label, cells in self._class_sizes.items():
            row = {"cells": cells, "n_synthetic": made.get(label, 0)}
            row["skipped"] = label in self.skipped_classes_
            rows[label] = row
        return {
            "version": __version__,
            "labels_key": labels_key,
            "matrix": "X" if layer is None else f"layers/{layer}",
            "cell_types": anndata_io.type_table(rows),
            "generator_source": self.generator_source_,
            "generator_id": self._generator_id(),
            "params": json.dumps(self.get_params(), sort_keys=True, default=str),
        }

    def _generator_id(self) -> str:
        """A trained generator's training key (data, labels, config and seed), or the
        SHA-256 of a pretrained generator's file."""
        if isinstance(self.generator, (str, os.PathLike)):
            import hashlib

            digest = hashlib.sha256()
            with open(self.generator, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            return "sha256:" + digest.hexdigest()
        return str(self.generator_key_)

    # ------------------------------------------------------------------ persistence

    def save(
        self, path: str | os.PathLike, include_anchors: bool = True, overwrite: bool = False
    ) -> None:
        """Write the fitted sampler (parameters + generator) to ``path`` atomically.

        The file holds tensors and JSON only; :meth:`load` reads it without unpickling
        or executing anything.

        Parameters
        ----------
        path : str or path-like
            A new file (missing folders are created), not the file of the ``generator``
            parameter. An existing file is replaced only with ``overwrite=True``.
        include_anchors : bool, default=True
            Keep what the generator stores per training cell (latent codes for anchored
            generation, library sizes); ``False`` before sharing the file (see
            :meth:`SCLDGenerator.save`).
        overwrite : bool, default=False
            Replace an existing file at ``path``.

        Raises
        ------
        scld_aug.files.OutputPathError
            When ``path`` exists (without ``overwrite``), is a directory, is the pretrained
            generator's file or cannot be written; nothing is written.
        """
        check_is_fitted(self, "generator_")
        self._check_save_path(path, overwrite)
        self._write(path, include_anchors, overwrite)

    def _check_save_path(self, path: str | os.PathLike, overwrite: bool) -> None:
        source = self.generator if isinstance(self.generator, (str, os.PathLike)) else None
        check_output_path(path, inputs=[source], overwrite=overwrite, what="sampler")

    def _write(self, path: str | os.PathLike, include_anchors: bool, overwrite: bool) -> None:
        """:meth:`save` without its check of ``path``, for callers that checked it before
        their work: a file that appeared since is kept, and the sampler is written beside
        it (``scld_aug.files.OutputConflictError``)."""
        params = self.get_params(deep=False)
        portable = {}
        for name, value in params.items():
            if name == "generator" and value is not None:
                # The generator is in the file: the loaded sampler uses it, not the source.
                portable[name] = SAVED_GENERATOR
                continue
            if name == "sampling_strategy" and isinstance(value, dict):
                # As pairs: JSON would turn integer class labels into strings.
                portable[name] = {
                    "__dict_items__": [[plain_scalar(k), int(v)] for k, v in value.items()]
                }
                continue
            try:
                json.dumps(value)
                portable[name] = value
            except TypeError:
                if name == "memory":
                    portable[name] = str(getattr(value, "location", value))
                else:
                    warnings.warn(
                        f"Parameter {name}={value!r} cannot be saved; the loaded sampler uses "
                        "its default.",
                        UserWarning,
                        stacklevel=2,
                    )
        fitted = {
            "n_features_in_": int(self.n_features_in_),
            "feature_names_in_": [str(f) for f in getattr(self, "feature_names_in_", [])] or None,
            "likelihood_": self.likelihood_,
            "input_dtype_": self.input_dtype_.str,
            "input_format_": self.input_format_,
            "sparse_array": bool(getattr(self, "_sparse_array", False)),
            "nnz_per_cell": [[k, v] for k, v in getattr(self, "_nnz_per_cell", {}).items()],
            "class_sizes": [[k, v] for k, v in getattr(self, "_class_sizes", {}).items()],
            "generator_key_": self.generator_key_,
            "sampling_strategy_": [
                [plain_scalar(k), int(v)] for k, v in self.sampling_strategy_.items()
            ],
        }
        state = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "params": json.dumps(portable),
            "fitted": json.dumps(fitted),
            "generator": self.generator_.state(include_anchors),
        }
        atomic_torch_save(state, Path(path), overwrite=overwrite, what="sampler")

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> SCLDSampler:
        """Load a sampler written by :meth:`save`, ready to ``generate`` or resample.

        Parameters
        ----------
        path : str or path-like
        device : str, default="auto"
            Device to place the generator on.
        """
        state = load_model_file(path, SAMPLER_DESCRIPTION)
        if state.get("format") != FORMAT:
            hint = (
                " It is a saved generator: pass it as SCLDSampler(generator=path) or load it "
                "with SCLDGenerator.load(path)."
                if state.get("format") == "scld-aug-generator"
                else ""
            )
            raise ValueError(
                f"{path} is not {SAMPLER_DESCRIPTION} (format {state.get('format')!r}).{hint}"
            )
        if not isinstance(state.get("version"), int) or state["version"] > FORMAT_VERSION:
            raise ValueError(
                f"{path} was written by a newer scld-aug (format version "
                f"{state.get('version')!r}); upgrade scld-aug to load it."
            )
        try:
            return cls._from_state(state, device)
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is not a valid saved SCLDSampler: {err}") from None

    @classmethod
    def _from_state(cls, state: dict, device: str) -> SCLDSampler:
        params = json.loads(state["params"])
        fitted = json.loads(state["fitted"])
        strategy = params.get("sampling_strategy")
        if isinstance(strategy, dict) and "__dict_items__" in strategy:
            params["sampling_strategy"] = {k: v for k, v in strategy["__dict_items__"]}
        params["device"] = device
        generator = SCLDGenerator.from_state(state["generator"], resolve_device(device))
        if state["version"] == 1:
            _migrate_format_1(params, fitted, generator)
        sampler = cls(**params)
        sampler._validate_params()
        sampler.device_ = generator.device
        sampler.generator_ = generator
        sampler.generator_source_ = "loaded"
        if params.get("generator") == SAVED_GENERATOR:
            sampler.generator = sampler.generator_
        sampler.n_features_in_ = int(fitted["n_features_in_"])
        if sampler.n_features_in_ != sampler.generator_.n_genes:
            raise ValueError("the sampler's number of genes does not match its generator")
        if fitted["feature_names_in_"] is not None:
            sampler.feature_names_in_ = np.asarray(fitted["feature_names_in_"], dtype=object)
        sampler.likelihood_ = fitted["likelihood_"]
        sampler.input_dtype_ = np.dtype(fitted["input_dtype_"])
        sampler.input_format_ = fitted["input_format_"]
        sampler._sparse_array = bool(fitted.get("sparse_array", False))
        sampler._nnz_per_cell = {k: float(v) for k, v in fitted.get("nnz_per_cell", [])}
        # Files written before the class sizes were kept: no size check in generate().
        sampler._class_sizes = {k: int(v) for k, v in fitted.get("class_sizes", [])}
        sampler.generator_key_ = fitted["generator_key_"]
        sampler.sampling_strategy_ = dict(fitted["sampling_strategy_"])
        return sampler


def _migrate_format_1(values: dict, fitted: dict, generator: SCLDGenerator) -> None:
    """Turn the parameters of a format-1 file into today's, in place.

    Format 1 had sampling options that are gone (``latent_noise``, ``latent_interpolation``)
    and ``"auto"`` for ``kl_weight`` and ``guidance_scale``. What they did is kept where it
    can be: the weight the generator was trained with, a guidance scale chosen alike for
    every class, and the cells of files that used neither removed option. Anything else
    would now give other cells than the file gave when it was written: one warning lists it.
    """
    # Files written before the solver parameter sampled with DDIM: keep their cells.
    values.setdefault("solver", "ddim")
    if values.get("kl_weight") == "auto":
        values["kl_weight"] = float(generator.config.get("kl_weight", 0.0))
    changed = []
    noise = values.pop("latent_noise", 0.0)
    levels = [v for _, v in fitted.get("latent_noises_", [])]
    if (noise == "auto" and any(levels)) or (noise != "auto" and noise):
        changed.append(f"latent_noise={noise!r}")
    interpolation = values.pop("latent_interpolation", 0.0)
    # "auto" could only interpolate toward training codes the file keeps.
    if interpolation and not (interpolation == "auto" and generator.anchors is None):
        changed.append(f"latent_interpolation={interpolation!r}")
    if values.get("guidance_scale") == "auto":
        scales = {float(v) for _, v in fitted.get("guidance_scales_", [])}
        if len(scales) == 1:
            values["guidance_scale"] = scales.pop()
        else:
            values["guidance_scale"] = params.BY_NAME["guidance_scale"].default
            changed.append("guidance_scale='auto' (one scale per class)")
    if changed:
        warnings.warn(
            f"This sampler was saved by an earlier scld-aug with {', '.join(changed)}, which "
            "this version does not have: it draws its cells without, so they can differ from the "
            "cells the file gave when it was written. Fit again to compare like with like.",
            UserWarning,
            stacklevel=4,
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and np.isfinite(value)


def _matrix_bytes(X: Any) -> float:
    """Bytes of a validated matrix (its copy is part of the resampled output)."""
    if sp.issparse(X):
        return float(X.data.nbytes + X.indices.nbytes + X.indptr.nbytes)
    return float(np.asarray(X).nbytes)


def _gene_names(names: Any) -> np.ndarray | None:
    """Gene names as text, or None when the input had none (plain arrays)."""
    return None if names is None else np.asarray(names, dtype=str)


def _as_sparse_kind(matrix: Any, sparse_array: bool) -> Any:
    """``matrix`` as a scipy sparse array when the input was one, else a sparse matrix."""
    if not sparse_array:
        return matrix
    return getattr(sp, f"{matrix.format}_array")(matrix)


_REUSE = (
    "Training happens on the first ``fit_resample`` (or ``fit``); later calls on the same "
    "data with the same training parameters reuse the trained generator, so only the "
    "sampling-time parameters ("
    + ", ".join(f"``{name}``" for name in params.SAMPLING_PARAMS)
    + ") may change cheaply. ``memory`` extends this reuse across clones and processes."
)
_GROUPS = (
    "The parameters below come in this order: those most users set ("
    + ", ".join(f"``{name}``" for name in params.DOC_GROUPS["set first"])
    + "); then how cells are drawn (sampling-time); then how the generator is trained; "
    "then how fitting runs (a pretrained generator, the smallest class to generate, "
    "progress)."
)
SCLDSampler.__doc__ = (
    SCLDSampler.__doc__.replace(
        "{reuse}", textwrap.fill(_REUSE, width=84, subsequent_indent="    ")
    )
    .replace("{groups}", textwrap.fill(_GROUPS, width=84, subsequent_indent="    "))
    .replace(
        "{parameters}",
        params.docstring(tuple(n for group in params.DOC_GROUPS.values() for n in group)),
    )
)
