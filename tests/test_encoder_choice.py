"""kl_weight="auto": the near-copy measurement, the retraining rule, and what a fit records."""

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from scld_aug import SCLDSampler, encoder_choice, noise_choice
from scld_aug.data import CellRows
from scld_aug.params import SamplingParams
from tests.test_noise_choice import _world


def _generator(latents_of_class):
    """A generator of two classes whose codes come from ``latents_of_class(label, n, rng)``
    and whose decoder is the world's linear map to genes."""
    _, weights, _ = _world()
    codes = {"rare": 0, "common": 1}
    generator = SimpleNamespace(
        classes=np.array(["rare", "common"]),
        config={"likelihood": "gaussian"},
        class_code=lambda label: codes[label],
        decode=lambda z, code, output, seed: z.astype(np.float64) @ weights,
    )
    return generator, latents_of_class


def _measure(monkeypatch, latents_of_class) -> float:
    _, _, reference = _world()
    generator, draw = _generator(latents_of_class)
    monkeypatch.setattr(noise_choice, "fit_reference", lambda X, y, counts, seed: reference)
    labels_of = {0: "rare", 1: "common"}

    def latents(generator, code, n, params, rng):
        # A stream of its own: not the one _world drew the real codes from.
        return draw(labels_of[code], n, np.random.default_rng([int(rng.initial_seed()), 7]))

    monkeypatch.setattr(noise_choice.sampling, "latents", latents)
    return encoder_choice.median_novelty(generator, None, np.array([]), seed=0)


def _world_codes():
    """The rare and common codes of :func:`_world` (drawn from the same stream)."""
    rng = np.random.default_rng(0)
    rare = rng.standard_normal((10, 2)).astype(np.float32)
    common = (rng.standard_normal((300, 2)) + 8.0).astype(np.float32)
    np.testing.assert_array_equal(rare, _world()[0])
    return {"rare": rare, "common": common}


def test_copies_of_the_training_codes_call_for_the_variational_encoder(monkeypatch):
    codes = _world_codes()

    def copies(label, n, rng):
        return codes[label][np.arange(n) % len(codes[label])].copy()

    novelty = _measure(monkeypatch, copies)
    assert novelty == pytest.approx(0.0, abs=1e-6)
    assert encoder_choice.needs_variational(novelty)


def test_new_cells_of_each_class_keep_the_deterministic_encoder(monkeypatch):
    def fresh(label, n, rng):
        shift = 0.0 if label == "rare" else 8.0
        return (rng.standard_normal((n, 2)) + shift).astype(np.float32)

    novelty = _measure(monkeypatch, fresh)
    assert 0.7 < novelty < 1.5
    assert not encoder_choice.needs_variational(novelty)


def test_the_median_is_over_the_classes_that_could_be_measured(monkeypatch):
    generator = SimpleNamespace(
        classes=np.array(["a", "b", "c", "tiny"]), config={"likelihood": "nb"}
    )
    per_class = {"a": 0.3, "b": 0.5, "c": 0.9}  # "tiny": too few cells, nothing yielded
    asked = []
    monkeypatch.setattr(noise_choice, "fit_reference", lambda *args: None)

    def probe_scores(generator, label, params, seed, reference, levels):
        # Default sampling settings, no latent noise: the cells a user gets by default
        # before latent_noise widens them.
        assert levels == (0.0,) and params.latent_noise == 0.0
        assert params.guidance_scale == SamplingParams().guidance_scale
        asked.append(label)
        if label in per_class:
            yield 0.0, {"novelty": per_class[label], "recognised": 1.0}

    monkeypatch.setattr(noise_choice, "probe_scores", probe_scores)
    assert encoder_choice.median_novelty(generator, None, np.array([]), 0) == 0.5
    assert asked == ["a", "b", "c", "tiny"]
    per_class.clear()
    novelty = encoder_choice.median_novelty(generator, None, np.array([]), 0)
    assert np.isnan(novelty) and not encoder_choice.needs_variational(novelty)


@pytest.mark.parametrize("target, expected", [(0.0, 0.0), (10.0, 1.0)])
def test_auto_ends_with_exactly_the_generator_of_the_chosen_weight(
    counts_data, tiny_params, monkeypatch, count_trainings, target, expected
):
    X, y = counts_data
    tiny_params.pop("kl_weight")
    # Force each branch: a target no novelty reaches retrains, a target of 0 never does.
    monkeypatch.setattr(encoder_choice, "TARGET", target)
    auto = SCLDSampler(random_state=0, kl_weight="auto", **tiny_params)
    X_auto, y_auto = auto.fit_resample(X, y)
    config = auto.generator_.config
    assert config["kl_weight"] == expected
    assert np.isfinite(config["kl_weight_auto_novelty"])
    assert len(count_trainings) == (2 if expected else 1)
    fixed = SCLDSampler(random_state=0, kl_weight=expected, **tiny_params)
    X_fixed, y_fixed = fixed.fit_resample(X, y)
    np.testing.assert_array_equal(X_auto, X_fixed)
    np.testing.assert_array_equal(y_auto, y_fixed)
    assert "kl_weight_auto_novelty" not in fixed.generator_.config


def test_the_measurement_on_training_data_is_reproducible_and_recorded_through_save(
    counts_data, tiny_params, tmp_path
):
    X, y = counts_data
    tiny_params.pop("kl_weight")
    sampler = SCLDSampler(random_state=1, kl_weight="auto", **tiny_params).fit(X, y)
    novelty = sampler.generator_.config["kl_weight_auto_novelty"]
    chosen = sampler.generator_.config["kl_weight"]
    assert chosen == (1.0 if novelty < encoder_choice.TARGET else 0.0)
    again = SCLDSampler(random_state=1, kl_weight="auto", **tiny_params).fit(X, y)
    assert again.generator_.config["kl_weight_auto_novelty"] == novelty
    path = tmp_path / "auto_kl.scld"
    sampler.save(path)
    loaded = SCLDSampler.load(path, device="cpu")
    assert loaded.kl_weight == "auto"
    assert loaded.generator_.config["kl_weight"] == chosen
    np.testing.assert_array_equal(loaded.generate(20, "type2"), sampler.generate(20, "type2"))


def test_cells_read_from_disk_give_the_same_measurement_as_in_memory(
    counts_data, tiny_params, tmp_path
):
    import anndata

    X, y = counts_data
    matrix = sp.csr_matrix(X.astype(np.float32))
    generator = SCLDSampler(random_state=0, **tiny_params).fit(X, y).generator_
    in_memory = encoder_choice.median_novelty(generator, matrix, y, seed=5)
    assert np.isfinite(in_memory)
    anndata.AnnData(X=matrix).write_h5ad(tmp_path / "cells.h5ad")
    backed = anndata.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    try:
        assert encoder_choice.median_novelty(generator, CellRows(backed.X), y, seed=5) == in_memory
    finally:
        backed.file.close()
