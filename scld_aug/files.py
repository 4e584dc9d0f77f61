"""Files: output paths checked before any work, atomic writes, and safe reads of model files.

One rule for every file scld-aug writes (``.h5ad`` results, saved samplers and generators,
``memory=`` cache entries, figures, tables, tuning outputs):

* **Checked before any work** (:func:`check_output_path`, :func:`check_output_folder`): a
  path that is one of the inputs, a directory, an existing file (unless ``overwrite``) or a
  place that cannot be written is refused with a message that says why.
* **Written atomically** (:func:`atomic_write`): the content goes to a hidden temporary file
  next to the target, which then becomes the target, so the target is either absent, the
  old file, or the complete new one, never half of either. A temporary file left behind by
  a killed process is removed on SIGTERM and, after SIGKILL or a power cut, by the next
  write to the same target.
* **Never replaces a file that appeared after the check** unless ``overwrite``: without it
  the temporary file becomes the target by a hard link, which fails when the target
  exists (create-exclusive). A finished result is then kept under a free name next to the
  target (:class:`OutputConflictError` says where), never thrown away.

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
    "OutputConflictError",
    "OutputPathError",
    "atomic_write",
    "check_output_folder",
    "check_output_path",
    "load_model_file",
    "same_file",
]

TMP_SUFFIX = ".tmp"
# Temporary files of another host cannot be checked for a live writer: removed after a day.
STALE_SECONDS = 24 * 3600


class OutputPathError(ValueError):
    """An output location that cannot or must not be written; the message says why."""


class OutputConflictError(OutputPathError):
    """A file appeared at an output path while scld-aug was working, after the path was
    checked; it was left alone and the finished result was written to :attr:`kept`."""

    def __init__(self, path: Path, kept: Path, what: str = "output") -> None:
        self.path, self.kept = Path(path), Path(kept)
        super().__init__(
            f"The {what} file {str(path)!r} appeared while scld-aug was working (another "
            f"process or run?) and was not replaced; the result was written to "
            f"{str(kept)!r} instead. Pass --overwrite (overwrite=True) to replace such a file."
        )


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
        if source is not None and Path(source).exists() and same_file(path, source):
            raise OutputPathError(
                f"The {what} path {str(path)!r} is the input file {str(source)!r}; choose "
                "another path so the input is kept."
            )
    if path.is_dir():
        raise OutputPathError(f"The {what} path {str(path)!r} is a directory; give a file name.")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputPathError(
            f"The {what} file {str(path)!r} already exists; pass --overwrite (overwrite=True) "
            "to replace it, or choose another path."
        )
    _check_writable_folder(path.absolute().parent, f"the {what} path {str(path)!r}")
    return path


def check_output_folder(
    folder: str | os.PathLike,
    names: Iterable[str] = (),
    *,
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
    what: str = "output",
) -> Path:
    """Check, before any work, that the files ``names`` can be written into ``folder``.

    The folder may be missing (writers create it) but not a file, and must be writable
    where it exists (or its nearest existing parent); each of ``names`` inside it goes
    through :func:`check_output_path`.

    Raises
    ------
    OutputPathError

    Examples
    --------
    >>> import pathlib
    >>> _ = pathlib.Path("report.md").write_text("mine")
    >>> check_output_folder("report.md", ["plot.png"], what="plots")
    Traceback (most recent call last):
    ...
    scld_aug.files.OutputPathError: The plots folder 'report.md' is a file; give a folder.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"The {what} folder {str(folder)!r} is a file; give a folder.")
    _check_writable_folder(folder.absolute(), f"the {what} folder {str(folder)!r}")
    for name in names:
        check_output_path(folder / name, inputs=inputs, overwrite=overwrite, what=what)
    return folder


def _check_writable_folder(folder: Path, what: str) -> None:
    """``folder`` (or, where it is missing, its nearest existing parent) can take new files."""
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise OutputPathError(f"Cannot create the folder of {what}: {str(folder)!r} is a file.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"Cannot write {what}: no write permission in the folder {str(folder)!r}."
        )


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


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[Path], None],
    *,
    overwrite: bool = False,
    duplicate_ok: bool = False,
    what: str = "output",
) -> Path:
    """Write ``path`` through ``write(tmp)`` into a hidden file next to it, then commit it.

    Readers see no file, the old file or the complete new one. On an exception,
    KeyboardInterrupt or SIGTERM the temporary file is removed; leftovers of killed writers
    are swept first. The file gets the permissions of any new file of the process
    (``0o666`` less the umask in force now).

    Parameters
    ----------
    path : str or path-like
    write : callable
        Writes the content to the path it is given.
    overwrite : bool, default=False
        Replace a file at ``path``. Without it the result is created exclusively: a file
        that exists at ``path`` when the write ends (it appeared after the caller checked
        the path) is left alone, and the result is kept next to it under a free name
        (:class:`OutputConflictError`, whose ``kept`` names it).
    duplicate_ok : bool, default=False
        A file at ``path`` holds this very content (a cache entry another process wrote
        first): keep it, drop the new copy, and return ``path``.
    what : str, default="output"
        What the file is, for messages.

    Returns
    -------
    path : Path

    Raises
    ------
    OutputConflictError
        See ``overwrite``.
    OSError
        When the folder cannot take the file; the message names the target, not the
        temporary file.

    Examples
    --------
    >>> from pathlib import Path
    >>> atomic_write("notes.txt", lambda tmp: tmp.write_text("done")).read_text()
    'done'
    >>> atomic_write("notes.txt", lambda tmp: tmp.write_text("again"))
    Traceback (most recent call last):
    ...
    scld_aug.files.OutputConflictError: The output file 'notes.txt' appeared while scld-aug was working (another process or run?) and was not replaced; the result was written to 'notes.1.txt' instead. Pass --overwrite (overwrite=True) to replace such a file.
    >>> Path("notes.txt").read_text(), Path("notes.1.txt").read_text()
    ('done', 'again')
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(path)
        tmp = _tmp_path(path)
        # Created here with mode 0o666 so that the kernel applies the current umask.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as err:
        raise _naming_target(err, path, what) from None
    try:
        with _removed_on_sigterm(tmp):
            try:
                write(tmp)
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
            except OSError as err:
                raise _naming_target(err, path, what) from None
            if overwrite:
                os.replace(tmp, path)
            elif not _create_exclusive(tmp, path):
                if duplicate_ok:
                    return path
                kept = _keep_beside(tmp, path)
                _fsync_folder(path.parent)
                raise OutputConflictError(path, kept, what)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()  # gone after a replace; the spare link after a link
    _fsync_folder(path.parent)
    return path


def _naming_target(err: OSError, path: Path, what: str) -> OSError:
    """``err`` reworded to name the file being written and its folder (not the hidden
    temporary file), with its own type and errno."""
    message = (
        f"Cannot write the {what} file {str(path)!r} in the folder "
        f"{str(path.absolute().parent)!r}: {err.strerror or err}"
    )
    return type(err)(message) if err.errno is None else type(err)(err.errno, message)


def _create_exclusive(tmp: Path, path: Path) -> bool:
    """Make ``tmp`` the file ``path`` only if no file is there; False when one is.

    A hard link fails atomically on an existing target; file systems without hard links
    fall back to a check followed by a rename.
    """
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except (OSError, NotImplementedError, AttributeError):
        if path.exists() or path.is_symlink():
            return False
        os.replace(tmp, path)
        return True


def _keep_beside(tmp: Path, path: Path) -> Path:
    """Give the finished ``tmp`` the first free name ``<stem>.<n><suffix>`` next to ``path``."""
    for n in range(1, 10_000):
        candidate = path.with_name(f"{path.stem}.{n}{path.suffix}")
        if _create_exclusive(tmp, candidate):
            return candidate
    raise OSError(f"No free name next to {str(path)!r} to keep the result")


def atomic_torch_save(
    obj: dict, path: str | os.PathLike, *, overwrite: bool = False, **options: Any
) -> Path:
    """``torch.save`` through :func:`atomic_write` (same options)."""
    import torch

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    return atomic_write(path, write, overwrite=overwrite, **options)


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
