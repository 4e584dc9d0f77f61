"""The ``scld_aug`` logger: what is read, trained, tuned and written, at INFO level.

The library only emits (a ``NullHandler`` keeps it silent, as libraries should); the
command line, the demo and the recipes show it with :func:`console`. In a notebook or
script, ``with console(): ...`` does the same, or configure the ``"scld_aug"`` logger
with ``logging`` as for any library.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

__all__ = ["console"]


@contextlib.contextmanager
def console(quiet: bool = False, verbose: bool = False) -> Iterator[None]:
    """Print the ``scld_aug`` logger's INFO messages to stdout while the block runs
    (nothing when ``quiet``; DEBUG messages too when ``verbose``, such as the training
    losses along the way); the logger's handlers and level are restored afterwards.

    Examples
    --------
    >>> import logging
    >>> with console():
    ...     logging.getLogger("scld_aug.train").info("Training SCLD on 100 cells")
    Training SCLD on 100 cells
    >>> logging.getLogger("scld_aug.train").info("not shown")
    """
    logger = logging.getLogger("scld_aug")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    if not quiet:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
