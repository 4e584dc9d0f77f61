"""guidance_scale="auto": the per-class choice, its record, and its reuse rules."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from scld_aug import SCLDSampler, guidance_choice
from scld_aug.guidance_choice import GRID, _leave_one_out_f1, choose_scale
from scld_aug.noise_choice import GRID as NOISE_GRID
from scld_aug.params import SamplingParams


def _clusters(rng, centres, sizes):
    codes = np.concatenate(
        [c + 0.3 * rng.standard_normal((n, 2)) for c, n in zip(centres, sizes, strict=True)]
    )
    labels = np.concatenate([np.full(n, i) for i, n in enumerate(sizes)])
    return codes.astype(np.float32), labels


def test_leave_one_out_f1_rewards_codes_on_the_class_and_punishes_codes_on_another():
    rng = np.random.default_rng(0)
    real, labels = _clusters(rng, [np.zeros(2), np.full(2, 4.0)], [200, 8])
    on_target = np.full((100, 2), 4.0) + 0.3 * rng.standard_normal((100, 2))
    on_other = 0.3 * rng.standard_normal((100, 2))
    assert _leave_one_out_f1(real, labels, on_target, code=1) == 1.0
    # Synthetic target codes inside the other type turn its real cells into false positives.
    assert _leave_one_out_f1(real, labels, on_other, code=1) < 0.5


def test_leave_one_out_f1_leaves_each_real_cell_out_even_among_duplicates():
    # Three identical codes of a class that no other code supports: each is classified by
    # its two twins and the three nearest codes of the majority (2 votes against 3).
    real = np.array([[0.0, 0.0]] * 3 + [[0.1, 0.0]] * 20, dtype=np.float32)
    labels = np.array([1] * 3 + [0] * 20)
    empty = np.empty((0, 2), dtype=np.float32)
    assert _leave_one_out_f1(real, labels, empty, code=1) == 0.0


def test_choose_scale_picks_the_scale_whose_codes_help_the_proxy(monkeypatch):
    rng = np.random.default_rng(1)
    real, labels = _clusters(rng, [np.zeros(2), np.full(2, 4.0)], [300, 10])
    generator = SimpleNamespace(
        anchors=[real[labels == 0], real[labels == 1]], class_code=lambda label: 1
    )

    def latents(generator, code, n, params, rng):
        # Only w=3 lands on the class; every other scale lands between the two types.
        centre = 4.0 if params.guidance_scale == 3.0 else 1.0
        return np.full((n, 2), centre, dtype=np.float32) + 0.3 * np.random.default_rng(
            0
        ).standard_normal((n, 2)).astype(np.float32)

    monkeypatch.setattr(guidance_choice.sampling, "latents", latents)
    scale, scores = choose_scale(generator, "rare", 290, SamplingParams(), seed=0)
    assert scale == 3.0
    assert set(scores) == set(GRID) and scores[3.0] == max(scores.values())


def test_choose_scale_needs_the_training_codes():
    generator = SimpleNamespace(anchors=None)
    with pytest.raises(ValueError, match="include_anchors=False"):
        choose_scale(generator, "rare", 10, SamplingParams(), seed=0)


@pytest.mark.parametrize(
    "param, chosen, grid",
    [("guidance_scale", "guidance_scales_", GRID), ("latent_noise", "latent_noises_", NOISE_GRID)],
)
def test_auto_choices_are_recorded_reused_by_generate_and_saved(
    counts_data, tiny_params, tmp_path, param, chosen, grid
):
    """Both per-class choices made at fit time ("auto" guidance scale and latent noise)."""
    X, y = counts_data
    df = pd.DataFrame(X, columns=[f"g{i}" for i in range(X.shape[1])])
    sampler = SCLDSampler(random_state=3, **{param: "auto"}, **tiny_params)
    X_res, y_res = sampler.fit_resample(df, y)
    assert set(getattr(sampler, chosen)) == {"type1", "type2"}
    assert set(getattr(sampler, chosen).values()) <= set(grid)
    # generate draws the cells of fit_resample: same class seed, same choice.
    n_new = sampler.sampling_strategy_["type2"]
    pd.testing.assert_frame_equal(
        sampler.generate(n_new, "type2"),
        X_res[y_res == "type2"].iloc[10:].reset_index(drop=True),
    )
    path = tmp_path / "auto.scld"
    sampler.save(path)
    loaded = SCLDSampler.load(path, device="cpu")
    assert getattr(loaded, chosen) == getattr(sampler, chosen)
    pd.testing.assert_frame_equal(loaded.generate(25, "type2"), sampler.generate(25, "type2"))


def test_auto_choice_is_redone_when_sampling_parameters_change(
    counts_data, tiny_params, monkeypatch
):
    X, y = counts_data
    calls = []
    real_choose = guidance_choice.choose_scale

    def counting(generator, label, n, params, seed):
        calls.append((label, params.n_sampling_steps))
        return real_choose(generator, label, n, params, seed)

    monkeypatch.setattr(guidance_choice, "choose_scale", counting)
    sampler = SCLDSampler(
        random_state=0, guidance_scale="auto", sampling_strategy={"type2": 40}, **tiny_params
    ).fit(X, y)
    assert calls == [("type2", tiny_params["n_sampling_steps"])]
    sampler.generate(5, "type2")
    assert len(calls) == 1  # same parameters: the fit-time choice
    sampler.set_params(n_sampling_steps=3)
    sampler.generate(5, "type2")
    assert calls[-1] == ("type2", 3)  # another sampler: never a stale choice
    sampler.set_params(guidance_scale=2.5)
    sampler.generate(5, "type2")
    assert len(calls) == 2 and sampler.guidance_scales_["type2"] == 2.5


def test_a_number_is_used_as_given_for_every_class(counts_data, tiny_params):
    X, y = counts_data
    sampler = SCLDSampler(random_state=0, guidance_scale=1.5, **tiny_params).fit(X, y)
    assert sampler.guidance_scales_ == {"type1": 1.5, "type2": 1.5}
