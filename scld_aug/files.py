"""Files: output paths checked before any work, atomic writes, and safe reads of model files.

Every file scld-aug writes (``.h5ad`` results, saved samplers and generators, ``memory=``
cache entries) goes through :func:`atomic_write`: the content is written to a hidden
temporary file next to the target and renamed over it, so the target is either the old
file or the complete new one, never half of either. A temporary file left behind by a
killed process is removed on SIGTERM and, after SIGKILL or a power cut, by the next write
to the same target.

Model files are read by :func:`load_model_file` with ``torch.load(weights_only=True)``:
tensors, containers and primitives only, never code.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "OutputPathError",
    "atomic_write",
    "check_output_path",
    "load_model_file",
    "same_file",
]

TMP_SUFFIX = ".tmp"
# Temporary files of another host cannot be checked for a live writer: removed after a day.
STALE_SECONDS = 24 * 3600


class OutputPathError(ValueError):
    """An output location that cannot or must not be written; the message says why."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (symlinks, ``..`` and hard links included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_output_path(
    path: str | os.PathLike,
    *,
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
    what: str = "output",
) -> Path:
    """Check, before any work, that ``path`` can be written without destroying anything.

    Refuses a path that is one of ``inputs`` (also through a symlink, ``..`` or a hard
    link), a directory, an existing file unless ``overwrite``, and a location whose nearest
    existing folder is not writable. Missing folders are fine: writers create them.

    Raises
    ------
    OutputPathError

    Examples
    --------
    >>> import pathlib
    >>> _ = pathlib.Path("in.h5ad").write_text("data")
    >>> check_output_path("out.h5ad", inputs=["in.h5ad"]).name
    'out.h5ad'
    >>> check_output_path("./sub/../in.h5ad", inputs=["in.h5ad"], overwrite=True)
    Traceback (most recent call last):
    ...
    scld_aug.files.OutputPathError: The output path 'sub/../in.h5ad' is the input file 'in.h5ad'; choose another path so the input is kept.
    """
    path = Path(path)
    for source in inputs:
        if Path(source).exists() and same_file(path, source):
            raise OutputPathError(
                f"The {what} path {str(path)!r} is the input file {str(source)!r}; choose "
                "another path so the input is kept."
            )
    if path.is_dir():
        raise OutputPathError(f"The {what} path {str(path)!r} is a directory; give a file name.")
    if path.exists() and not overwrite:
        raise OutputPathError(
            f"The {what} file {str(path)!r} already exists; pass --overwrite (overwrite=True) "
            "to replace it, or choose another path."
        )
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise OutputPathError(
            f"Cannot create the folder of the {what} path {str(path)!r}: {str(folder)!r} is a file."
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"Cannot write the {what} file {str(path)!r}: no write permission in the folder "
            f"{str(folder)!r}."
        )
    return path


# --------------------------------------------------------------------------- atomic writes


def _host() -> str:
    return socket.gethostname().replace("_", "-") or "host"


def _tmp_prefix(target: Path) -> str:
    return f".{target.name}.scld-"


def _tmp_path(target: Path) -> Path:
    # Host and PID in the name let a later write tell a dead writer's leftover from a live one.
    token = f"{_host()}_{os.getpid()}_{secrets.token_hex(4)}"
    return target.with_name(f"{_tmp_prefix(target)}{token}{TMP_SUFFIX}")


def _writer_alive(host: str, pid: int) -> bool | None:
    """True/False for a writer on this host; None when it ran elsewhere."""
    if host != _host():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_stale(target: str | os.PathLike) -> list[Path]:
    """Remove temporary files of earlier writes to ``target`` whose writer is gone.

    A writer on this host is gone when its process no longer exists; a temporary file from
    another host (shared file systems) is removed once it is a day old. Returns what was
    removed.
    """
    target = Path(target)
    prefix = _tmp_prefix(target)
    removed = []
    try:
        candidates = [
            p
            for p in target.parent.iterdir()
            if p.name.startswith(prefix) and p.name.endswith(TMP_SUFFIX)
        ]
    except OSError:
        return removed
    for candidate in candidates:
        token = candidate.name[len(prefix) : -len(TMP_SUFFIX)]
        try:
            host, pid, _ = token.rsplit("_", 2)
            alive = _writer_alive(host, int(pid))
        except ValueError:
            continue  # not one of ours
        if alive is None:
            try:
                alive = time.time() - candidate.stat().st_mtime < STALE_SECONDS
            except OSError:
                continue
        if not alive:
            with contextlib.suppress(OSError):
                candidate.unlink()
                removed.append(candidate)
    return removed


@contextlib.contextmanager
def _removed_on_sigterm(tmp: Path) -> Iterator[None]:
    """Delete ``tmp`` if the process is terminated (SIGTERM) while it is being written.

    Only where SIGTERM would kill the process anyway (the default handler) and only in the
    main thread (Python delivers signals there); the process still dies by SIGTERM. A
    handler of the application's own is left in charge: if it raises, the writer's cleanup
    runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        with contextlib.suppress(OSError):
            tmp.unlink()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fsync_folder(folder: Path) -> None:
    # The rename is durable once the folder's entry is on disk (POSIX; a no-op elsewhere).
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write ``path`` through ``write(tmp)`` into a hidden file next to it, then rename.

    Readers see the old file or the complete new one. On an exception, KeyboardInterrupt
    or SIGTERM the temporary file is removed; leftovers of killed writers are swept first.
    The file gets the permissions of any new file of the process (``0o666`` less the
    umask in force now).

    Examples
    --------
    >>> from pathlib import Path
    >>> atomic_write("notes.txt", lambda tmp: tmp.write_text("done")).read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path)
    tmp = _tmp_path(path)
    # Created here with mode 0o666 so that the kernel applies the current umask.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        with _removed_on_sigterm(tmp):
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_folder(path.parent)
    return path


def atomic_torch_save(obj: dict, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    import torch

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    return atomic_write(path, write)


# --------------------------------------------------------------------------- safe reads


def load_model_file(path: str | os.PathLike, expected: str) -> dict:
    """Read a model file with ``torch.load(weights_only=True)``: tensors and JSON, no code.

    ``expected`` describes the format for messages (e.g. "a saved SCLD generator (written
    by SCLDGenerator.save or scld-aug train)"). Anything unreadable (truncated, corrupt,
    empty, another format) raises a ValueError that names the path and the expected
    format.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No saved model at {path}.")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not {expected}.")
    try:
        with warnings.catch_warnings():
            # Foreign pickles make torch warn about their protocol before it refuses them.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for foreign files
        # The cause is not chained: torch's message suggests weights_only=False, which
        # would execute code from the file.
        raise ValueError(
            f"Cannot read {path}: it is not {expected}, or it is truncated or corrupt "
            f"({type(err).__name__} while reading it)."
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not {expected} (it holds a {type(state).__name__}).")
    return state
