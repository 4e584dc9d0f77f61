"""Sampling from a trained generator: the guided denoising loop, anchored starts and the filter.

The loop is short and owned here (the schedule only knows the noise levels): start from
noise, or from noised latent codes of real cells of the class (anchored generation); at
every step combine the conditional and unconditional noise predictions (classifier-free
guidance, pre-guidance) and optionally push along the latent classifier's gradient
(post-guidance); optionally reject latents the classifier does not assign to the class and
draw again (the filter); finally decode the latents to cells.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch

from scld_aug.data import plain_scalar
from scld_aug.guidance import (
    classifier_free_guidance,
    classifier_guidance,
    classifier_log_prob_gradient,
    filter_mask,
    most_confusable,
)
from scld_aug.params import SamplingParams

if TYPE_CHECKING:
    from scld_aug.generator import SCLDGenerator

# Latents denoised at a time.
SAMPLE_BATCH = 4096
# Cells decoded at a time: a block's rates span every gene the class expresses (512 x 20,000
# genes = 40 MB in float32); on the CPU, smaller blocks were no faster, larger ones slower.
DECODE_BATCH = 512


@torch.no_grad()
def denoise(
    generator: SCLDGenerator,
    x: torch.Tensor,
    code: int,
    params: SamplingParams,
    timesteps: list[int],
) -> torch.Tensor:
    """Guided denoising (DPM-Solver++(2M) or DDIM) from noisy latents at ``timesteps[0]``
    to clean standardized codes."""
    schedule, denoiser = generator.schedule, generator.denoiser
    n = x.shape[0]
    labels = torch.full((n,), code, dtype=torch.long, device=x.device)
    null = torch.full_like(labels, denoiser.null_class)
    w = params.guidance_scale
    earlier = None  # DPM-Solver++'s clean-sample prediction of the previous step
    for t, prev_t in zip(timesteps, [*timesteps[1:], -1], strict=True):
        tt = torch.full((n,), t, dtype=torch.long, device=x.device)
        if w == 1.0:
            eps = denoiser(x, tt, labels)
        elif w > 1.0 and params.guidance_reference == "confusable":
            other = most_confusable(generator.classifier, x, tt, labels)
            eps_c, eps_o = denoiser(
                torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([labels, other])
            ).chunk(2)
            eps = classifier_free_guidance(eps_c, eps_c, w, noise_reference=eps_o)
        else:
            eps_c, eps_u = denoiser(
                torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([labels, null])
            ).chunk(2)
            eps = classifier_free_guidance(eps_c, eps_u, w)
        if params.post_guidance_scale > 0:
            grad = classifier_log_prob_gradient(generator.classifier, x, tt, labels)
            eps = classifier_guidance(
                eps, grad, schedule.noise_level(t), params.post_guidance_scale
            )
        if params.solver == "ddim":
            x = schedule.step(eps, t, x, prev_t)
        else:
            x0 = schedule.predict_x0(eps, t, x)
            x, earlier = schedule.dpm_solver_step(x0, t, x, prev_t, earlier), (x0, t)
    return x


def draw(
    generator: SCLDGenerator,
    code: int,
    size: int,
    params: SamplingParams,
    rng: torch.Generator,
) -> torch.Tensor:
    """One batch of latents: from pure noise, or from noised codes of real cells."""
    noise = torch.randn(size, generator.latent_mean.shape[0], generator=rng)
    timesteps = generator.schedule.timesteps(params.n_sampling_steps)
    if params.anchor_strength >= 1.0:
        return denoise(generator, noise.to(generator.device), code, params, timesteps)
    # SDEdit-style: noise real codes of the class part of the way, then denoise back.
    anchors = generator.class_anchors(code)
    picks = torch.randint(len(anchors), (size,), generator=rng)
    x0 = torch.from_numpy(anchors)[picks]
    scales = generator.class_anchor_scales(code)
    if scales is not None:  # variational encoder: a draw of each picked cell's posterior
        x0 = x0 + torch.from_numpy(scales)[picks] * torch.randn(x0.shape, generator=rng)
    kept = timesteps[len(timesteps) - int(round(len(timesteps) * params.anchor_strength)) :]
    if not kept:
        return x0.to(generator.device)
    t0 = torch.full((size,), kept[0], dtype=torch.long)
    x = generator.schedule.add_noise(x0, noise, t0)
    return denoise(generator, x.to(generator.device), code, params, kept)


def latents(
    generator: SCLDGenerator,
    code: int,
    n: int,
    params: SamplingParams,
    rng: torch.Generator,
) -> np.ndarray:
    """``n`` standardized latent codes of class ``code``, filtered when asked."""
    accepted: list[torch.Tensor] = []
    rejected: list[tuple[torch.Tensor, torch.Tensor]] = []
    n_accepted = 0
    rounds = params.max_filter_rounds if params.filter_threshold is not None else 1
    for _ in range(rounds):
        need = n - n_accepted
        # Over-draw when filtering so that one round usually suffices.
        n_draw = need if params.filter_threshold is None else int(np.ceil(need * 1.25)) + 8
        for start in range(0, n_draw, SAMPLE_BATCH):
            size = min(SAMPLE_BATCH, n_draw - start)
            z = draw(generator, code, size, params, rng)
            if params.filter_threshold is None:
                accepted.append(z)
                continue
            probs = generator.class_probabilities(z)
            target = torch.full((size,), code, device=z.device)
            keep = filter_mask(probs, target, params.filter_threshold)
            accepted.append(z[keep])
            rejected.append((z[~keep], probs[~keep, code]))
        n_accepted = sum(len(a) for a in accepted)
        if n_accepted >= n:
            break
    chosen = torch.cat(accepted)[:n]  # every round appends, so never empty
    if len(chosen) < n:
        missing = n - len(chosen)
        z_rej = torch.cat([r[0] for r in rejected])
        p_rej = torch.cat([r[1] for r in rejected])
        best = torch.argsort(p_rej, descending=True, stable=True)[:missing]
        warnings.warn(
            f"Filter (threshold {params.filter_threshold}) accepted only {len(chosen)} of {n} "
            f"cells of class {plain_scalar(generator.classes[code])!r} in {rounds} rounds; the "
            f"remaining {missing} are the best-scoring rejected samples. Lower "
            "filter_threshold, raise max_filter_rounds or guidance, or check that this class "
            "is learnable.",
            UserWarning,
            stacklevel=4,
        )
        chosen = torch.cat([chosen, z_rej[best]])
    return chosen.cpu().numpy()


def sample(
    generator: SCLDGenerator,
    label,
    n: int,
    params: SamplingParams,
    seed: int,
    batch_size: int = DECODE_BATCH,
) -> Iterator[np.ndarray | sp.csr_matrix]:
    """Synthetic cells of class ``label`` as blocks of at most ``batch_size`` rows (CSR for
    sampled counts, dense otherwise).

    Deterministic for a given ``seed`` on CPU; global random state is not touched. Blocks
    are decoded on as many threads as torch uses (``n_jobs`` inside the sampler), each from
    its own random stream, so the number of decoding threads does not change the cells.
    """
    code = generator.class_code(label)
    generator.panel.distribution.check_output(params.output)
    torch_rng = torch.Generator().manual_seed(seed)
    codes = latents(generator, code, n, params, torch_rng)
    starts = range(0, n, batch_size)
    # One seed per block, so that blocks can decode in any order on any number of threads.
    seeds = np.random.SeedSequence(seed).generate_state(len(starts), np.uint64) >> np.uint64(1)

    def block(i: int) -> np.ndarray | sp.csr_matrix:
        rows = codes[starts[i] : starts[i] + batch_size]
        return generator.decode(rows, code, params.output, int(seeds[i]))

    workers = min(torch.get_num_threads(), len(starts)) if generator.device.type == "cpu" else 1
    if workers <= 1:
        yield from map(block, range(len(starts)))
        return
    # torch's samplers run serially but release the GIL, so blocks decode in parallel.
    with ThreadPoolExecutor(workers) as pool:
        yield from pool.map(block, range(len(starts)))
