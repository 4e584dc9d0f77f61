"""The sampling loop's speed paths compute what the plain paths compute."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scld_aug import SCLDSampler, sampling
from scld_aug.model import Denoiser, LatentClassifier
from scld_aug.params import SamplingParams
from scld_aug.threads import torch_threads
from tests.conftest import TINY, make_counts


@pytest.fixture(scope="module")
def generator():
    X, y = make_counts(n_genes=120)
    # Fewer modelled genes than genes: the "other genes" split is exercised too.
    params = {**TINY, "n_top_genes": 60}
    return SCLDSampler(random_state=0, **params).fit(X, y).generator_


def test_conditioning_on_distinct_rows_matches_every_row():
    # Inference merges rows that share a timestep and class; training (grad on) does not.
    torch.manual_seed(0)
    denoiser = Denoiser(8, 3, hidden_dim=32).eval()
    classifier = LatentClassifier(8, 3, hidden_dim=32).eval()
    for module in (denoiser, classifier):
        for p in module.parameters():  # zero-initialized layers would hide the conditioning
            torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(256, 8)
    t = torch.full((256,), 420)
    y = torch.tensor([0, 3] * 128)  # a class and the null class, as in guidance
    with torch.no_grad():
        merged = denoiser(x, t, y), classifier(x, t)
    every_row = denoiser(x, t, y), classifier(x, t)
    for a, b in zip(merged, every_row, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-5)


def test_decoded_blocks_do_not_depend_on_the_number_of_decoding_threads(generator, monkeypatch):
    codes = np.random.default_rng(1).standard_normal((700, generator.latent_mean.shape[0]))
    monkeypatch.setattr(sampling, "latents", lambda *args: codes.astype(np.float32))
    params = SamplingParams()
    runs = []
    for n_jobs in (1, 2):
        with torch_threads(n_jobs):
            runs.append(sp.vstack(list(sampling.sample(generator, "type1", 700, params, 5, 256))))
    assert runs[0].shape == (700, generator.n_genes)
    assert (runs[0] != runs[1]).nnz == 0


def test_sampled_counts_come_as_canonical_integer_csr(generator):
    params = SamplingParams()
    blocks = list(generator.sample("type2", 300, params, seed=3, batch_size=128))
    assert [b.shape[0] for b in blocks] == [128, 128, 44]
    for block in blocks:
        assert sp.isspmatrix_csr(block) and block.has_canonical_format
        assert (block.data > 0).all() and np.array_equal(block.data, np.round(block.data))
    mean = generator.sample("type2", 50, SamplingParams(output="mean"), seed=3)
    assert isinstance(next(mean), np.ndarray)
