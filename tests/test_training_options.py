"""Training options: precision, compilation, per-network balancing, encoder kind (on the CPU)."""

import numpy as np
import pytest
import torch

from scld_aug import SCLDSampler


def test_mixed_precision_trains_a_usable_generator_and_is_part_of_the_cache_key(
    counts_data, tiny_params, tmp_path, count_trainings
):
    X, y = counts_data
    full = SCLDSampler(random_state=0, memory=tmp_path, **tiny_params).fit(X, y)
    mixed = SCLDSampler(random_state=0, memory=tmp_path, mixed_precision=True, **tiny_params)
    mixed.fit(X, y)
    assert len(count_trainings) == 2  # not served the float32 generator from memory=
    assert mixed.generator_.config["mixed_precision"] is True
    for name, losses in mixed.generator_.history.items():
        assert np.all(np.isfinite(losses)), name
        # Same data, seed and schedule: the curves agree up to bfloat16 rounding.
        reference = np.asarray(full.generator_.history[name])
        assert not np.array_equal(losses, reference)
        assert abs(np.mean(losses[-10:]) - np.mean(reference[-10:])) < 0.25 * abs(
            np.mean(reference[:10])
        ), name
    cells = mixed.generate(50, "type2")
    assert cells.min() >= 0 and np.issubdtype(cells.dtype, np.integer)


@pytest.mark.slow
def test_torch_compile_learns_what_eager_training_learns(counts_data, tiny_params):
    X, y = counts_data
    eager = SCLDSampler(random_state=0, **tiny_params).fit(X, y)
    compiled = SCLDSampler(random_state=0, torch_compile=True, **tiny_params).fit(X, y)
    for name, losses in compiled.generator_.history.items():
        reference = np.asarray(eager.generator_.history[name])
        # Compiled kernels round differently, so the curves are close, not equal.
        assert np.all(np.isfinite(losses)), name
        assert abs(np.mean(losses[-10:]) - np.mean(reference[-10:])) < 0.25 * abs(
            np.mean(reference[:10])
        ), name
    cells = compiled.generate(50, "type2")
    assert cells.min() >= 0 and np.issubdtype(cells.dtype, np.integer)


def test_autoencoder_class_balance_applies_to_the_autoencoder_alone(counts_data, tiny_params):
    """``autoencoder_class_balance`` changes the autoencoder's minibatches only; set to the
    same value as ``class_balance`` (or None) it is the single-balance training, bit for bit."""
    X, y = counts_data
    fits = {
        ae: SCLDSampler(
            random_state=0, class_balance=1.0, autoencoder_class_balance=ae, **tiny_params
        ).fit(X, y)
        for ae in (None, 1.0, 0.0)
    }
    same, explicit, uniform = (fits[k].generator_.history for k in (None, 1.0, 0.0))
    assert same == explicit
    assert uniform["autoencoder"] != same["autoencoder"]
    np.testing.assert_array_equal(fits[None].generate(20, "type2"), fits[1.0].generate(20, "type2"))


@pytest.mark.parametrize("kl_weight", [0.0, 1.0], ids=["deterministic", "variational"])
def test_anchored_starts_are_the_codes_or_draws_of_the_posteriors(
    counts_data, tiny_params, tmp_path, kl_weight
):
    """``anchor_strength=0`` decodes the anchors themselves with a deterministic encoder, and
    draws of each anchor cell's posterior with a variational one (as scVI samples); the
    posterior scales are saved with the anchors and left out with them."""
    from scld_aug import SCLDGenerator, sampling
    from scld_aug.params import SamplingParams

    X, y = counts_data
    params = {**tiny_params, "kl_weight": kl_weight}
    generator = SCLDSampler(random_state=0, **params).fit(X, y).generator_
    code = generator.class_code("type2")
    anchors = generator.anchors[code]
    z = sampling.latents(
        generator, code, 300, SamplingParams(anchor_strength=0.0), torch.Generator().manual_seed(0)
    )
    nearest = np.linalg.norm(z[:, None, :] - anchors[None], axis=2).argmin(1)
    residual = z - anchors[nearest]
    if kl_weight == 0:
        assert generator.anchor_scales is None
        assert np.abs(residual).max() == 0.0
        return
    scales = generator.anchor_scales[code]
    assert scales.shape == anchors.shape and (scales > 0).all()
    # Draws around the picked cells: spread on the scale of their posterior deviations.
    assert 0.5 < (residual / scales[nearest]).std() < 1.5
    generator.save(tmp_path / "g.pt")
    np.testing.assert_array_equal(SCLDGenerator.load(tmp_path / "g.pt").anchor_scales[code], scales)
    generator.save(tmp_path / "shared.pt", include_anchors=False)
    assert SCLDGenerator.load(tmp_path / "shared.pt").anchor_scales is None


def test_the_optimizer_is_fused_on_the_cpu_and_steps_as_adamw_does():
    """The fused AdamW kernel (the per-parameter loop cost about a tenth of a CPU fit) must
    take the steps the reference implementation takes, dispersions' faster group included."""
    from scld_aug.train import _optimizer

    def run(fused: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        module = torch.nn.Linear(20, 30)
        module.log_dispersion = torch.nn.Parameter(torch.zeros(30))
        optimizer, scheduler = _optimizer(module, lr=1e-2, steps=60)
        assert optimizer.defaults["fused"] is True
        if not fused:
            for group in optimizer.param_groups:
                group["fused"] = False
        for _ in range(60):
            x = torch.randn(16, 20)
            loss = ((module(x) - module.log_dispersion) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        return [p.detach().clone() for p in module.parameters()]

    for fused, reference in zip(run(True), run(False), strict=True):
        assert not torch.equal(reference, torch.zeros_like(reference))
        torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-6)
