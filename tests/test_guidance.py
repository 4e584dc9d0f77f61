import torch

from scld_aug.guidance import (
    classifier_free_guidance,
    classifier_guidance,
    classifier_log_prob_gradient,
    filter_mask,
    most_confusable,
)


def test_classifier_free_guidance_interpolates_and_extrapolates():
    cond, uncond = torch.tensor([2.0]), torch.tensor([1.0])
    assert classifier_free_guidance(cond, uncond, 0.0).item() == 1.0
    assert classifier_free_guidance(cond, uncond, 1.0).item() == 2.0
    assert classifier_free_guidance(cond, uncond, 3.0).item() == 4.0


def test_confusable_reference_extrapolates_away_from_it_beyond_w_1_only():
    cond, uncond, other = torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([1.5])
    # At and below w = 1 the reference changes nothing: plain interpolation.
    for w in (0.0, 0.5, 1.0):
        assert classifier_free_guidance(cond, uncond, w, other).item() == (
            classifier_free_guidance(cond, uncond, w).item()
        )
    # eps_c + (w - 1) (eps_c - eps_other) = 2 + 2 * 0.5
    assert classifier_free_guidance(cond, uncond, 3.0, other).item() == 3.0


def test_most_confusable_is_the_most_probable_other_class():
    class Fixed(torch.nn.Module):
        def forward(self, x, t):
            return torch.tensor([[5.0, 1.0, 3.0], [0.0, 9.0, 8.0]])

    t = torch.zeros(2, dtype=torch.long)
    picked = most_confusable(Fixed(), torch.zeros(2, 1), t, torch.tensor([0, 1]))
    assert picked.tolist() == [2, 2]
    picked = most_confusable(Fixed(), torch.zeros(2, 1), t, torch.tensor([2, 2]))
    assert picked.tolist() == [0, 1]


class _Linear(torch.nn.Module):
    """Logits of class 1 grow with x[0]: the gradient of log p(1|x) points along +x[0]."""

    def forward(self, x, t):
        return torch.stack([torch.zeros_like(x[:, 0]), 3 * x[:, 0]], dim=1)


def test_classifier_gradient_points_towards_target_class():
    x = torch.zeros(4, 2)
    t = torch.zeros(4, dtype=torch.long)
    grad = classifier_log_prob_gradient(_Linear(), x, t, torch.ones(4, dtype=torch.long))
    assert torch.all(grad[:, 0] > 0) and torch.all(grad[:, 1] == 0)
    away = classifier_log_prob_gradient(_Linear(), x, t, torch.zeros(4, dtype=torch.long))
    assert torch.all(away[:, 0] < 0)


def test_classifier_guidance_moves_noise_against_gradient():
    eps = torch.zeros(1, 2)
    grad = torch.tensor([[1.0, 0.0]])
    out = classifier_guidance(eps, grad, noise_level=0.5, scale=2.0)
    torch.testing.assert_close(out, torch.tensor([[-1.0, 0.0]]))


def test_filter_mask_uses_target_probability():
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]])
    mask = filter_mask(probs, torch.tensor([0, 0, 1]), 0.5)
    assert mask.tolist() == [True, False, True]
