"""Guidance used while sampling: pre-guidance (classifier-free) and post-guidance (classifier).

Pre-guidance steers the denoiser towards the target cell type by contrasting its
class-conditional and unconditional noise predictions. Post-guidance pushes samples
towards latents a classifier on noisy latents confidently assigns to the target type,
and the filter discards finished samples it does not.
"""

from __future__ import annotations

import torch


def classifier_free_guidance(
    noise_cond: torch.Tensor,
    noise_uncond: torch.Tensor,
    guidance_scale: float,
    noise_reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """``eps_u + w (eps_c - eps_u)``: ``w = 0`` unconditional, ``1`` conditional, ``> 1`` sharper.

    With ``noise_reference`` (the prediction for another class, e.g. the one the target is
    most easily confused with), the part of the guidance beyond ``w = 1`` extrapolates away
    from that class instead of away from the unconditional prediction:
    ``eps_c + (w - 1) (eps_c - eps_ref)``. Below ``w = 1`` it is the plain interpolation.
    """
    if noise_reference is None or guidance_scale <= 1.0:
        return noise_uncond + guidance_scale * (noise_cond - noise_uncond)
    return noise_cond + (guidance_scale - 1.0) * (noise_cond - noise_reference)


def most_confusable(
    classifier: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Per sample, the class other than ``target`` that the latent classifier finds most
    probable for the noisy latent ``x_t``."""
    logits = classifier(x_t, t).float()
    logits = logits.scatter(1, target[:, None], -torch.inf)
    return logits.argmax(1)


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
