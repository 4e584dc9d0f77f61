"""The fitted generator: autoencoder + latent diffusion + latent classifier + statistics.

It is independent of scikit-learn: ``SCLDSampler`` has one, caches it, saves it and asks
it for cells. ``sample`` runs the guided DDIM loop in latent space and decodes the
result to cells of every input gene.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from scld_aug import likelihoods, sampling
from scld_aug.data import plain_scalar
from scld_aug.files import atomic_torch_save, check_output_path, load_model_file
from scld_aug.genes import GenePanel
from scld_aug.model import Autoencoder, Denoiser, LatentClassifier, NoiseSchedule
from scld_aug.model.layers import reset_parameters
from scld_aug.params import MAX_TRAIN_TIMESTEPS, SamplingParams
from scld_aug.sampling import DECODE_BATCH

GENERATOR_FORMAT = "scld-aug-generator"
GENERATOR_DESCRIPTION = "a saved SCLD generator (written by SCLDGenerator.save or scld-aug train)"
# Saved without its training cells, a generator keeps each class's library sizes as this
# many quantiles (decoding draws from them) instead of one value per cell.
LIBRARY_QUANTILES = 100


class SCLDGenerator:
    """A trained SCLD generator.

    Parameters
    ----------
    autoencoder, denoiser, classifier : torch modules
    panel : GenePanel
        Gene selection and statistics of the training data.
    classes : ndarray
        Class labels; class code ``i`` is ``classes[i]``.
    latent_mean, latent_std : ndarray
        Standardization of latent codes for the diffusion model.
    libraries : list of ndarray
        Observed library sizes per class (counts only), drawn when decoding.
    config : dict
        Architecture and training settings (JSON-serializable).
    history : dict
        Per-step training losses of each network.
    anchors : list of ndarray or None
        Standardized latent codes of (up to ``scld_aug.train.MAX_ANCHORS``) training cells
        per class, the starting points of anchored generation (``anchor_strength < 1``).
    anchor_scales : list of ndarray or None
        With a variational encoder, the standardized posterior standard deviations of the
        same cells: anchored generation starts from a draw of each cell's posterior.
    gene_names : ndarray of str or None
        Names of the input genes, in order, when training knew them (AnnData ``var_names``,
        DataFrame columns); data given to a pretrained generator is checked against them.

    Examples
    --------
    A generator pretrained once (``scld-aug train``, or :func:`scld_aug.pretrain.pretrain`)
    is saved, loaded and handed to a sampler, which then trains nothing:

    >>> import numpy as np
    >>> from scld_aug import SCLDGenerator, SCLDSampler
    >>> X = np.random.default_rng(0).poisson(2.0, size=(60, 30))
    >>> y = np.array(["common"] * 50 + ["rare"] * 10)
    >>> quick = dict(autoencoder_steps=20, diffusion_steps=20, classifier_steps=10)
    >>> generator = SCLDSampler(random_state=0, **quick).fit(X, y).generator_
    >>> generator.save("pretrained.pt")
    >>> sampler = SCLDSampler(generator="pretrained.pt", random_state=0, n_sampling_steps=5)
    >>> X_res, y_res = sampler.fit_resample(X, y)
    >>> sampler.generator_source_, X_res.shape
    ('pretrained', (100, 30))
    """

    def __init__(
        self,
        autoencoder: Autoencoder,
        denoiser: Denoiser,
        classifier: LatentClassifier,
        panel: GenePanel,
        classes: np.ndarray,
        latent_mean: np.ndarray,
        latent_std: np.ndarray,
        libraries: list[np.ndarray],
        config: dict,
        history: dict | None = None,
        anchors: list[np.ndarray] | None = None,
        gene_names: np.ndarray | None = None,
        anchor_scales: list[np.ndarray] | None = None,
    ) -> None:
        self.autoencoder = autoencoder.eval()
        self.denoiser = denoiser.eval()
        self.classifier = classifier.eval()
        self.panel = panel
        self.classes = np.asarray(classes)
        self.latent_mean = np.asarray(latent_mean, dtype=np.float32)
        self.latent_std = np.asarray(latent_std, dtype=np.float32)
        self.libraries = [np.asarray(lib, dtype=np.float64) for lib in libraries]
        self.config = dict(config)
        self.history = history or {}
        self.anchors = (
            None if anchors is None else [np.asarray(a, dtype=np.float32) for a in anchors]
        )
        self.gene_names = None if gene_names is None else np.asarray(gene_names, dtype=str)
        self.anchor_scales = (
            None
            if anchor_scales is None or self.anchors is None
            else [np.asarray(a, dtype=np.float32) for a in anchor_scales]
        )
        # Standardized training latents lie within a few units; sampling stays in that box.
        bound = float(config.get("latent_bound", 0.0)) or None
        self.schedule = NoiseSchedule(config["num_train_timesteps"], config["beta_schedule"], bound)

    @property
    def device(self) -> torch.device:
        """Device the networks are on."""
        return next(self.denoiser.parameters()).device

    @property
    def n_genes(self) -> int:
        """Number of input genes; every one is in the generated cells."""
        return self.panel.n_genes

    def to(self, device: str | torch.device) -> SCLDGenerator:
        """Move the networks to ``device`` (in place); returns the generator."""
        for module in (self.autoencoder, self.denoiser, self.classifier):
            module.to(device)
        return self

    def class_code(self, label) -> int:
        """Index of class ``label`` in ``classes``; a clear error for unknown labels."""
        matches = np.flatnonzero(self.classes == label)
        if len(matches) == 0:
            raise ValueError(
                f"Unknown class {plain_scalar(label)!r}: the generator was trained on classes "
                f"{self.classes.tolist()}."
            )
        return int(matches[0])

    # ------------------------------------------------------------------ what sampling reads

    def class_anchors(self, code: int) -> np.ndarray:
        """Stored standardized latent codes of real cells of class ``code``."""
        if self.anchors is None:
            raise ValueError(
                "This generator was saved without the latent codes of its training cells, "
                "which anchored generation (anchor_strength < 1) starts from. Refit it, or "
                "use anchor_strength=1."
            )
        return self.anchors[code]

    def class_anchor_scales(self, code: int) -> np.ndarray | None:
        """Posterior standard deviations of the anchors of class ``code`` (variational
        encoder), or None when anchors are points."""
        return None if self.anchor_scales is None else self.anchor_scales[code]

    @torch.no_grad()
    def class_probabilities(self, latents: torch.Tensor) -> torch.Tensor:
        """Latent classifier's class probabilities for clean standardized latents."""
        t = torch.zeros(latents.shape[0], dtype=torch.long, device=latents.device)
        return torch.softmax(self.classifier(latents, t), dim=-1)

    # ------------------------------------------------------------------ decoding

    @torch.no_grad()
    def decode(
        self, latents: np.ndarray, code: int, output: str, seed: int
    ) -> np.ndarray | sp.csr_matrix:
        """Cells (all genes, float64) from standardized latent codes of class ``code``: CSR
        for sampled counts, dense otherwise. Drawn on the networks' device from a generator
        seeded with ``seed``."""
        panel = self.panel
        z = torch.as_tensor(latents * self.latent_std + self.latent_mean, device=self.device)
        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        return panel.distribution.decode(
            self.autoencoder.decode(z),
            self.autoencoder.log_dispersion.exp(),
            panel,
            code,
            output,
            generator,
            self.libraries[code],
        )

    def sample(
        self, label, n: int, params: SamplingParams, seed: int, batch_size: int = DECODE_BATCH
    ) -> Iterator[np.ndarray | sp.csr_matrix]:
        """Synthetic cells of class ``label`` as blocks of at most ``batch_size`` rows (CSR
        for sampled counts, dense otherwise), from the guided denoising loop of
        :mod:`scld_aug.sampling`.

        Deterministic for a given ``seed`` on CPU; global random state is not touched.
        """
        return sampling.sample(self, label, n, params, seed, batch_size)

    # ------------------------------------------------------------------ persistence

    def state(self, include_anchors: bool = True) -> dict:
        """Tensors and JSON only, so it can be loaded with ``torch.load(weights_only=True)``.

        ``include_anchors=False`` leaves out what is stored per training cell: the latent
        codes of anchored generation and the library sizes, which are replaced by
        ``LIBRARY_QUANTILES`` quantiles per class.
        """
        keep_cells = include_anchors and self.anchors is not None
        libraries = (
            self.libraries
            if include_anchors
            else [_library_quantiles(lib) for lib in self.libraries]
        )
        meta = {
            "config": self.config,
            "classes": self.classes.tolist(),
            "classes_dtype": self.classes.dtype.str if self.classes.dtype != object else "object",
            "likelihood": self.panel.likelihood,
            "n_genes": self.panel.n_genes,
            "history": self.history,
            "gene_names": None if self.gene_names is None else self.gene_names.tolist(),
            "training_cells_included": bool(include_anchors),
        }
        panel = {
            k: torch.from_numpy(np.ascontiguousarray(v))
            for k, v in self.panel.state().items()
            if isinstance(v, np.ndarray)
        }
        return {
            "meta": json.dumps(meta),
            "autoencoder": self.autoencoder.state_dict(),
            "denoiser": self.denoiser.state_dict(),
            "classifier": self.classifier.state_dict(),
            "panel": panel,
            "latent_mean": torch.from_numpy(self.latent_mean),
            "latent_std": torch.from_numpy(self.latent_std),
            "libraries": [torch.from_numpy(lib) for lib in libraries],
            **({"anchors": [torch.from_numpy(a) for a in self.anchors]} if keep_cells else {}),
            **(
                {"anchor_scales": [torch.from_numpy(a) for a in self.anchor_scales]}
                if keep_cells and self.anchor_scales is not None
                else {}
            ),
        }

    @classmethod
    def from_state(cls, state: dict, device: str | torch.device = "cpu") -> SCLDGenerator:
        """Rebuild a generator from :meth:`state` (as read by ``torch.load(weights_only=True)``).

        Every size in the stored configuration is checked against the stored tensors
        before anything is allocated, so a crafted or damaged file is refused with a
        ValueError instead of allocating what its metadata claims. So is any other
        metadata or tensor that sampling would trust: classes that are not distinct or
        not the labels of their dtype (strings, integers, booleans, whole numbers), gene
        names that are not one string per gene, a gene panel that does not describe every
        gene once, sizes that are not positive integers, and values that are not finite
        (weights, statistics, anchors) or out of their range (negative library sizes or
        scales).
        """
        try:
            return _from_state(cls, state, device)
        except (
            KeyError,
            TypeError,
            IndexError,
            AttributeError,
            RuntimeError,
            OverflowError,
        ) as err:
            raise ValueError(f"invalid generator state ({type(err).__name__}: {err})") from None

    def save(
        self, path: str | os.PathLike, include_anchors: bool = True, overwrite: bool = False
    ) -> None:
        """Write the generator to ``path`` atomically (tensors and JSON only).

        Load it with :meth:`load`, or pass the path as ``SCLDSampler(generator=path)``.

        Parameters
        ----------
        path : str or path-like
            A new file (missing folders are created): an existing one is replaced only
            with ``overwrite=True``.
        include_anchors : bool, default=True
            Keep the latent codes of (up to 4,096 per class) training cells,
            which anchored generation (``anchor_strength < 1``) starts from, and the
            library size of every training cell. With ``anchor_strength=0`` those codes
            decode back into the training cells, so pass ``False`` before sharing a
            generator trained on data you may not share: library sizes are then kept as
            ``LIBRARY_QUANTILES`` quantiles per class and anchored generation is not
            available. See the how-to guide on sharing models for what a generator
            reveals either way.
        overwrite : bool, default=False
            Replace an existing file at ``path``.

        Raises
        ------
        scld_aug.files.OutputPathError
            When ``path`` exists (without ``overwrite``), is a directory or cannot be
            written; nothing is written.
        """
        check_output_path(path, overwrite=overwrite, what="generator")
        self._write(path, include_anchors, overwrite)

    def _write(self, path: str | os.PathLike, include_anchors: bool, overwrite: bool) -> None:
        """:meth:`save` without its check of ``path``, for callers that checked it before
        their work: a file that appeared since is kept, and the generator is written beside
        it (``scld_aug.files.OutputConflictError``)."""
        atomic_torch_save(
            {"format": GENERATOR_FORMAT, "generator": self.state(include_anchors)},
            Path(path),
            overwrite=overwrite,
            what="generator",
        )

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> SCLDGenerator:
        """Load a generator written by :meth:`save` or ``scld-aug train`` (safe: tensors
        and JSON only, nothing is unpickled or executed)."""
        state = load_model_file(path, GENERATOR_DESCRIPTION)
        if state.get("format") != GENERATOR_FORMAT:
            hint = (
                " It is a saved SCLDSampler: load it with SCLDSampler.load(path)."
                if state.get("format") == "scld-aug-sampler"
                else ""
            )
            raise ValueError(
                f"{path} is not {GENERATOR_DESCRIPTION} (format {state.get('format')!r}).{hint}"
            )
        try:
            return cls.from_state(state["generator"], device)
        except (KeyError, ValueError) as err:
            raise ValueError(f"{path} is not a valid saved SCLD generator: {err}") from None


def _library_quantiles(library: np.ndarray) -> np.ndarray:
    if len(library) == 0:
        return library
    return np.quantile(library, (np.arange(LIBRARY_QUANTILES) + 0.5) / LIBRARY_QUANTILES)


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


# The Python type of each class label in the metadata (JSON) for the dtypes a generator's
# classes can have: fit takes string, integer, boolean and whole-number float labels.
CLASS_TYPES = {"U": str, "i": int, "u": int, "f": float, "b": bool}
# Widest string dtype accepted for class labels beyond what the longest label needs: a saved
# dtype may be wider than its labels, but a crafted "<U500000000" (2 GB a label) must not
# size an array.
MAX_LABEL_WIDTH = 1024


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A finite int or float from JSON (which also reads NaN and Infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _metadata(text) -> dict:
    """The metadata of a stored state, checked to be a JSON object with a config object."""
    try:
        meta = json.loads(text)
    except ValueError as err:
        raise ValueError(f"the metadata is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise ValueError("the metadata is not a JSON object with a 'config' object")
    return meta


def _classes(values, dtype_name) -> np.ndarray:
    """The class labels of the metadata as the array they were saved from, or a ValueError.

    Each label must have the Python type its dtype gives and survive the conversion
    unchanged (no truncated strings, wrapped integers or booleans made of numbers), and the
    labels must be distinct: class code ``i`` names ``classes[i]``, and a label that
    appeared twice would name two classes.
    """
    if not isinstance(values, list) or not values:
        raise ValueError("the stored classes are not a non-empty list")
    if dtype_name == "object":
        if not (all(isinstance(v, str) for v in values) or all(_is_int(v) for v in values)):
            raise ValueError(
                "the stored classes of dtype object are not all strings or all integers"
            )
        classes = np.empty(len(values), dtype=object)
        classes[:] = values
    else:
        try:
            if not isinstance(dtype_name, str):
                raise TypeError(dtype_name)
            dtype = np.dtype(dtype_name)
        except (TypeError, ValueError):
            raise ValueError(f"classes_dtype {dtype_name!r} is not a data type") from None
        kind = CLASS_TYPES.get(dtype.kind)
        if kind is None:
            raise ValueError(
                f"classes of dtype {dtype_name!r} are not supported: class labels are strings, "
                "integers, booleans or whole numbers"
            )
        wrong = [v for v in values if type(v) is not kind]
        if wrong:
            raise ValueError(
                f"the stored classes of dtype {dtype_name!r} hold values that are not of "
                f"type {kind.__name__}: {wrong[:5]}"
            )
        if kind is float and not all(math.isfinite(v) and v == int(v) for v in values):
            raise ValueError("the stored classes of a float dtype are not all whole numbers")
        if kind is str and dtype.itemsize // 4 > max(MAX_LABEL_WIDTH, *map(len, values)):
            raise ValueError(f"classes_dtype {dtype_name!r} is wider than its labels")
        try:
            classes = np.array(values, dtype=dtype)
        except (OverflowError, ValueError):
            raise ValueError(f"the stored classes do not fit dtype {dtype_name!r}") from None
        if classes.tolist() != values:
            raise ValueError(f"the stored classes change when stored as dtype {dtype_name!r}")
    if len(set(values)) != len(values):
        repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
        raise ValueError(f"the stored classes are not distinct: {repeated} appear more than once")
    return classes


def _gene_names(names, n_genes: int) -> list[str] | None:
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("the stored gene_names are not a list of strings")
    if len(names) != n_genes:
        raise ValueError(f"{len(names)} gene names are stored for {n_genes} genes")
    return names


def _config_int(config: dict, key: str, low: int, high: int, what: str) -> int:
    value = config.get(key)
    if not _is_int(value):
        raise ValueError(f"config {key}={value!r} is not an integer")
    if not low <= value <= high:
        raise ValueError(f"config {key}={value} {what}")
    return value


def _check_config(config: dict, meta: dict) -> None:
    """Settings the generator uses as they are, besides the sizes of its networks."""
    # Older generators have neither: no clipping box, a deterministic encoder.
    for key in ("latent_bound", "kl_weight"):
        value = config.get(key, 0.0)
        if not (_is_number(value) and value >= 0):
            raise ValueError(f"config {key}={value!r} is not a finite number >= 0")
    likelihood = meta["likelihood"]
    if config.get("likelihood", likelihood) != likelihood:
        raise ValueError(f"config likelihood={config['likelihood']!r} is not {likelihood!r}")
    history = meta.get("history")
    if history is not None and not (
        isinstance(history, dict)
        and all(
            isinstance(v, list) and all(isinstance(x, (int, float)) for x in v)
            for v in history.values()
        )
    ):
        raise ValueError("the stored training history is not lists of losses by network")


def _check_panel(panel: GenePanel, n_classes: int) -> None:
    """The gene panel must describe every gene once, in the shapes decoding reads."""
    n_genes, genes, rest = panel.n_genes, panel.genes, panel.rest
    # Lengths first: a crafted n_genes must not size an allocation.
    if (
        genes.ndim != 1
        or rest.ndim != 1
        or genes.dtype.kind not in "iu"
        or rest.dtype.kind not in "iu"
        or len(genes) + len(rest) != n_genes
        or not np.array_equal(np.sort(np.concatenate([genes, rest])), np.arange(n_genes))
        or np.any(np.diff(genes) <= 0)
        or np.any(np.diff(rest) <= 0)
    ):
        raise ValueError(
            f"the gene panel does not describe {n_genes} genes (each once, in increasing order)"
        )
    for name, value in panel.state().items():
        if isinstance(value, np.ndarray) and not np.all(np.isfinite(value)):
            raise ValueError(f"the gene panel's {name} holds values that are not finite")
    if panel.center.shape != genes.shape or panel.scale.shape != genes.shape:
        raise ValueError("the standardization of the modelled genes does not match the panel")
    if np.any(panel.scale <= 0):
        raise ValueError("the gene panel's scale holds values that are not positive")
    if panel.rest_profile.shape != (n_classes, len(rest)):
        raise ValueError("the per-class profile of the other genes does not match the panel")
    spread = panel.rest_overdispersion
    if spread.shape not in ((0,), (len(rest),)) or np.any(spread < 0):
        raise ValueError("the overdispersion of the other genes does not match the panel")
    if panel.distribution.counts:
        if np.any(panel.rest_profile < 0):
            raise ValueError("the per-class composition of the other genes is negative")
        return
    # Normalized data: the other genes are drawn from these per class, and every gene is
    # clipped to its observed range.
    if (
        panel.rest_spread.shape != (n_classes, len(rest))
        or panel.rest_zero_rate.shape != (n_classes, len(rest))
        or np.any(panel.rest_spread < 0)
        or np.any((panel.rest_zero_rate < 0) | (panel.rest_zero_rate > 1))
    ):
        raise ValueError("the per-class statistics of the other genes do not match the panel")
    if (
        panel.lower.shape != (n_genes,)
        or panel.upper.shape != (n_genes,)
        or np.any(panel.lower > panel.upper)
    ):
        raise ValueError("the range of the genes does not match the panel")


def _finite(name: str, arrays: list[np.ndarray], low: float | None = None) -> None:
    for a in arrays:
        if not np.all(np.isfinite(a)) or (low is not None and np.any(a < low)):
            condition = "finite" if low is None else f"finite and >= {low:g}"
            raise ValueError(f"the stored {name} hold values that are not {condition}")


def _from_state(cls, state: dict, device) -> SCLDGenerator:
    meta = _metadata(state["meta"])
    config = dict(meta["config"])
    classes = _classes(meta["classes"], meta["classes_dtype"])
    n_classes = len(classes)
    n_genes = meta["n_genes"]
    if not _is_int(n_genes) or n_genes < 1:
        raise ValueError(f"n_genes={n_genes!r} is not a positive integer")
    gene_names = _gene_names(meta.get("gene_names"), n_genes)
    likelihoods.get(meta["likelihood"])  # a ValueError naming the known ones
    _check_config(config, meta)
    panel_state = {k: v.numpy() for k, v in state["panel"].items()}
    panel_state.update(likelihood=meta["likelihood"], n_genes=n_genes)
    panel = GenePanel.from_state(panel_state)
    _check_panel(panel, n_classes)
    # Sizes the networks are built from must be no larger than what the file holds, so
    # that building them (on the meta device, which allocates nothing) stays cheap.
    stored = [v for part in ("autoencoder", "denoiser", "classifier") for v in state[part].values()]
    largest = max((int(v.numel()) for v in stored), default=0)
    mismatch = "does not match the stored weights"
    latent_dim = _config_int(config, "latent_dim", 1, largest, mismatch)
    _config_int(config, "hidden_dim", 1, largest, mismatch)
    _config_int(config, "n_blocks", 0, len(state["denoiser"]), mismatch)
    _config_int(config, "num_train_timesteps", 1, MAX_TRAIN_TIMESTEPS, "is out of range")
    modules = build_modules(config, panel, n_classes)  # on the meta device: shapes only
    for name, module in zip(("autoencoder", "denoiser", "classifier"), modules, strict=True):
        found = {k: tuple(v.shape) for k, v in state[name].items()}
        if found != _shapes(module):
            raise ValueError(f"the stored {name} weights do not match its configuration")
        if not all(bool(torch.isfinite(v).all()) for v in state[name].values()):
            raise ValueError(f"the stored {name} weights hold values that are not finite")
    if state["latent_mean"].shape != (latent_dim,) or state["latent_std"].shape != (latent_dim,):
        raise ValueError("the latent standardization does not match the latent dimension")
    latent_mean, latent_std = state["latent_mean"].numpy(), state["latent_std"].numpy()
    _finite("latent means", [latent_mean])
    if not np.all(np.isfinite(latent_std) & (latent_std > 0)):
        raise ValueError("the stored latent standard deviations are not finite and positive")
    libraries = [lib.numpy() for lib in state["libraries"]]
    anchors = [a.numpy() for a in state["anchors"]] if "anchors" in state else None
    if len(libraries) != n_classes or (anchors is not None and len(anchors) != n_classes):
        raise ValueError(f"per-class statistics do not match the {n_classes} classes")
    if any(lib.ndim != 1 for lib in libraries):
        raise ValueError("the stored library sizes are not one list per class")
    _finite("library sizes", libraries, low=0.0)
    if panel.distribution.uses_library and any(len(lib) == 0 for lib in libraries):
        # Decoding counts draws each cell's library size from its class's.
        raise ValueError("a class has no stored library sizes, which decoding counts draws from")
    if anchors is not None and any(a.ndim != 2 or a.shape[1] != latent_dim for a in anchors):
        raise ValueError("stored anchors do not match the latent dimension")
    if anchors is not None:
        if any(len(a) == 0 for a in anchors):
            # Anchored generation starts from a class's anchors.
            raise ValueError("a class has no stored anchors, which anchored generation starts from")
        _finite("anchors", anchors)
    anchor_scales = None
    if anchors is not None and "anchor_scales" in state:
        anchor_scales = [a.numpy() for a in state["anchor_scales"]]
        if [a.shape for a in anchor_scales] != [a.shape for a in anchors]:
            raise ValueError("stored anchor scales do not match the anchors")
        _finite("anchor scales", anchor_scales, low=0.0)
    for module, name in zip(modules, ("autoencoder", "denoiser", "classifier"), strict=True):
        # Every parameter is in the state (strict loading), so none is left uninitialized.
        module.to_empty(device="cpu").load_state_dict(state[name])
    generator = cls(
        *modules,
        panel=panel,
        classes=classes,
        latent_mean=latent_mean,
        latent_std=latent_std,
        libraries=libraries,
        config=config,
        history=meta.get("history"),
        anchors=anchors,
        gene_names=gene_names,
        anchor_scales=anchor_scales,
    )
    return generator.to(device)


def build_modules(
    config: dict, panel: GenePanel, n_classes: int, generator: torch.Generator | None = None
) -> tuple[Autoencoder, Denoiser, LatentClassifier]:
    """Fresh networks for a configuration and gene panel.

    Parameters
    ----------
    config : dict
        Architecture settings (a generator's ``config``).
    panel : GenePanel
        Gene selection of the training data: sets the input and output sizes, and the
        autoencoder's starting output bias (the genes' average expression).
    n_classes : int
        Number of cell types.
    generator : torch.Generator or None, default=None
        Initialize the networks from it, on its device
        (:func:`~scld_aug.model.layers.reset_parameters`). None builds them on the meta
        device: shapes only, no memory (to check a stored state against, or
        ``to_empty`` and ``load_state_dict``).

    Returns
    -------
    autoencoder, denoiser, classifier
        Torch's global random generator is neither used nor changed.
    """
    # Built on the meta device first: constructing the layers normally would draw their
    # default initialization from torch's global generator.
    with torch.device("meta"):
        modules = (
            Autoencoder(
                n_input=len(panel.genes),
                n_output=panel.n_outputs,
                latent_dim=config["latent_dim"],
                hidden_dim=config["hidden_dim"],
                likelihood=panel.likelihood,
                # Generators saved before the variational encoder existed have no kl_weight.
                variational=float(config.get("kl_weight", 0.0)) > 0,
            ),
            Denoiser(
                config["latent_dim"],
                n_classes,
                hidden_dim=config["hidden_dim"],
                n_blocks=config["n_blocks"],
            ),
            LatentClassifier(config["latent_dim"], n_classes, hidden_dim=config["hidden_dim"]),
        )
    if any(True for module in modules for _ in module.buffers()):
        # to_empty() leaves buffers as uninitialized memory, and a state holds only the
        # persistent ones: a network with buffers needs them set here.
        raise TypeError("build_modules cannot initialize networks that hold buffers")
    if generator is None:
        return modules
    for module in modules:
        reset_parameters(module.to_empty(device=generator.device), generator)
    autoencoder = modules[0]
    with torch.no_grad():
        autoencoder.decoder[-1].bias.copy_(torch.from_numpy(panel.output_prior))
    return modules
