"""Training: autoencoder first, then latent diffusion and the latent classifier on its codes.

Each network is trained for a fixed number of optimizer steps on weighted minibatches
(``class_balance``), so rare cell types are seen as often as the caller asks.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from tqdm.auto import tqdm

from scld_aug import likelihoods
from scld_aug._random import derive_seeds, stream_seed
from scld_aug.data import (
    CellRows,
    MinibatchSampler,
    cell_rows,
    iter_row_chunks,
    library_sizes,
    resolve_likelihood,
    sampling_weights,
)
from scld_aug.distributed import World
from scld_aug.generator import SCLDGenerator, build_modules
from scld_aug.genes import GenePanel
from scld_aug.model import Autoencoder, NoiseSchedule
from scld_aug.model.layers import use_generator
from scld_aug.params import TrainingConfig

logger = logging.getLogger(__name__)

Callback = Callable[[str, int, float], None]
LOSS_READ_EVERY = 50
# Steps between the losses reported at DEBUG level (``scld-aug ... --verbose``).
LOSS_LOG_EVERY = 500
# Latent codes kept per class for anchored generation: enough to cover a type's variety,
# bounded so that atlas-sized training sets do not bloat the saved generator.
MAX_ANCHORS = 4096
# Devices with torch's fused AdamW kernel (CPU since torch 2.4).
FUSED_OPTIMIZER_DEVICES = ("cpu", "cuda")
# Keys of the torch generators a training derives from its seed (scld_aug._random.stream_seed):
# initial weights, and dropout masks with the variational encoder's posterior draws.
INIT_STREAM, DROPOUT_STREAM = 1, 2


def _optimizer(module: nn.Module, lr: float, steps: int):
    # Gene-wise dispersions travel several units in log space: give them a faster rate.
    dispersion = [p for n, p in module.named_parameters() if n == "log_dispersion"]
    others = [p for n, p in module.named_parameters() if n != "log_dispersion"]
    groups = [{"params": others, "lr": lr}]
    if dispersion:
        groups.append({"params": dispersion, "lr": 10 * lr, "weight_decay": 0.0})
    # The fused kernel updates every parameter in one pass (same arithmetic): on CPU the
    # per-parameter loop cost about a tenth of a fit (Baron: 90 s -> 83 s with it fused).
    fused = next(module.parameters()).device.type in FUSED_OPTIMIZER_DEVICES
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=1e-4, fused=fused)
    warmup = max(1, steps // 20)

    def factor(step: int) -> float:
        # Linear warm-up, then cosine decay to 5% of the peak rate.
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return optimizer, scheduler


def _loop(
    name: str,
    module: nn.Module,
    steps: int,
    lr: float,
    loss_fn: Callable[[], torch.Tensor],
    verbose: bool,
    callback: Callback | None,
    mixed_precision: bool = False,
) -> list[float]:
    module.train()
    device_type = next(module.parameters()).device.type
    # bfloat16 needs no loss scaling; losses and likelihoods are computed in float32.
    autocast = torch.autocast(device_type, dtype=torch.bfloat16, enabled=mixed_precision)
    optimizer, scheduler = _optimizer(module, lr, steps)
    losses: list[float] = []
    pending: list[torch.Tensor] = []

    def flush() -> None:
        # Reading a loss waits for the device: read them in groups, not every step.
        if not pending:
            return
        values = torch.stack(pending).cpu().tolist()
        if callback is not None:
            for i, value in enumerate(values):
                callback(name, len(losses) + i, value)
        losses.extend(values)
        pending.clear()
        bar.set_postfix(loss=f"{values[-1]:.4g}", refresh=False)
        if len(losses) % LOSS_LOG_EVERY == 0:
            logger.debug(f"    {name} step {len(losses)}/{steps}: loss {values[-1]:.4g}")

    bar = tqdm(range(steps), desc=f"train {name}", disable=not verbose, leave=False)
    for _ in bar:
        with autocast:
            loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(module.parameters(), 5.0)
        optimizer.step()
        scheduler.step()
        pending.append(loss.detach())
        if len(pending) == LOSS_READ_EVERY:
            flush()
    flush()
    module.eval()
    return losses


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host array to ``device``; on CUDA through pinned memory, so the copy runs alongside
    the previous step's kernels instead of stalling them."""
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _prepare(module: nn.Module, world: World, device: torch.device, compile_: bool) -> nn.Module:
    """What training calls: the module behind DDP when distributed, compiled when asked."""
    module = world.wrap(module, device)
    return torch.compile(module) if compile_ else module


def train_generator(
    X: sp.csr_matrix | CellRows,
    labels: np.ndarray,
    config: TrainingConfig,
    random_state: Any,
    device: torch.device,
    *,
    gene_names: Any = None,
    verbose: bool = False,
    compile_networks: bool = False,
    world: World | None = None,
    callback: Callback | None = None,
) -> SCLDGenerator:
    """Train a generator: the one entry point of ``SCLDSampler.fit``,
    :func:`~scld_aug.pretrain.pretrain` and ``scld-aug train``, so they cannot drift.

    ``X`` is a canonical CSR matrix (:func:`~scld_aug.data.as_csr`) or the
    :class:`~scld_aug.data.CellRows` of a backed file; ``labels`` the class of every cell.
    The seed comes from ``random_state`` as the sampler derives it, and every random number
    from generators seeded by it (:func:`fit_generator`): torch's global random state is
    neither used nor changed, so fits running at the same time in threads of one process
    give what each gives alone. Under ``torchrun`` (``world`` of several processes) every
    process calls this with the same data and seed. ``gene_names`` are recorded in the
    generator, so that data given to it later can be checked by name.

    """
    world = world or World()
    labels = np.asarray(labels)
    classes, codes = np.unique(labels, return_inverse=True)
    seed = derive_seeds(random_state, 2)[0]

    generator = fit_generator(
        X,
        codes.astype(np.int64),
        classes,
        config,
        seed,
        device,
        verbose=verbose and world.is_main,
        callback=callback,
        world=world,
        compile_networks=compile_networks,
    )
    generator.gene_names = None if gene_names is None else np.asarray(gene_names, dtype=str)
    return generator


def fit_generator(
    X: sp.csr_matrix | CellRows,
    codes: np.ndarray,
    classes: np.ndarray,
    config: TrainingConfig,
    seed: int,
    device: torch.device,
    verbose: bool = False,
    callback: Callback | None = None,
    world: World | None = None,
    compile_networks: bool = False,
) -> SCLDGenerator:
    """Train a generator on ``X`` (cells x genes: CSR in memory, or :class:`CellRows` over a
    backed ``.h5ad``) with integer class ``codes``.

    Every random number comes from generators of this call, seeded by ``seed``: the initial
    weights (on the CPU, so that they do not depend on the device), the dropout masks and
    posterior draws, the minibatches and the diffusion noise. torch's global generator is
    neither used nor changed. Under ``torchrun`` (``world`` of several processes) every
    process calls this with the same data and seed; all start from the same weights (DDP
    also gives every process rank 0's), each draws its own minibatches, dropout masks and
    noise, and DDP averages the gradients.
    ``compile_networks`` runs the training forward passes through ``torch.compile``.
    """
    world = world or World()
    mixed_precision = config.mixed_precision and device.type != "mps"
    if config.mixed_precision and not mixed_precision:
        warnings.warn(
            "mixed_precision=True is not applied on MPS (no bfloat16 autocast there); "
            "training runs in float32.",
            UserWarning,
            stacklevel=3,
        )
    rows_in = cell_rows(X)
    if config.likelihood == "auto":
        config = replace(config, likelihood=resolve_likelihood(rows_in, "auto"))
    n_classes = len(classes)
    uses_library = likelihoods.get(config.likelihood).uses_library
    # One process keeps the single-process stream; ranks of a DDP run draw distinct ones.
    rng = np.random.default_rng([seed, world.rank] if world.distributed else seed)
    weights = sampling_weights(codes, n_classes, config.class_balance)
    library = library_sizes(rows_in) if uses_library else None
    if library is not None and world.is_main and (empty := np.flatnonzero(library == 0)).size:
        warnings.warn(
            f"{len(empty)} cell(s) have zero total counts (first at row {empty[0]}). They "
            "carry no expression signal; consider removing empty cells before augmenting.",
            UserWarning,
            stacklevel=4,
        )
    panel = GenePanel.fit(
        rows_in, codes, n_classes, weights, library, config.n_top_genes, config.likelihood
    )
    init = torch.Generator().manual_seed(stream_seed(seed, INIT_STREAM))
    autoencoder, denoiser, classifier = (
        m.to(device) for m in build_modules(asdict(config), panel, n_classes, init)
    )
    # Under DDP every rank draws its own dropout masks, as it draws its own minibatches.
    dropout_key = (DROPOUT_STREAM, world.rank) if world.distributed else (DROPOUT_STREAM,)
    dropout = torch.Generator(device=device).manual_seed(stream_seed(seed, *dropout_key))
    batches = MinibatchSampler(weights, config.batch_size, rng)
    ae_balance = config.autoencoder_class_balance
    ae_batches = (
        batches
        if ae_balance is None or ae_balance == config.class_balance
        else MinibatchSampler(
            sampling_weights(codes, n_classes, ae_balance), config.batch_size, rng
        )
    )
    modelled = panel.modelled(rows_in)
    other = panel.other_totals(modelled, library)
    # Empty cells (library 0) would give log(0); a floor of 1 keeps their loss finite.
    library_floor = np.maximum(library, 1.0).astype(np.float32) if uses_library else None
    train_autoencoder = _prepare(autoencoder, world, device, compile_networks)

    def autoencoder_loss() -> torch.Tensor:
        rows = ae_batches.draw()
        values = modelled.take(rows)
        lib = library[rows] if uses_library else None
        x = _to_device(panel.encoder_input(values, lib), device)
        target = _to_device(
            panel.decoder_target(values, other[rows] if other is not None else None), device
        )
        lib_t = _to_device(library_floor[rows], device) if uses_library else None
        return train_autoencoder(x, target, lib_t, config.kl_weight) / target.shape[1]

    history: dict[str, list[float]] = {}

    logger.info(
        f"Training SCLD on {rows_in.shape[0]} cells x {panel.n_genes} genes "
        f"({len(panel.genes)} modelled), {n_classes} classes, on {device}"
    )

    def run(name: str, module: nn.Module, steps: int, loss_fn) -> None:
        start = time.perf_counter()
        with use_generator(module, dropout):
            history[name] = _loop(
                name,
                module,
                steps,
                config.learning_rate,
                loss_fn,
                verbose,
                callback,
                mixed_precision,
            )
        logger.info(
            f"  {name}: {steps} steps in {time.perf_counter() - start:.1f} s "
            f"(final loss {history[name][-1]:.4g})"
        )

    run("autoencoder", autoencoder, config.autoencoder_steps, autoencoder_loss)

    if world.distributed:
        # One process encodes; the others receive its codes, so all hold the same ones.
        shape = (rows_in.shape[0], config.latent_dim * (2 if autoencoder.variational else 1))
        z = torch.empty(shape, device=device)
        if world.is_main:
            encoded = encode_cells(autoencoder, modelled, panel, library, device)
            z.copy_(torch.from_numpy(np.hstack([e for e in encoded if e is not None])))
        received = world.broadcast(z).cpu().numpy()
        latents, scales = (
            np.array_split(received, 2, axis=1) if autoencoder.variational else (received, None)
        )
        latents = np.ascontiguousarray(latents)
    else:
        latents, scales = encode_cells(autoencoder, modelled, panel, library, device)
    latent_mean = latents.mean(0)
    # Variational: the diffusion model learns codes drawn from the posteriors, whose spread
    # is the spread of the means plus the average posterior variance.
    spread = latents.var(0) + (0.0 if scales is None else np.square(scales).mean(0))
    latent_std = np.sqrt(spread) + 1e-6
    # In place: on atlases every copy of the codes is 128 bytes per cell.
    standardized = latents
    standardized -= latent_mean
    standardized /= latent_std
    reach = np.abs(standardized)
    if scales is not None:
        scales /= latent_std
        reach += 3.0 * scales
    latent_bound = float(reach.max()) * 1.1
    del reach
    z_all = torch.from_numpy(standardized).float().to(device)
    s_all = None if scales is None else torch.from_numpy(scales).float().to(device)
    y_all = torch.from_numpy(codes).long().to(device)
    schedule_T = config.num_train_timesteps
    # Noise is drawn where it is used: no host-to-device copy (or sync) per step.
    torch_gen = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)))
    schedule = NoiseSchedule(schedule_T, config.beta_schedule)
    train_denoiser = _prepare(denoiser, world, device, compile_networks)
    train_classifier = _prepare(classifier, world, device, compile_networks)

    def noisy_batch():
        rows = _to_device(batches.draw(), device)
        z0, y = z_all[rows], y_all[rows]
        if s_all is not None:
            z0 = z0 + s_all[rows] * torch.randn(z0.shape, generator=torch_gen, device=device)
        noise = torch.randn(z0.shape, generator=torch_gen, device=device)
        t = torch.randint(0, schedule_T, (len(rows),), generator=torch_gen, device=device)
        return y, noise, t, schedule.add_noise(z0, noise, t)

    def diffusion_loss() -> torch.Tensor:
        y, noise, t, z_t = noisy_batch()
        drop = torch.rand(len(y), generator=torch_gen, device=device) < config.label_dropout
        y = torch.where(drop, torch.full_like(y, denoiser.null_class), y)
        return nn.functional.mse_loss(train_denoiser(z_t, t, y), noise)

    def classifier_loss() -> torch.Tensor:
        y, _, t, z_t = noisy_batch()
        return nn.functional.cross_entropy(train_classifier(z_t, t), y)

    run("diffusion", denoiser, config.diffusion_steps, diffusion_loss)
    run("classifier", classifier, config.classifier_steps, classifier_loss)

    libraries = [library[codes == c] if uses_library else np.zeros(0) for c in range(n_classes)]
    anchor_rows = select_anchors(codes, n_classes, int(rng.integers(2**62)))
    return SCLDGenerator(
        autoencoder,
        denoiser,
        classifier,
        panel=panel,
        classes=classes,
        latent_mean=latent_mean,
        latent_std=latent_std,
        libraries=libraries,
        config={**asdict(config), "latent_bound": latent_bound},
        history=history,
        anchors=[np.ascontiguousarray(standardized[r], dtype=np.float32) for r in anchor_rows],
        anchor_scales=(
            None
            if scales is None
            else [np.ascontiguousarray(scales[r], dtype=np.float32) for r in anchor_rows]
        ),
    )


@torch.no_grad()
def encode_cells(
    autoencoder: Autoencoder,
    modelled,
    panel: GenePanel,
    library: np.ndarray | None,
    device,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Latent codes (not standardized) of every row of ``modelled`` (the modelled genes'
    :class:`~scld_aug.data.CellRows`, :meth:`GenePanel.modelled`), in chunks of 1,024 rows,
    and the posterior standard deviations of a variational encoder (None otherwise)."""
    codes = scales = None
    for start, chunk in iter_row_chunks(modelled, 1024):
        lib = library[start : start + chunk.shape[0]] if library is not None else None
        x = torch.from_numpy(panel.encoder_input(chunk.toarray(), lib)).to(device)
        mean, log_var = autoencoder.posterior(x)
        z = mean.cpu().numpy()
        if codes is None:  # written in place: no list of blocks plus a concatenated copy
            codes = np.empty((modelled.shape[0], z.shape[1]), dtype=z.dtype)
            if autoencoder.variational:
                scales = np.empty_like(codes)
        codes[start : start + len(z)] = z
        if scales is not None:
            scales[start : start + len(z)] = (0.5 * log_var).exp().cpu().numpy()
    return codes, scales


def select_anchors(codes: np.ndarray, n_classes: int, seed: int) -> list[np.ndarray]:
    """Per class, the rows of at most ``MAX_ANCHORS`` cells, chosen at random."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(n_classes):
        rows = np.flatnonzero(codes == c)
        if len(rows) > MAX_ANCHORS:
            rows = np.sort(rng.choice(rows, MAX_ANCHORS, replace=False))
        chosen.append(rows)
    return chosen
