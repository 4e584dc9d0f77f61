"""Does the generator learn class programs? Checked on counts with known class structure."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from scld_aug import SCLDSampler
from scld_aug.preprocessing import log_normalize

from .conftest import make_counts

QUALITY = dict(
    autoencoder_steps=400,
    diffusion_steps=800,
    classifier_steps=200,
    hidden_dim=128,
    latent_dim=16,
    n_top_genes=100,
    n_sampling_steps=25,
)


@pytest.fixture(scope="module")
def trained(counts_data):
    X, y = counts_data
    sampler = SCLDSampler(random_state=0, **QUALITY).fit(X, y)
    reference = LogisticRegression(max_iter=3000).fit(log_normalize(X), y)
    return X, y, sampler, reference


@pytest.mark.parametrize("cell_type", ["type0", "type1", "type2"])
def test_synthetic_cells_are_recognised_as_their_class(trained, cell_type):
    X, y, sampler, reference = trained
    synthetic = sampler.generate(200, cell_type)
    accuracy = (reference.predict(log_normalize(synthetic)) == cell_type).mean()
    assert accuracy >= 0.9, f"{cell_type}: {accuracy:.2f} recognised"


@pytest.mark.parametrize("cell_type", ["type0", "type1", "type2"])
def test_synthetic_gene_means_track_real_class_means(trained, cell_type):
    X, y, sampler, _ = trained
    synthetic = sampler.generate(300, cell_type)
    real_mean = np.log1p(X[y == cell_type].mean(0))
    synthetic_mean = np.log1p(synthetic.mean(0))
    r = np.corrcoef(real_mean, synthetic_mean)[0, 1]
    assert r > 0.9, f"{cell_type}: r = {r:.3f}"
    # Library sizes come from the class's own cells.
    real_lib = np.median(X[y == cell_type].sum(1))
    assert 0.7 < np.median(synthetic.sum(1)) / real_lib < 1.4


def test_counts_are_nonnegative_integers(trained):
    _, _, sampler, _ = trained
    synthetic = sampler.generate(50, "type2")
    assert synthetic.dtype == np.int64
    assert synthetic.min() >= 0


def test_mean_output_is_expected_expression(trained):
    X, y, sampler, _ = trained
    sampler = sampler.set_params(output="mean")
    try:
        means = sampler.generate(100, "type1")
    finally:
        sampler.set_params(output="sample")
    assert means.dtype == np.float64
    assert not np.allclose(means, np.round(means))
    r = np.corrcoef(np.log1p(means.mean(0)), np.log1p(X[y == "type1"].mean(0)))[0, 1]
    assert r > 0.9


def test_class_balanced_training_learns_a_10_cell_class():
    """A 10-cell type among 1,000 cells: balanced minibatches must make it learnable."""
    X, y = make_counts(sizes=(700, 290, 10), seed=3)
    reference = LogisticRegression(max_iter=3000).fit(log_normalize(X), y)
    scores = {}
    for balance in (1.0, 0.0):
        sampler = SCLDSampler(random_state=0, class_balance=balance, **QUALITY).fit(X, y)
        synthetic = sampler.generate(200, "type2")
        scores[balance] = (reference.predict(log_normalize(synthetic)) == "type2").mean()
    assert scores[1.0] >= 0.9, scores
    assert scores[1.0] >= scores[0.0], scores


def test_variational_encoder_learns_every_class_with_spread_codes(counts_data):
    """A VAE encoder (kl_weight > 0) with a class-balanced autoencoder: diffusion learns
    codes drawn from the posteriors, and the cells decoded from its samples still carry their
    class program. (With the uniform autoencoder of the defaults, the KL term blurs the
    10-cell type: 0.83 recognised, as the ``kl_weight`` documentation says.)"""
    X, y = counts_data
    reference = LogisticRegression(max_iter=3000).fit(log_normalize(X), y)
    sampler = SCLDSampler(
        random_state=0, autoencoder_class_balance=None, **{**QUALITY, "kl_weight": 1.0}
    ).fit(X, y)
    generator = sampler.generator_
    assert generator.autoencoder.variational
    for cell_type in ("type0", "type1", "type2"):
        synthetic = sampler.generate(200, cell_type)
        accuracy = (reference.predict(log_normalize(synthetic)) == cell_type).mean()
        assert accuracy >= 0.9, f"{cell_type}: {accuracy:.2f} recognised"
    # Posterior spread is part of the latent standardization: codes are not point masses.
    import torch

    from scld_aug.data import as_csr
    from scld_aug.train import encode_cells

    modelled = generator.panel.modelled(as_csr(X))
    library = X.sum(1).astype(float)
    means, scales = encode_cells(
        generator.autoencoder, modelled, generator.panel, library, torch.device("cpu")
    )
    assert scales is not None and scales.shape == means.shape and scales.min() > 0
    assert np.all(generator.latent_std**2 >= means.var(0) * 0.999)


def _target_probability(sampler, cell_type, n=200):
    """Mean latent-classifier probability of ``cell_type`` for freshly sampled latents."""
    import torch

    from scld_aug import sampling
    from scld_aug.params import SamplingParams

    generator = sampler.generator_
    code = generator.class_code(cell_type)
    params = SamplingParams(
        guidance_scale=sampler.guidance_scale,
        post_guidance_scale=sampler.post_guidance_scale,
        n_sampling_steps=sampler.n_sampling_steps,
        filter_threshold=sampler.filter_threshold,
    )
    latents = sampling.latents(generator, code, n, params, torch.Generator().manual_seed(0))
    probs = generator.class_probabilities(torch.as_tensor(latents, device=generator.device))
    return probs[:, code].cpu().numpy()


def test_post_guidance_raises_classifier_confidence(trained):
    _, _, sampler, _ = trained
    # Without pre-guidance (unconditional sampling), post-guidance alone must steer.
    sampler.set_params(guidance_scale=0.0)
    try:
        plain = _target_probability(sampler, "type2").mean()
        sampler.set_params(post_guidance_scale=5.0)
        guided = _target_probability(sampler, "type2").mean()
    finally:
        sampler.set_params(guidance_scale=2.0, post_guidance_scale=0.0)
    assert guided > 0.9 and guided - plain > 0.2, (plain, guided)


def test_filter_keeps_only_confident_cells(trained):
    _, _, sampler, _ = trained
    sampler.set_params(guidance_scale=0.5, filter_threshold=0.9)
    try:
        probs = _target_probability(sampler, "type1")
    finally:
        sampler.set_params(guidance_scale=2.0, filter_threshold=None)
    assert len(probs) == 200 and probs.min() >= 0.9


def test_verbose_shows_progress(counts_data, tiny_params, capsys):
    X, y = counts_data
    SCLDSampler(random_state=0, verbose=True, **tiny_params).fit_resample(X, y)
    err = capsys.readouterr().err
    for stage in ("train autoencoder", "train diffusion", "train classifier", "generate"):
        assert stage in err
    SCLDSampler(random_state=0, **tiny_params).fit_resample(X, y)
    assert capsys.readouterr().err == ""


def _nearest_real_distance(real, synthetic):
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=1).fit(log_normalize(real))
    return nn.kneighbors(log_normalize(synthetic))[0].mean()


def test_anchored_generation_stays_near_real_cells_of_the_class(trained):
    X, y, sampler, reference = trained
    real = X[y == "type2"]
    distances = {}
    try:
        for strength in (1.0, 0.3, 0.0):
            sampler.set_params(anchor_strength=strength, output="mean")
            synthetic = sampler.generate(200, "type2")
            assert (reference.predict(log_normalize(synthetic)) == "type2").mean() >= 0.9
            distances[strength] = _nearest_real_distance(real, synthetic)
    finally:
        sampler.set_params(anchor_strength=1.0, output="sample")
    # Starting from real cells' codes keeps synthetic cells nearer to real cells of the type.
    assert max(distances[0.0], distances[0.3]) < distances[1.0], distances


def test_anchor_strength_zero_decodes_the_real_cells_codes(trained):
    X, y, sampler, _ = trained
    generator = sampler.generator_
    code = generator.class_code("type2")
    anchors = generator.anchors[code]
    assert len(anchors) == (y == "type2").sum()
    try:
        sampler.set_params(anchor_strength=0.0, output="mean")
        synthetic = sampler.generate(40, "type2")
    finally:
        sampler.set_params(anchor_strength=1.0, output="sample")
    # Library sizes are drawn per cell, so compare expression proportions (float32 networks:
    # batch composition moves the last digits).
    decoded = generator.decode(anchors, code, "mean", seed=0)
    expected = decoded / decoded.sum(1, keepdims=True)
    observed = synthetic / synthetic.sum(1, keepdims=True)
    gaps = np.abs(observed[:, None, :] - expected[None, :, :]).max(-1).min(1)
    assert gaps.max() < 1e-6
