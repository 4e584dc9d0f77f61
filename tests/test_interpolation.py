"""Latent interpolation: where ``"auto"`` applies it, and what it does to the codes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from scld_aug import SCLDSampler, interpolation, sampling
from scld_aug.params import SamplingParams
from tests.conftest import TINY, make_counts


@pytest.fixture(scope="module")
def data():
    return make_counts()


@pytest.fixture(scope="module")
def sampler(data):
    # Long enough for the denoiser to leave the corners of the clipped range, where the
    # tiniest generators put every code.
    params = {**TINY, "diffusion_steps": 400, "n_sampling_steps": 10}
    return SCLDSampler(random_state=0, **params).fit(*data)


@pytest.fixture(scope="module")
def generator(sampler):
    return sampler.generator_


def _codes(generator, code, params, n=64, seed=3):
    return sampling.latents(generator, code, n, params, torch.Generator().manual_seed(seed))


@given(
    n=st.integers(1, 40),
    m=st.integers(1, 12),
    level=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_interpolated_codes_lie_on_segments_toward_training_codes(n, m, level, seed):
    rng = np.random.default_rng(seed)
    codes = rng.normal(size=(n, 5)).astype(np.float32)
    training = rng.normal(size=(m, 5)).astype(np.float32)
    before = codes.copy(), training.copy()
    moved = interpolation.interpolate(codes, training, level, torch.Generator().manual_seed(seed))
    np.testing.assert_array_equal(codes, before[0])  # inputs untouched
    np.testing.assert_array_equal(training, before[1])
    assert moved.shape == codes.shape and moved.dtype == np.float32
    # Each moved code is codes[i] + f (training[j] - codes[i]) for some j and 0 <= f <= level.
    step = moved - codes
    fits = []
    for i in range(n):
        direction = training - codes[i]
        norms = (direction**2).sum(1)
        f = np.where(norms > 0, direction @ step[i] / np.maximum(norms, 1e-30), 0.0)
        residual = np.linalg.norm(step[i] - f[:, None] * direction, axis=1)
        ok = (residual < 1e-4 * (1 + np.sqrt(norms))) & (f >= -1e-5) & (f <= level + 1e-5)
        fits.append(ok.any())
    assert all(fits)
    again = interpolation.interpolate(codes, training, level, torch.Generator().manual_seed(seed))
    np.testing.assert_array_equal(moved, again)


def test_latent_novelty_is_near_zero_for_copies_and_near_one_for_new_draws():
    rng = np.random.default_rng(0)
    training = rng.normal(size=(300, 8))
    copies = training[rng.integers(300, size=500)] + rng.normal(scale=0.01, size=(500, 8))
    fresh = rng.normal(size=(500, 8))
    assert interpolation.latent_novelty(copies, training) < 0.02
    assert 0.8 < interpolation.latent_novelty(fresh, training) < 1.25


def test_auto_interpolates_a_memorized_class_and_leaves_a_generalized_one(generator):
    """The same class, its training codes made to be the model's own samples (memorized) or
    spread independently of them: ``"auto"`` moves the codes in the first case only."""
    code = generator.class_code("type2")
    auto = SamplingParams(latent_noise=0.0)
    plain = SamplingParams(latent_noise=0.0, latent_interpolation=0.0)
    probe = sampling.latents(
        generator,
        code,
        interpolation.PROBE_CODES,
        plain,
        torch.Generator().manual_seed(interpolation.PROBE_SEED),
    )
    memorized = copy.copy(generator)
    memorized.anchors = list(generator.anchors)
    memorized.anchors[code] = probe
    assert sampling.interpolation_level(memorized, code, auto) == 1.0
    moved = _codes(memorized, code, auto)
    unmoved = _codes(memorized, code, plain)
    assert not np.array_equal(moved, unmoved)
    # Pulled toward the training codes: closer to them than the model's samples are.
    training = memorized.anchors[code]
    assert interpolation.latent_novelty(moved, training) < interpolation.latent_novelty(
        unmoved, training
    )

    spread = copy.copy(generator)
    spread.anchors = list(generator.anchors)
    rng = np.random.default_rng(0)
    centre, scale = probe.mean(0), probe.std(0)
    spread.anchors[code] = (centre + scale * rng.normal(size=(40, probe.shape[1]))).astype(
        np.float32
    )
    assert sampling.interpolation_level(spread, code, auto) == 0.0
    np.testing.assert_array_equal(_codes(spread, code, auto), _codes(spread, code, plain))


def test_auto_leaves_anchored_starts_alone(generator):
    """Anchored generation stays near real cells by request: its codes are copies by design
    (``anchor_strength=0`` decodes them unchanged), which ``"auto"`` must not spread."""
    code = generator.class_code("type2")
    anchored = SamplingParams(latent_noise=0.0, anchor_strength=0.0)
    assert sampling.interpolation_level(generator, code, anchored) == 0.0
    forced = SamplingParams(latent_noise=0.0, anchor_strength=0.0, latent_interpolation=1.0)
    assert sampling.interpolation_level(generator, code, forced) == 1.0


def test_a_number_is_used_as_given(generator):
    code = generator.class_code("type0")
    params = SamplingParams(latent_noise=0.0, latent_interpolation=0.3)
    assert sampling.interpolation_level(generator, code, params) == 0.3
    np.testing.assert_array_equal(_codes(generator, code, params), _codes(generator, code, params))


def test_without_training_codes_auto_is_zero_and_a_number_is_refused(generator):
    bare = copy.copy(generator)
    bare.anchors = None
    code = generator.class_code("type2")
    assert sampling.interpolation_level(bare, code, SamplingParams()) == 0.0
    with pytest.raises(ValueError, match="include_anchors=False"):
        sampling.interpolation_level(bare, code, SamplingParams(latent_interpolation=0.5))


def test_the_sampler_records_the_level_each_class_was_generated_with(sampler, data, tmp_path):
    X, y = data
    fitted = copy.deepcopy(sampler)
    X_res, y_res = fitted.fit_resample(X, y)
    generated = {k for k, n in fitted.sampling_strategy_.items() if n > 0}
    assert set(fitted.latent_interpolations_) == generated
    for label in generated:
        code = fitted.generator_.class_code(label)
        params = fitted._sampling_params(
            fitted.guidance_scales_[label], fitted.latent_noises_[label]
        )
        expected = sampling.interpolation_level(fitted.generator_, code, params)
        assert fitted.latent_interpolations_[label] == expected
        assert expected in (0.0, 1.0)
    # A number is used as given, and the cells change with it.
    fitted.set_params(latent_interpolation=0.5)
    cells = fitted.generate(30, "type2")
    assert fitted.latent_interpolations_["type2"] == 0.5
    fitted.set_params(latent_interpolation=0.0)
    assert not np.array_equal(cells, fitted.generate(30, "type2"))
    # A loaded sampler generates what the fitted one does, and records its level again.
    fitted.set_params(latent_interpolation="auto")
    fitted.save(tmp_path / "sampler.pt")
    loaded = SCLDSampler.load(tmp_path / "sampler.pt")
    assert loaded.latent_interpolations_ == {}
    np.testing.assert_array_equal(loaded.generate(30, "type2"), fitted.generate(30, "type2"))
    assert loaded.latent_interpolations_ == {"type2": fitted.latent_interpolations_["type2"]}
