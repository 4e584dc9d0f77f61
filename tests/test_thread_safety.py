"""Fits in threads of one process: the same ``random_state`` gives the cells of a fit run
alone, and training neither reads nor changes torch's global random state.

Training draws its initial weights, dropout masks and posterior samples from generators of
its own; seeding torch's global generator instead (as ``torch.manual_seed`` in a context
that restores it afterwards) gives threads one shared stream, which is what these tests
catch: a thread that reseeds and draws from the global generator while two fits train.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from scld_aug import SCLDSampler
from scld_aug.data import as_csr
from scld_aug.params import TRAINING_PARAMS, TrainingConfig
from scld_aug.train import train_generator
from tests.conftest import TINY, make_counts

# Tiny and short: a fit takes a second or two on one thread.
CONFIG = dict(
    TINY, autoencoder_steps=20, diffusion_steps=20, classifier_steps=10, n_sampling_steps=5
)
SEED = 11


@pytest.fixture(scope="module")
def data():
    return make_counts(sizes=(150, 60, 12), n_genes=120)


def _cells(data, kl_weight: float) -> np.ndarray:
    X, y = data
    sampler = SCLDSampler(random_state=SEED, **{**CONFIG, "kl_weight": kl_weight})
    return sampler.fit_resample(X, y)[0]


def _global_rng_user(start: threading.Barrier, stop: threading.Event) -> None:
    """What other code in the process may do meanwhile: reseed torch's (and numpy's)
    global generators and draw from them."""
    start.wait()
    i = 0
    while not stop.is_set():
        torch.manual_seed(i)
        np.random.seed(i)  # noqa: NPY002 (the global state is the point)
        torch.rand(64)
        np.random.rand(64)  # noqa: NPY002
        i += 1


@pytest.mark.parametrize("kl_weight", [0.0, 1.0], ids=["deterministic", "variational"])
def test_concurrent_fits_in_threads_give_the_cells_of_a_fit_run_alone(data, kl_weight):
    alone = _cells(data, kl_weight)
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []
    start, stop = threading.Barrier(3), threading.Event()

    def fit(i: int) -> None:
        try:
            start.wait()
            results[i] = _cells(data, kl_weight)
        except BaseException as err:  # reported below: a thread's exception is not raised
            errors.append(err)

    fits = [threading.Thread(target=fit, args=(i,)) for i in range(2)]
    other = threading.Thread(target=_global_rng_user, args=(start, stop))
    for thread in (*fits, other):
        thread.start()
    for thread in fits:
        thread.join()
    stop.set()
    other.join()
    assert not errors, errors
    for i in range(2):
        np.testing.assert_array_equal(results[i], alone, err_msg=f"thread {i}")


def test_training_neither_reads_nor_changes_torch_global_random_state(data):
    X, y = data
    torch.manual_seed(1)
    caller_state = torch.get_rng_state()
    seen: list[str] = []

    def check(name: str, step: int, loss: float) -> None:
        # Called while each network trains: the global generator must be the caller's, not
        # reseeded for the fit, and nothing (dropout, posterior draws) may have advanced it.
        if not torch.equal(torch.get_rng_state(), caller_state):
            seen.append(f"{name} step {step}")

    training = {k: v for k, v in CONFIG.items() if k in TRAINING_PARAMS}
    config = TrainingConfig(**{**training, "kl_weight": 1.0, "likelihood": "nb"})
    train_generator(as_csr(X), y, config, SEED, torch.device("cpu"), callback=check)
    assert not seen, f"torch's global random state differed from the caller's at {seen}"
    assert torch.equal(torch.get_rng_state(), caller_state)


def test_a_fit_leaves_the_global_state_alone_and_does_not_depend_on_it(data):
    X, y = data
    cells = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        np.random.seed(global_seed)  # noqa: NPY002 (the global state is the point)
        torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()  # noqa: NPY002
        sampler = SCLDSampler(random_state=SEED, **{**CONFIG, "kl_weight": 1.0})
        cells.append(sampler.fit_resample(X, y)[0])
        assert torch.equal(torch.get_rng_state(), torch_state)
        after = np.random.get_state()  # noqa: NPY002
        assert np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]
    np.testing.assert_array_equal(cells[0], cells[1])


def test_reset_parameters_draws_pytorch_default_initialization_from_the_generator():
    from scld_aug.model.layers import reset_parameters

    def layers() -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Linear(6, 5), torch.nn.LayerNorm(5), torch.nn.Embedding(4, 5)
        )

    torch.manual_seed(5)
    default = layers()
    caller_state = torch.get_rng_state()
    with torch.device("meta"):
        mine = layers()
    reset_parameters(mine.to_empty(device="cpu"), torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), caller_state)
    theirs = default.state_dict()
    for name, ours in mine.state_dict().items():
        assert torch.equal(ours, theirs[name]), name
    with pytest.raises(TypeError, match="Bilinear"):
        reset_parameters(torch.nn.Bilinear(2, 2, 2), torch.Generator())


def test_dropout_is_torch_dropout_with_masks_from_its_generator():
    from scld_aug.model.layers import Dropout, use_generator

    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    ours = Dropout(0.3).train()
    torch.manual_seed(9)
    expected = torch.nn.Dropout(0.3).train()(x)
    caller_state = torch.get_rng_state()
    with use_generator(ours, torch.Generator().manual_seed(9)):
        assert torch.equal(ours(x), expected)  # the same mask from the same stream
    assert torch.equal(torch.get_rng_state(), caller_state)
    assert ours.generator is None  # not kept after training
    with pytest.raises(RuntimeError, match="generator"):
        ours(x)
    assert torch.equal(ours.eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)


def test_training_builds_the_same_networks_from_the_same_seed_without_global_draws(data):
    from scld_aug.data import library_sizes, sampling_weights
    from scld_aug.generator import build_modules
    from scld_aug.genes import GenePanel

    X, y = data
    classes, codes = np.unique(y, return_inverse=True)
    rows = as_csr(X)
    weights = sampling_weights(codes, len(classes), 1.0)
    panel = GenePanel.fit(rows, codes, len(classes), weights, library_sizes(rows), 50, "nb")
    config = {"latent_dim": 8, "hidden_dim": 32, "n_blocks": 2, "kl_weight": 1.0}
    caller_state = torch.get_rng_state()
    first, second = (
        build_modules(config, panel, len(classes), torch.Generator().manual_seed(4))
        for _ in range(2)
    )
    assert torch.equal(torch.get_rng_state(), caller_state)
    for a, b in zip(first, second, strict=True):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert p.device.type == "cpu" and torch.equal(p, q), name
    autoencoder, denoiser, _ = first
    assert torch.all(denoiser.output[-1].weight == 0)  # fixed parts set after the draws
    assert torch.all(autoencoder.log_dispersion == autoencoder.distribution.dispersion_init)
