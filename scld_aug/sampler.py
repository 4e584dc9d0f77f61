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
from scld_aug.files import atomic_torch_save, load_model_file
from scld_aug.generator import SCLDGenerator

FORMAT = "scld-aug-sampler"
FORMAT_VERSION = 1
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

    Parameters
    ----------
    {parameters}

    Attributes
    ----------
    sampling_strategy_ : dict
        Number of synthetic cells per class.
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
        n_sampling_steps: int = 50,
        filter_threshold: float | None = None,
        max_filter_rounds: int = 10,
        output: str = "sample",
        min_class_size: int = 3,
        device: str = "auto",
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
        self.filter_threshold = filter_threshold
        self.max_filter_rounds = max_filter_rounds
        self.output = output
        self.min_class_size = min_class_size
        self.device = device
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
        self._ensure_generator(X, y)
        return self

    def _fit_resample(self, X, y):
        # Checked before training: minutes of training must not end in these errors.
        labels, counts = np.unique(y, return_counts=True)
        size = dict(zip(labels.tolist(), counts.tolist(), strict=True))
        for label, n in self.sampling_strategy_.items():
            # A pretrained generator learned its classes elsewhere: few cells here are fine.
            if n > 0 and size[label] < self.min_class_size and self.generator is None:
                raise ValueError(
                    f"Class {plain_scalar(label)!r} has {size[label]} cell(s); SCLDSampler needs "
                    f"at least min_class_size={self.min_class_size} cells of a class to generate "
                    "it. Leave it out with a dict sampling_strategy, merge it with a related "
                    "type, or lower min_class_size."
                )
        self._check_output_fits(self.sampling_strategy_, kept_bytes=_matrix_bytes(X))
        self._ensure_generator(X, y)
        synthetic, synthetic_y = [], []
        items = [(label, n) for label, n in self.sampling_strategy_.items() if n > 0]
        for label, n in tqdm(items, desc="generate", disable=not self.verbose, leave=False):
            synthetic += self._generate_blocks(label, n, X.format if sp.issparse(X) else None)
            synthetic_y.append(np.full(n, label, dtype=y.dtype))
        X_res = data_layer.stack_rows(X, synthetic)
        if sp.issparse(X_res) and X_res.format != self.input_format_:
            X_res = X_res.asformat(self.input_format_)  # e.g. COO in, COO out
        y_res = np.concatenate([y, *synthetic_y]) if synthetic_y else y.copy()
        return X_res, y_res

    def _record_row_sizes(self, X, y) -> None:
        """Mean stored values per cell of each class, to size outputs before sampling."""
        per_row = data_layer.nnz_per_row(X)
        self._nnz_per_cell = {
            plain_scalar(label): float(per_row[y == label].mean()) for label in np.unique(y)
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
        self.likelihood_ = data_layer.resolve_likelihood(matrix, self.likelihood)
        config = self._training_config(self.likelihood_)
        key = store.training_key(matrix, y, config, self.random_state)
        if getattr(self, "generator_key_", None) == key and hasattr(self, "generator_"):
            self.generator_source_ = "reused"
            self.generator_.to(self.device_)
            return
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
            block = block.astype(dtype)
            blocks.append(sp.csr_matrix(block) if sparse_format else block)
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
        self._check_output_fits({cell_type: int(n_samples)})
        sparse_format = None if self.input_format_ == "dense" else self.input_format_
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

    def fit_resample_anndata(self, adata, labels_key: str = "cell_type", layer: str | None = None):
        """Augment an AnnData object by cell type.

        Parameters
        ----------
        adata : anndata.AnnData
            Cells x genes. Not modified.
        labels_key : str, default="cell_type"
            Column of ``adata.obs`` with the class labels.
        layer : str or None, default=None
            Layer holding the expression to model (e.g. ``"counts"``); ``None`` uses ``X``.

        Returns
        -------
        adata_res : anndata.AnnData
            Original cells first, then synthetic cells, with ``obs["is_synthetic"]``,
            ``obs[labels_key]`` and the original ``var``. The augmented matrix is in the
            same place as the input (``X`` or ``layers[layer]``).
        """
        X, y = anndata_io.arrays(adata, labels_key, layer)
        if self.generator is not None:
            # Genes are checked by name before anything is generated.
            store.check_gene_names(self._load_pretrained(), adata.var_names)
        X_res, y_res = self.fit_resample(X, y)
        if self.generator is None:
            self.generator_.gene_names = _gene_names(adata.var_names)
        return anndata_io.augmented(adata, X_res, np.asarray(y_res), labels_key, layer)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike, include_anchors: bool = True) -> None:
        """Write the fitted sampler (parameters + generator) to ``path`` atomically.

        The file holds tensors and JSON only; :meth:`load` reads it without unpickling
        or executing anything.

        Parameters
        ----------
        path : str or path-like
        include_anchors : bool, default=True
            Keep what the generator stores per training cell (latent codes for anchored
            generation, library sizes); ``False`` before sharing the file (see
            :meth:`SCLDGenerator.save`).
        """
        check_is_fitted(self, "generator_")
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
        atomic_torch_save(state, Path(path))

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
        strategy = params.get("sampling_strategy")
        if isinstance(strategy, dict) and "__dict_items__" in strategy:
            params["sampling_strategy"] = {k: v for k, v in strategy["__dict_items__"]}
        params["device"] = device
        sampler = cls(**params)
        sampler._validate_params()
        fitted = json.loads(state["fitted"])
        sampler.device_ = resolve_device(device)
        sampler.generator_ = SCLDGenerator.from_state(state["generator"], sampler.device_)
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
        sampler.generator_key_ = fitted["generator_key_"]
        sampler.sampling_strategy_ = dict(fitted["sampling_strategy_"])
        return sampler


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
SCLDSampler.__doc__ = SCLDSampler.__doc__.replace(
    "{reuse}", textwrap.fill(_REUSE, width=84, subsequent_indent="    ")
).replace("{parameters}", params.docstring())
