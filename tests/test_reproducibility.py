"""What the reproducibility guide promises, checked as it is stated: with an int
``random_state``, the same machine, versions, device and ``n_jobs`` give identical cells,
also in separate processes, whatever thread count the process was started with."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from scld_aug.threads import resolve_n_jobs, torch_threads

ROOT = Path(__file__).resolve().parents[1]

RUN = textwrap.dedent(
    """
    import hashlib, sys
    import numpy as np
    import torch
    from scld_aug import SCLDSampler
    from tests.conftest import TINY, make_counts

    n_jobs = None if sys.argv[1] == "None" else int(sys.argv[1])
    X, y = make_counts()
    X_res, _ = SCLDSampler(random_state=7, n_jobs=n_jobs, **TINY).fit_resample(X, y)
    # The process's own setting afterwards: the fit must have restored it.
    print(torch.get_num_threads(), hashlib.sha256(np.ascontiguousarray(X_res).data).hexdigest())
    """
)


def _digest(outside_threads: int, n_jobs: int | None) -> tuple[str, str]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(outside_threads),
        "MKL_NUM_THREADS": str(outside_threads),
    }
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(n_jobs)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return tuple(done.stdout.split())


def test_default_cells_do_not_depend_on_the_process_thread_count():
    one, two = _digest(1, None), _digest(2, None)
    assert (one[0], two[0]) == ("1", "2")  # each process's setting restored after the fit
    assert one[1] == two[1]


def test_same_seed_and_n_jobs_give_identical_cells_in_separate_processes():
    first, second = _digest(1, 2), _digest(1, 2)
    assert first[0] == "1"
    assert first == second


def test_torch_threads_applies_n_jobs_only_inside_and_restores_on_errors():
    before = torch.get_num_threads()
    wanted = 2 if before != 2 else 3
    with torch_threads(wanted) as n:
        assert n == torch.get_num_threads() == wanted
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(wanted):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_n_jobs_follows_scikit_learn_convention():
    cpus = len(os.sched_getaffinity(0))
    assert resolve_n_jobs(None) == 1
    assert resolve_n_jobs(4) == 4
    assert resolve_n_jobs(-1) == cpus
    assert resolve_n_jobs(-2) == max(1, cpus - 1)
    assert resolve_n_jobs(-1000) == 1
