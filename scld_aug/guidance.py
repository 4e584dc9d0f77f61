"""Guidance used while sampling: pre-guidance (classifier-free) and post-guidance (classifier).

Pre-guidance steers the denoiser towards the target cell type by contrasting its
class-conditional and unconditional noise predictions. Post-guidance pushes samples
towards latents a classifier on noisy latents confidently assigns to the target type,
and the filter discards finished samples it does not.
"""

from __future__ import annotations

import torch


def classifier_free_guidance(
    noise_cond: torch.Tensor, noise_uncond: torch.Tensor, guidance_scale: float
) -> torch.Tensor:
    """``eps_u + w (eps_c - eps_u)``: ``w = 0`` unconditional, ``1`` conditional, ``> 1`` sharper."""
    return noise_uncond + guidance_scale * (noise_cond - noise_uncond)


def classifier_log_prob_gradient(
    classifier: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Gradient of ``log p(target | x_t)`` with respect to ``x_t``."""
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        log_probs = torch.log_softmax(classifier(x, t), dim=-1)
        selected = log_probs.gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(selected, x)
    return grad


def classifier_guidance(
    noise_pred: torch.Tensor, gradient: torch.Tensor, noise_level: float, scale: float
) -> torch.Tensor:
    """Shift the noise prediction along the classifier's score (Dhariwal & Nichol 2021):
    ``eps - sqrt(1 - alpha_bar_t) * s * grad log p(y | x_t)``."""
    return noise_pred - noise_level * scale * gradient


def filter_mask(
    probabilities: torch.Tensor, target: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Keep samples whose probability of the intended class reaches ``threshold``."""
    return probabilities.gather(1, target[:, None]).squeeze(1) >= threshold
