"""How many CPU threads torch uses for our work, and only for our work.

The networks are small (batches of 128 cells through 256-unit layers, 32-dimensional
latents), so a torch kernel lasts microseconds and its threads mostly wait at barriers. On
a machine where other processes hold cores (a ``GridSearchCV(n_jobs=...)`` around the
sampler, a shared node, a notebook beside other work) those waits stretch to scheduler
time slices, and torch's default of one thread per core made a fit 3.7 to over 6 times
slower beside one or two busy processes (``python -m evaluation.perf --contention``). One
thread per fit avoids that, and makes fixed-seed results independent of the machine's core
count; ``n_jobs`` asks for more, as in scikit-learn.

Fits running at the same time in threads of one process (e.g. a threading joblib backend)
draw every random number from generators of their own, never from torch's global one, so
random numbers do not make their cells differ from a fit run alone. The thread count is
shared state, though. Where torch runs its own thread pool it belongs to the process; in
torch's OpenMP builds (``torch.__config__.parallel_info()`` names the backend) each OS
thread keeps the count it set, and a thread that has not used torch yet starts from the
last count set anywhere. Where the count is shared, a fit that ends restores the caller's
count under the fits still running: their speed changes and, as with another ``n_jobs``,
so can the last digits of their sums and with them some cells. Processes (scikit-learn's
default ``loky`` backend) each have their own count: use them for parallel fits.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a Slurm or container limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_n_jobs(n_jobs: int | None) -> int:
    """Threads for ``n_jobs`` with scikit-learn's convention: None is 1, -1 all CPUs, -2 all
    but one, and so on.

    Examples
    --------
    >>> resolve_n_jobs(None), resolve_n_jobs(3)
    (1, 3)
    >>> resolve_n_jobs(-1) == available_cpus()
    True
    """
    if n_jobs is None:
        return 1
    if n_jobs < 0:
        return max(1, available_cpus() + 1 + n_jobs)
    return int(n_jobs)


@contextmanager
def torch_threads(n_jobs: int | None) -> Iterator[int]:
    """Run the body with torch's intra-op threads set from ``n_jobs``, restored afterwards
    (also on errors), so the caller's own torch work keeps its setting."""
    import torch

    n = resolve_n_jobs(n_jobs)
    before = torch.get_num_threads()
    if n == before:
        yield n
        return
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
