"""The fitted generator: autoencoder + latent diffusion + latent classifier + statistics.

It is independent of scikit-learn: ``SCLDSampler`` has one, caches it, saves it and asks
it for cells. ``sample`` runs the guided DDIM loop in latent space and decodes the
result to cells of every input gene.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from scld_aug import sampling
from scld_aug.data import plain_scalar
from scld_aug.files import atomic_torch_save, load_model_file
from scld_aug.genes import GenePanel
from scld_aug.model import Autoencoder, Denoiser, LatentClassifier, NoiseSchedule
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
        :mod:`scld_aug.sampling`. ``params.latent_noise`` must be a number: ``"auto"`` is
        chosen by :class:`~scld_aug.SCLDSampler` from the training cells.
        ``params.latent_interpolation="auto"`` is measured here, from the generator's own
        training codes (:func:`scld_aug.sampling.interpolation_level`).

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
        ValueError instead of allocating what its metadata claims.
        """
        try:
            return _from_state(cls, state, device)
        except (KeyError, TypeError, IndexError, AttributeError, RuntimeError) as err:
            raise ValueError(f"invalid generator state ({type(err).__name__}: {err})") from None

    def save(self, path: str | os.PathLike, include_anchors: bool = True) -> None:
        """Write the generator to ``path`` atomically (tensors and JSON only).

        Load it with :meth:`load`, or pass the path as ``SCLDSampler(generator=path)``.

        Parameters
        ----------
        path : str or path-like
        include_anchors : bool, default=True
            Keep the latent codes of (up to 4,096 per class) training cells,
            which anchored generation (``anchor_strength < 1``) starts from, and the
            library size of every training cell. With ``anchor_strength=0`` those codes
            decode back into the training cells, so pass ``False`` before sharing a
            generator trained on data you may not share: library sizes are then kept as
            ``LIBRARY_QUANTILES`` quantiles per class and anchored generation is not
            available. See the how-to guide on sharing models for what a generator
            reveals either way.
        """
        atomic_torch_save(
            {"format": GENERATOR_FORMAT, "generator": self.state(include_anchors)}, Path(path)
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


def _from_state(cls, state: dict, device) -> SCLDGenerator:
    meta = json.loads(state["meta"])
    config = dict(meta["config"])
    panel_state = {k: v.numpy() for k, v in state["panel"].items()}
    panel_state.update(likelihood=meta["likelihood"], n_genes=int(meta["n_genes"]))
    panel = GenePanel.from_state(panel_state)
    n_classes = len(meta["classes"])
    n_genes = panel.n_genes
    if len(panel.genes) + len(panel.rest) != n_genes or not (
        np.all((panel.genes >= 0) & (panel.genes < n_genes))
        and np.all((panel.rest >= 0) & (panel.rest < n_genes))
    ):
        raise ValueError(f"the gene panel does not describe {n_genes} genes")
    # Sizes the networks are built from must be no larger than what the file holds, so
    # that building them (on the meta device, which allocates nothing) stays cheap.
    stored = [v for part in ("autoencoder", "denoiser", "classifier") for v in state[part].values()]
    largest = max((int(v.numel()) for v in stored), default=0)
    for key in ("latent_dim", "hidden_dim"):
        if not 1 <= int(config[key]) <= largest:
            raise ValueError(f"config {key}={config[key]} does not match the stored weights")
    if not 0 <= int(config["n_blocks"]) <= len(state["denoiser"]):
        raise ValueError(f"config n_blocks={config['n_blocks']} does not match the stored weights")
    if not 1 <= int(config["num_train_timesteps"]) <= MAX_TRAIN_TIMESTEPS:
        raise ValueError(f"num_train_timesteps={config['num_train_timesteps']} is out of range")
    with torch.device("meta"):
        skeleton = build_modules(config, panel, n_classes)
    for name, module in zip(("autoencoder", "denoiser", "classifier"), skeleton, strict=True):
        found = {k: tuple(v.shape) for k, v in state[name].items()}
        if found != _shapes(module):
            raise ValueError(f"the stored {name} weights do not match its configuration")
    latent_dim = int(config["latent_dim"])
    if panel.rest_profile.shape != (n_classes, len(panel.rest)):
        raise ValueError("the per-class profile of the other genes does not match the panel")
    spread = panel.rest_overdispersion
    if spread.shape not in ((0,), (len(panel.rest),)) or not np.all(
        np.isfinite(spread) & (spread >= 0)
    ):
        raise ValueError("the overdispersion of the other genes does not match the panel")
    if state["latent_mean"].shape != (latent_dim,) or state["latent_std"].shape != (latent_dim,):
        raise ValueError("the latent standardization does not match the latent dimension")
    libraries = [lib.numpy() for lib in state["libraries"]]
    anchors = [a.numpy() for a in state["anchors"]] if "anchors" in state else None
    if len(libraries) != n_classes or (anchors is not None and len(anchors) != n_classes):
        raise ValueError(f"per-class statistics do not match the {n_classes} classes")
    if anchors is not None and any(a.ndim != 2 or a.shape[1] != latent_dim for a in anchors):
        raise ValueError("stored anchors do not match the latent dimension")
    anchor_scales = None
    if anchors is not None and "anchor_scales" in state:
        anchor_scales = [a.numpy() for a in state["anchor_scales"]]
        if [a.shape for a in anchor_scales] != [a.shape for a in anchors]:
            raise ValueError("stored anchor scales do not match the anchors")
    classes = np.array(
        meta["classes"],
        dtype=object if meta["classes_dtype"] == "object" else meta["classes_dtype"],
    )
    modules = build_modules(config, panel, n_classes)
    for module, name in zip(modules, ("autoencoder", "denoiser", "classifier"), strict=True):
        module.load_state_dict(state[name])
    generator = cls(
        *modules,
        panel=panel,
        classes=classes,
        latent_mean=state["latent_mean"].numpy(),
        latent_std=state["latent_std"].numpy(),
        libraries=libraries,
        config=config,
        history=meta.get("history"),
        anchors=anchors,
        gene_names=meta.get("gene_names"),
        anchor_scales=anchor_scales,
    )
    return generator.to(device)


def build_modules(
    config: dict, panel: GenePanel, n_classes: int
) -> tuple[Autoencoder, Denoiser, LatentClassifier]:
    """Fresh (untrained) networks for a configuration and gene panel."""
    autoencoder = Autoencoder(
        n_input=len(panel.genes),
        n_output=panel.n_outputs,
        latent_dim=config["latent_dim"],
        hidden_dim=config["hidden_dim"],
        likelihood=panel.likelihood,
        # Generators saved before the variational encoder existed have no kl_weight.
        variational=float(config.get("kl_weight", 0.0)) > 0,
    )
    with torch.no_grad():
        autoencoder.decoder[-1].bias.copy_(torch.from_numpy(panel.output_prior))
    denoiser = Denoiser(
        config["latent_dim"],
        n_classes,
        hidden_dim=config["hidden_dim"],
        n_blocks=config["n_blocks"],
    )
    classifier = LatentClassifier(config["latent_dim"], n_classes, hidden_dim=config["hidden_dim"])
    return autoencoder, denoiser, classifier
