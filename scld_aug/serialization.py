"""Atomic writes and safe reads of model files (tensors + JSON, never arbitrary pickle)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

# Read once (reading it means setting it): files get the process's usual permissions.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_torch_save(obj: dict, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates owner-only files; give the file the permissions of a normal one.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def safe_torch_load(path: Path) -> dict:
    """Load with ``weights_only=True``: tensors, containers and primitives only."""
    if not Path(path).exists():
        raise FileNotFoundError(f"No saved model at {path}.")
    return torch.load(path, map_location="cpu", weights_only=True)
