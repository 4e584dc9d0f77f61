"""MLflow pyfunc flavor of a sampler logged by :func:`scld_aug.tracking.log_fit`.

A logged model is data only: its ``MLmodel`` names this module as the pyfunc
``loader_module``, and ``data/sampler.pt`` is the sampler written by
:meth:`~scld_aug.SCLDSampler.save` (tensors and JSON). The code that reads it is this
module of the installed scld-aug package (pinned in the model's requirements), never code
stored with the model, and nothing is unpickled.

``mlflow.pyfunc.load_model`` imports this module and calls :func:`_load_pyfunc`; the
model's ``predict`` takes a DataFrame with columns ``cell_type`` and ``n_cells`` and
returns the generated cells (a ``cell_type`` column, then one column per gene).
:func:`scld_aug.tracking.load_sampler` reads the same folder without MLflow's loader, after
:func:`check_model_dir` has checked that it is an scld-aug model.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

LOADER_MODULE = "scld_aug.tracking.flavor"
SAMPLER_FILE = "sampler.pt"
# Files that never belong to an scld-aug model: code, native libraries and pickles.
CODE_OR_PICKLE_SUFFIXES = frozenset(
    {".py", ".pyc", ".pyo", ".pyd", ".pyw", ".pth", ".so", ".dll", ".dylib"}
    | {".pkl", ".pickle", ".cloudpickle", ".joblib", ".dill"}
)


class SCLDGeneratorModel:
    """The pyfunc model: generates cells of the requested types with a loaded sampler.

    Parameters
    ----------
    sampler : SCLDSampler
        Fitted (as returned by :meth:`SCLDSampler.load`).
    """

    def __init__(self, sampler) -> None:
        self.sampler = sampler

    def predict(self, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Cells of each requested type, in the order of the input rows.

        Parameters
        ----------
        model_input : DataFrame
            Columns ``cell_type`` (a class seen in training) and ``n_cells``.
        params : ignored

        Returns
        -------
        cells : DataFrame
            Column ``cell_type``, then one column per gene (the training input's gene
            names, else ``"0"``, ``"1"``, ...).
        """
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        missing = {"cell_type", "n_cells"} - set(model_input.columns)
        if missing:
            raise ValueError(
                f"Model input needs columns 'cell_type' and 'n_cells'; missing {sorted(missing)}."
            )
        frames = []
        for cell_type, n in zip(model_input["cell_type"], model_input["n_cells"], strict=True):
            cells = self.sampler.generate(int(n), cell_type)
            if hasattr(cells, "toarray"):
                cells = cells.toarray()
            frame = pd.DataFrame(np.asarray(cells), columns=self._gene_columns())
            frame.insert(0, "cell_type", cell_type)
            frames.append(frame)
        if not frames:
            return pd.DataFrame(columns=["cell_type", *self._gene_columns()])
        return pd.concat(frames, ignore_index=True)

    def _gene_columns(self) -> list[str]:
        """Gene names when training knew them (AnnData ``var_names``, DataFrame columns),
        else the genes' positions."""
        names = getattr(self.sampler, "feature_names_in_", None)
        if names is None:
            names = getattr(self.sampler.generator_, "gene_names", None)
        if names is not None:
            return [str(c) for c in names]
        return [str(i) for i in range(self.sampler.n_features_in_)]


def _load_pyfunc(data_path: str | os.PathLike) -> SCLDGeneratorModel:
    """Called by ``mlflow.pyfunc.load_model`` with the model's ``data`` path."""
    from scld_aug.sampler import SCLDSampler

    path = Path(data_path)
    if path.is_dir():
        path = path / SAMPLER_FILE
    return SCLDGeneratorModel(SCLDSampler.load(path, device="cpu"))


def _not_scld(name: str, why: str) -> ValueError:
    return ValueError(
        f"{name} is not an scld-aug model ({why}). scld_aug.tracking.load_sampler loads "
        "only models logged by scld_aug.tracking.log_fit and never runs code stored with a "
        "model."
    )


def _open_inside(root: Path, relative: str | os.PathLike, name: str) -> IO[bytes]:
    """The regular file ``root / relative``, opened for reading without following a
    symbolic link anywhere below ``root``.

    Each folder on the way is opened relative to the one before it with ``O_NOFOLLOW``, so
    a link planted after :func:`check_model_dir` looked is refused, never followed (where
    the platform cannot do that, each step is checked, then the file is opened). Named
    pipes and devices are refused without blocking on them.
    """
    parts = Path(relative).parts
    if not parts or Path(relative).is_absolute() or ".." in parts:
        raise _not_scld(name, f"{os.fspath(relative)!r} is not a path inside the model")
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    if not nofollow or os.open not in os.supports_dir_fd:
        path = root
        for part in parts:
            path = path / part
            if path.is_symlink():
                raise _not_scld(name, f"it holds a symbolic link, {path.relative_to(root)}")
        if not path.is_file():
            raise _not_scld(name, f"{path.relative_to(root)} is not a file")
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    folder_flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | nofollow
    fd = None
    walked = Path()
    try:
        # `root` is resolved: a link there now was swapped in after check_model_dir looked.
        fd = os.open(root, folder_flags)
        for part in parts[:-1]:
            walked /= part
            inner = os.open(part, folder_flags, dir_fd=fd)
            os.close(fd)
            fd = inner
        walked /= parts[-1]
        file_fd = os.open(parts[-1], os.O_RDONLY | nofollow | os.O_NONBLOCK, dir_fd=fd)
    except OSError as err:
        link = err.errno == errno.ELOOP or (root / walked).is_symlink()
        why = "it holds a symbolic link" if link else f"cannot read it ({err.strerror})"
        raise _not_scld(name, f"{why}, {walked.as_posix()}") from None
    finally:
        if fd is not None:
            os.close(fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        raise _not_scld(name, f"{walked.as_posix()} is not a regular file")
    return os.fdopen(file_fd, "rb")


def check_model_dir(folder: str | os.PathLike, name: str | None = None) -> Path:
    """Check that ``folder`` (a downloaded MLflow model) is an scld-aug model, holding data only.

    Reads ``MLmodel`` as plain YAML; imports and runs nothing from the folder, and reads
    nothing outside it (a folder that holds a symbolic link is refused).

    Parameters
    ----------
    folder : str or path-like
    name : str or None
        What errors call the model (e.g. its URI); default: ``folder``.

    Returns
    -------
    sampler_file : Path
        The saved sampler, inside ``folder``, for :meth:`SCLDSampler.load`.

    Raises
    ------
    ValueError
        When the folder holds code or pickle files, or its ``MLmodel`` does not name
        ``scld_aug.tracking.flavor`` as the pyfunc loader module (another flavor, a model
        from code, a pickled Python model), names code paths, points outside the folder,
        or holds a symbolic link.
    """
    import yaml

    folder = Path(folder)
    name = repr(name if name is not None else str(folder))
    mlmodel = folder / "MLmodel"
    if not mlmodel.is_file():
        raise _not_scld(name, "no MLmodel file")
    root = folder.resolve()
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise _not_scld(name, f"it holds a symbolic link, {path.relative_to(root)}")
        if path.suffix.lower() in CODE_OR_PICKLE_SUFFIXES or "python_model" in path.name:
            raise _not_scld(name, f"it holds code or a pickle, {path.relative_to(root)}")
    try:
        with _open_inside(root, "MLmodel", name) as file:
            config = yaml.safe_load(file.read().decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise _not_scld(name, f"MLmodel is not valid YAML: {err}") from err
    flavors = config.get("flavors") if isinstance(config, dict) else None
    pyfunc = flavors.get("python_function") if isinstance(flavors, dict) else None
    if not isinstance(pyfunc, dict):
        raise _not_scld(name, "MLmodel has no python_function flavor")
    loader = pyfunc.get("loader_module")
    if loader != LOADER_MODULE:
        raise _not_scld(
            name, f"its MLmodel names the loader module {loader!r}, not {LOADER_MODULE!r}"
        )
    # MLflow writes `code: null`; anything else would be stored code or pickles.
    unexpected = [
        k for k in ("code", "python_model", "model_code_path", "artifacts") if pyfunc.get(k)
    ]
    if unexpected:
        raise _not_scld(name, f"its MLmodel names {', '.join(unexpected)}")
    data = pyfunc.get("data")
    if not isinstance(data, str) or not data or Path(data).is_absolute():
        raise _not_scld(name, f"its MLmodel has no relative data path (data: {data!r})")
    sampler_file = (root / data).resolve()
    if sampler_file.is_dir():
        sampler_file = sampler_file / SAMPLER_FILE
    if not sampler_file.is_relative_to(root) or not sampler_file.is_file():
        raise _not_scld(name, f"its data path {data!r} is not a file inside the model")
    return sampler_file


def load_model_dir(folder: str | os.PathLike, device: str = "auto", name: str | None = None) -> Any:
    """The sampler of a downloaded scld-aug model, after :func:`check_model_dir`.

    The sampler file is read with :meth:`SCLDSampler.load` (``torch.load`` with
    ``weights_only=True``: tensors and JSON), from a private copy taken without following
    any link (:func:`_open_inside`): a link planted in the folder after the check, by
    whoever else can write there, is refused rather than read.
    """
    from scld_aug.sampler import SCLDSampler

    sampler_file = check_model_dir(folder, name)
    root = Path(folder).resolve()
    label = repr(name if name is not None else str(folder))
    with (
        _open_inside(root, sampler_file.relative_to(root), label) as source,
        tempfile.TemporaryDirectory() as tmp,
    ):
        copy = Path(tmp) / SAMPLER_FILE
        with open(copy, "wb") as target:
            shutil.copyfileobj(source, target)
        try:
            return SCLDSampler.load(copy, device=device)
        except ValueError as err:
            # Name the model's own file, not the private copy.
            raise ValueError(str(err).replace(str(copy), str(sampler_file))) from None
