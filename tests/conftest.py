"""Shared fixtures: synthetic count data with known class programs and tiny configurations."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import scld_aug.train
from scld_aug import presets

# Property tests: the same examples on every run (CI must not depend on luck) and no
# per-example deadline (an example trains a tiny model). HYPOTHESIS_PROFILE=explore draws
# new, more examples.
settings.register_profile(
    "ci",
    max_examples=12,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "explore",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Small networks and few steps: enough for API tests, seconds per fit.
TINY = presets.TINY


def make_counts(
    sizes=(300, 120, 10), n_genes=200, program_size=20, boost=8.0, depth=1500.0, seed=0
):
    """Counts where class k over-expresses its own block of genes (a known 'program').

    Library sizes are log-normal around ``depth``; counts are negative binomial.
    """
    rng = np.random.default_rng(seed)
    base = rng.gamma(0.8, 1.0, n_genes)
    X, y = [], []
    for k, n in enumerate(sizes):
        program = base.copy()
        program[k * program_size : (k + 1) * program_size] *= boost
        p = program / program.sum()
        lib = rng.lognormal(np.log(depth), 0.3, n)
        mu = lib[:, None] * p
        X.append(rng.poisson(rng.gamma(5.0, mu / 5.0)))
        y += [f"type{k}"] * n
    return np.vstack(X).astype(np.int64), np.array(y)


@pytest.fixture(scope="session")
def counts_data():
    return make_counts()


@pytest.fixture
def tiny_params():
    return dict(TINY)


@pytest.fixture
def count_trainings(monkeypatch):
    """List that grows by one each time a generator is trained (not reused or loaded)."""
    calls = []
    original = scld_aug.train.fit_generator

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(scld_aug.train, "fit_generator", counting)
    return calls
