"""latent_noise: the noise itself, the "auto" choice per class, its record and reuse rules."""

from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from scld_aug import SCLDSampler, noise_choice
from scld_aug.metrics import ReferenceEmbedding
from scld_aug.noise_choice import GRID, TARGET, Reference, choose_noise, novelty
from scld_aug.params import SamplingParams
from tests.conftest import make_counts

N_GENES = 12


def _world(seed=0):
    """Ten real codes of a rare class far from a large one, a linear 'decoder' to genes,
    and the reference (embedding and type classifier) fitted on both classes' cells."""
    rng = np.random.default_rng(seed)
    rare = rng.standard_normal((10, 2)).astype(np.float32)
    common = (rng.standard_normal((300, 2)) + 8.0).astype(np.float32)
    weights = rng.standard_normal((2, N_GENES))
    cells = np.vstack([rare, common]) @ weights
    labels = np.array(["rare"] * 10 + ["common"] * 300)
    embedding = ReferenceEmbedding(n_top_genes=N_GENES, n_components=2, counts=False)
    embedding.fit(cells)
    embedded = embedding.transform(cells)
    judge = LogisticRegression().fit(embedded, labels)
    per_class = {"rare": embedded[:10], "common": embedded[10:]}
    return rare, weights, Reference(embedding, judge, per_class)


def _generator(decode):
    return SimpleNamespace(class_code=lambda label: 1, decode=decode)


def _copies_of(rare):
    def latents(generator, code, n, params, rng):
        return rare[np.arange(n) % len(rare)].copy()  # the diffusion model copies its cells

    return latents


def test_novelty_is_zero_for_copies_and_near_one_for_new_cells_of_the_same_kind():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((40, 3))
    assert novelty(real, real[:15].copy()) == 0.0
    ratios = [novelty(real, rng.standard_normal((400, 3))) for _ in range(5)]
    assert 0.7 < np.median(ratios) < 1.3


def test_auto_takes_the_least_noise_that_makes_copies_novel(monkeypatch):
    rare, weights, reference = _world()
    monkeypatch.setattr(noise_choice.sampling, "latents", _copies_of(rare))
    generator = _generator(lambda z, code, output, seed: z.astype(np.float64) @ weights)
    level, scores = choose_noise(generator, "rare", SamplingParams(), 0, reference)
    novel = {g: score["novelty"] for g, score in scores.items()}
    # Levels are tried in increasing order until one reaches the target: the answer.
    assert list(novel) == [g for g in GRID if g <= level] and level > 0.0
    assert novel[0.0] == 0.0  # copies
    assert novel[level] >= TARGET and all(novel[g] < TARGET for g in novel if g < level)
    # More noise, more novel: the probe scales one noise direction.
    levels = list(novel)
    assert all(novel[a] < novel[b] for a, b in zip(levels, levels[1:], strict=False))
    assert all(score["recognised"] == 1.0 for score in scores.values())


def test_auto_adds_no_noise_that_the_decoder_does_not_turn_into_new_cells(monkeypatch):
    rare, weights, reference = _world()
    monkeypatch.setattr(noise_choice.sampling, "latents", _copies_of(rare))

    def snapping(z, code, output, seed):
        # Every code decodes to its nearest real cell: noise moves nothing.
        nearest = np.argmin(((z[:, None, :] - rare[None]) ** 2).sum(-1), axis=1)
        return rare[nearest].astype(np.float64) @ weights

    level, scores = choose_noise(_generator(snapping), "rare", SamplingParams(), 0, reference)
    assert max(score["novelty"] for score in scores.values()) < TARGET
    assert level == 0.0


def test_auto_adds_no_noise_that_turns_the_cells_into_another_type(monkeypatch):
    rare, weights, reference = _world()
    monkeypatch.setattr(noise_choice.sampling, "latents", _copies_of(rare))

    def drifting(z, code, output, seed):
        # The noise is novel, but the decoder carries noisier cells toward the large type.
        # Copies of the real codes have norms below ~4; noisy codes drift by 8 x (noise).
        noise = np.linalg.norm(
            z - rare[np.argmin(((z[:, None] - rare[None]) ** 2).sum(-1), 1)], axis=1
        )
        return (z + 8.0 * noise[:, None] * (noise[:, None] > 0.2)).astype(np.float64) @ weights

    level, scores = choose_noise(_generator(drifting), "rare", SamplingParams(), 0, reference)
    assert scores[GRID[-1]]["recognised"] < scores[0.0]["recognised"] - 0.05
    assert scores[GRID[-1]]["novelty"] >= TARGET  # novel enough, yet refused
    kept = [g for g in GRID if scores[g]["recognised"] >= scores[0.0]["recognised"] - 0.05]
    assert level in kept and level == max(kept, key=lambda g: scores[g]["novelty"])
    # Without the guard the novelty alone would have taken a drifting level.
    monkeypatch.setattr(noise_choice, "MAX_RECOGNITION_DROP", None)
    unguarded, _ = choose_noise(_generator(drifting), "rare", SamplingParams(), 0, reference)
    assert unguarded not in kept


def test_a_class_with_too_few_or_no_cells_in_the_data_gets_no_noise():
    _, _, reference = _world()
    reference.cells["rare"] = reference.cells["rare"][:2]
    generator = _generator(lambda *args: pytest.fail("nothing should be decoded"))
    assert choose_noise(generator, "rare", SamplingParams(), 0, reference) == (0.0, {})
    # A pretrained generator's class that the training data lack: nothing to measure.
    del reference.cells["rare"]
    assert choose_noise(generator, "rare", SamplingParams(), 0, reference) == (0.0, {})


def test_noise_widens_the_same_codes_and_is_reproducible(counts_data, tiny_params, monkeypatch):
    X, y = counts_data
    plain = SCLDSampler(random_state=0, sampling_strategy={"type2": 60}, **tiny_params).fit(X, y)
    cells = plain.generate(60, "type2")
    decoded = []
    decode = type(plain.generator_).decode

    def recording(self, latents, code, output, seed):
        decoded.append(latents.copy())
        return decode(self, latents, code, output, seed)

    monkeypatch.setattr(type(plain.generator_), "decode", recording)
    plain.generate(60, "type2")
    plain.set_params(latent_noise=0.6)
    widened = plain.generate(60, "type2")
    assert plain.latent_noises_ == {"type2": 0.6}
    np.testing.assert_array_equal(widened, plain.generate(60, "type2"))
    assert not np.array_equal(widened, cells)
    # The same sampled codes plus standard normal noise times 0.6 (in code units).
    added = (decoded[1] - decoded[0]).ravel()
    assert abs(added.mean()) < 0.05 and 0.55 < added.std() < 0.65


def test_auto_is_chosen_afresh_on_every_fit_and_never_served_stale(
    counts_data, tiny_params, monkeypatch
):
    X, y = counts_data
    calls = []
    real_choose = noise_choice.choose_noise

    def counting(generator, label, params, seed, reference):
        calls.append((label, params.n_sampling_steps, len(reference.cells[label])))
        return real_choose(generator, label, params, seed, reference)

    monkeypatch.setattr(noise_choice, "choose_noise", counting)
    sampler = SCLDSampler(
        random_state=0, latent_noise="auto", sampling_strategy={"type2": 40}, **tiny_params
    ).fit(X, y)
    steps = tiny_params["n_sampling_steps"]
    assert calls == [("type2", steps, 10)]  # from the class's own 10 training cells
    sampler.generate(5, "type2")
    assert len(calls) == 1  # same parameters: the fit-time choice
    sampler.fit(X[5:], y[5:])  # other data, same generator settings: chosen again
    assert len(calls) == 2
    sampler.set_params(n_sampling_steps=3)
    sampler.generate(5, "type2")
    assert calls[-1] == ("type2", 3, 10)  # other parameters: chosen again, never stale
    sampler.generate(5, "type0")  # a class the fit did not generate: chosen when asked
    assert calls[-1] == ("type0", 3, 295)  # the cells of the last fit


def test_a_saved_sampler_carries_a_level_for_every_class_and_refuses_to_guess_new_ones(
    counts_data, tiny_params, tmp_path
):
    X, y = counts_data
    sampler = SCLDSampler(
        random_state=0, latent_noise="auto", sampling_strategy={"type2": 40}, **tiny_params
    ).fit(X, y)
    assert set(sampler.latent_noises_) == {"type2"}
    sampler.save(tmp_path / "s.scld")  # chooses the other classes' levels first
    assert set(sampler.latent_noises_) == {"type0", "type1", "type2"}
    loaded = SCLDSampler.load(tmp_path / "s.scld", device="cpu")
    assert loaded.latent_noises_ == sampler.latent_noises_
    for label in ("type2", "type0"):
        np.testing.assert_array_equal(loaded.generate(7, label), sampler.generate(7, label))
    loaded.set_params(n_sampling_steps=3)
    with pytest.raises(ValueError, match="pass a number as latent_noise"):
        loaded.generate(5, "type0")  # other parameters, and no training cells to choose from
    loaded.set_params(latent_noise=0.2)
    assert loaded.generate(5, "type0").shape == (5, X.shape[1])


def test_a_number_is_used_as_given_for_every_class(counts_data, tiny_params):
    X, y = counts_data
    sampler = SCLDSampler(random_state=0, latent_noise=0.2, **tiny_params).fit(X, y)
    assert sampler.latent_noises_ == {"type1": 0.2, "type2": 0.2}


def test_files_saved_before_latent_noise_keep_sampling_without_it(
    counts_data, tiny_params, tmp_path
):
    import json

    import torch

    X, y = counts_data
    sampler = SCLDSampler(random_state=0, latent_noise=0.0, **tiny_params).fit(X, y)
    sampler.save(tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    params, fitted = json.loads(state["params"]), json.loads(state["fitted"])
    del params["latent_noise"], fitted["latent_noises_"], fitted["auto_noise"]
    state["params"], state["fitted"] = json.dumps(params), json.dumps(fitted)
    torch.save(state, tmp_path / "old.pt")  # as written before the parameter existed
    old = SCLDSampler.load(tmp_path / "old.pt", device="cpu")
    assert old.latent_noise == 0.0
    np.testing.assert_array_equal(old.generate(9, "type2"), sampler.generate(9, "type2"))


def test_reference_keeps_every_type_in_large_data_and_needs_two_types_for_a_judge(monkeypatch):
    X, y = make_counts(sizes=(400, 200, 5), n_genes=40)
    monkeypatch.setattr(noise_choice, "MAX_EMBEDDING_CELLS", 60)
    reference = noise_choice.fit_reference(X, y, counts=True, seed=0)
    # 60 cells in 3 equal shares: the 5-cell type is kept whole and known to the judge.
    assert set(reference.judge.classes_) == {"type0", "type1", "type2"}
    assert {t: len(c) for t, c in reference.cells.items()} == {
        "type0": 400,
        "type1": 200,
        "type2": 5,
    }
    single = noise_choice.fit_reference(X[:400], y[:400], counts=True, seed=0)
    assert single.judge is None  # one type: nothing to confuse it with
