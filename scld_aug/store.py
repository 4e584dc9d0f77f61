"""Where a generator comes from, and whether data fits it.

A sampler's generator is trained for its data and configuration (:func:`training_key`),
reused, read from the ``memory=`` directory (:class:`GeneratorCache`), or pretrained
(:func:`load_pretrained`); :func:`check_compatible` is the one check that data suits a
generator it was not trained on. Training itself is :func:`scld_aug.train.train_generator`,
the one entry point shared by ``SCLDSampler.fit``, :func:`~scld_aug.pretrain.pretrain` and
``scld-aug train``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np

from scld_aug import data as data_layer
from scld_aug.data import plain_scalar
from scld_aug.files import atomic_torch_save, load_model_file
from scld_aug.generator import GENERATOR_DESCRIPTION, GENERATOR_FORMAT, SCLDGenerator

# Part of every cache key: bump whenever training would give a different generator for the
# same data and parameters, so that caches never serve generators of older code.
# 4: labels keyed with their types. 5: overdispersion of the genes outside the panel.
# 6: fused AdamW steps (same arithmetic, rounded differently). 7: initial weights, dropout
# masks and posterior draws from the fit's own generators, not torch's global one.
TRAINING_VERSION = 7


def is_seeded(random_state: Any) -> bool:
    """Whether ``random_state`` fixes the result (an int), so that a fit can be reused."""
    return isinstance(random_state, (Integral, np.integer)) and not isinstance(random_state, bool)


def training_key(matrix, labels: np.ndarray, config, random_state: Any) -> str:
    """Digest of everything that determines a trained generator: the data (canonical CSR
    ``matrix``), the labels with their types, the training configuration, the seed and
    ``TRAINING_VERSION``."""
    seed = int(random_state) if is_seeded(random_state) else type(random_state).__name__
    return data_layer.fingerprint(matrix, labels, TRAINING_VERSION, _canonical(config), seed)


def _canonical(config) -> dict:
    """The config's values as the key sees them: a whole number given for a float
    parameter (``kl_weight=1``) is that float (``1.0``), since it trains the same
    generator."""
    from scld_aug.params import BY_NAME

    values = asdict(config)
    for name, value in values.items():
        floating = name in BY_NAME and BY_NAME[name].py_type.startswith("float")
        if floating and isinstance(value, Integral) and not isinstance(value, bool):
            values[name] = float(value)
    return values


class GeneratorCache:
    """The ``memory=`` directory: trained generators by :func:`training_key`.

    Entries are created atomically and exclusively, so several processes can share a
    directory: the first entry written for a key is kept (the same key means the same
    generator). Each entry records its key and is served only for that key; an entry that
    cannot be read, or that holds another key, is reported and the generator is trained
    again. A cache is a convenience: one that cannot be written costs a warning, never the
    trained generator.

    Parameters
    ----------
    memory : str, path-like or joblib.Memory
        The directory (a ``joblib.Memory``'s ``location``).
    """

    def __init__(self, memory: str | os.PathLike | Any) -> None:
        self.folder = Path(getattr(memory, "location", memory)) / "scld_aug"

    @classmethod
    def for_fit(cls, memory: Any, random_state: Any) -> GeneratorCache | None:
        """The cache a fit may use: none without ``memory`` or without an int seed (an
        unseeded fit is meant to differ from the last one; a warning says so)."""
        location = getattr(memory, "location", memory)
        if location is None:
            return None
        if not is_seeded(random_state):
            warnings.warn(
                f"memory={str(location)!r} is not used: random_state={random_state!r} is not "
                "an int, and only seeded fits can be reused. Pass an int random_state to "
                "cache trained generators.",
                UserWarning,
                stacklevel=4,
            )
            return None
        return cls(memory)

    def path(self, key: str) -> Path:
        return self.folder / f"generator-{key}.pt"

    def get(self, key: str, device) -> SCLDGenerator | None:
        """The cached generator; None when absent, unreadable or not this key's (with a
        warning for the last two)."""
        path = self.path(key)
        try:
            if not path.is_file():
                return None
            state = load_model_file(path, GENERATOR_DESCRIPTION)
            if state.get("format") != GENERATOR_FORMAT or state.get("key") != key:
                raise ValueError(
                    f"it does not hold the generator of key {key} (key {state.get('key')!r})"
                )
            return SCLDGenerator.from_state(state["generator"], device)
        except (OSError, ValueError, KeyError) as err:
            warnings.warn(
                f"The cached generator {path} cannot be used ({err}); training again.",
                UserWarning,
                stacklevel=4,
            )
            return None

    def put(self, key: str, generator: SCLDGenerator) -> None:
        """Store ``generator`` under ``key``: an unreadable or foreign entry is replaced, a
        valid one (another process was first) is kept. A failure to write warns only."""
        path = self.path(key)
        state = {"format": GENERATOR_FORMAT, "key": key, "generator": generator.state(True)}
        try:
            # An entry that get() refused is replaced; otherwise the first writer wins.
            stale = path.exists() and not _holds_key(path, key)
            atomic_torch_save(state, path, overwrite=stale, duplicate_ok=True, what="cache entry")
        except OSError as err:
            warnings.warn(
                f"memory={str(self.folder.parent)!r}: the trained generator could not be "
                f"cached ({err}); the fit goes on without the cache. Pass a writable folder "
                "as memory= to reuse trained generators.",
                UserWarning,
                stacklevel=4,
            )


def _holds_key(path: Path, key: str) -> bool:
    """Whether the cache entry at ``path`` is a readable generator of ``key``."""
    try:
        state = load_model_file(path, GENERATOR_DESCRIPTION)
    except (OSError, ValueError):
        return False
    return state.get("format") == GENERATOR_FORMAT and state.get("key") == key


def load_pretrained(
    source: str | os.PathLike | SCLDGenerator,
    device,
    loaded: tuple[str, SCLDGenerator] | None = None,
) -> tuple[str, SCLDGenerator]:
    """``(key, generator)`` for a pretrained generator (a file or the object), on ``device``.

    ``loaded`` is what an earlier call returned: a file that has not changed since (same
    path, size and modification time) is not read again.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).resolve()
        if not path.exists():
            raise FileNotFoundError(
                f"generator={str(source)!r}: no such file. Pass the file written by "
                "`scld-aug train` or SCLDGenerator.save."
            )
        stat = path.stat()
        key = f"pretrained:{path}:{stat.st_mtime_ns}:{stat.st_size}"
        if loaded is not None and loaded[0] == key:
            return key, loaded[1].to(device)
        return key, SCLDGenerator.load(path, device)
    return f"pretrained-object:{id(source)}", source.to(device)


def check_gene_names(generator: SCLDGenerator, names: Any) -> None:
    """Refuse genes named differently from the generator's (when both have names)."""
    known = generator.gene_names
    if known is None or names is None:
        return
    names = np.asarray(names, dtype=str)
    if len(names) == len(known) and not np.array_equal(names, known):
        differ = int(np.flatnonzero(names != known)[0])
        raise ValueError(
            f"Gene {differ} is {str(names[differ])!r} here but {str(known[differ])!r} in the "
            "pretrained generator: reorder the columns to the generator's genes "
            "(generator.gene_names)."
        )


def check_compatible(
    generator: SCLDGenerator, X: Any, gene_names: Any = None, classes: Any = ()
) -> str:
    """Check that ``X`` (cells x genes) suits a generator trained elsewhere; returns its
    likelihood.

    The same genes (count, and names when both know them, in the same order), the same
    kind of values (raw counts for a count model), and ``classes`` that the generator
    knows. Each failure says what differs and how to fix it.
    """
    if X.shape[1] != generator.n_genes:
        raise ValueError(
            f"X has {X.shape[1]} genes but the pretrained generator was trained on "
            f"{generator.n_genes}. Give it the same genes, in the same order."
        )
    check_gene_names(generator, gene_names)
    likelihood = generator.panel.likelihood
    if generator.panel.distribution.counts and (bad := data_layer.first_non_count(X)) is not None:
        raise ValueError(
            f"The pretrained generator models raw counts, but {data_layer.non_count_message(bad)}"
            ". Pass raw counts (e.g. adata.layers['counts'])."
        )
    unknown = [plain_scalar(c) for c in classes if not np.any(generator.classes == c)]
    if unknown:
        raise ValueError(
            f"The pretrained generator cannot make class(es) {unknown}: it was trained on "
            f"{generator.classes.tolist()}. Leave them out with a dict sampling_strategy."
        )
    return likelihood
