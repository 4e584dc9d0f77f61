"""Every example of the README, the docs' front page and the getting-started page runs as
written, on the shipped data, with a tiny configuration.

The tiny configuration is the only change: the sampler's defaults become ``TINY`` (small
networks, few steps), the shipped Baron data is cut to a stratified subset of its cells that
keeps every cell type (at most 60 cells each, so the types under 2% of the cells, and the
2-cell ``t_cell`` type, are still rare) and to its 1,000 most
expressed genes, and command lines get ``--quick``.
Python blocks of one page run in order in one namespace, as a reader would paste them; names
a page uses without defining (``X_counts``, ``y``, ``clf``) come from the shipped data. Shell
lines that call ``scld-aug`` run through the command line's entry point; ``make``, ``pip``
and ``torchrun`` lines are set-up and multi-process launches, tested elsewhere.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/index.md", "docs/getting_started.md"]
BLOCK = re.compile(r"```(python|bash)\n(.*?)```", re.DOTALL)
# Shell lines these pages show without running them here, and why.
NOT_RUN = {
    "make": "the set-up commands themselves (CI runs them)",
    "pip": "installation",
    "python3": "installation",
    "TORCH_SPEC=": "installation",
    "torchrun": "several processes (tests/test_pretrain.py runs torchrun)",
}


def blocks(page: str) -> list[tuple[str, str]]:
    return BLOCK.findall((ROOT / page).read_text())


def shell_commands(code: str) -> list[list[str]]:
    """The ``scld-aug`` command lines of a bash block, optional ``[...]`` parts left out."""
    commands = []
    for line in code.splitlines():
        line = re.sub(r"\[[^\]]*\]", "", line.split("#")[0]).strip()
        if not line:
            continue
        if line.startswith("scld-aug "):
            commands.append(shlex.split(line)[1:])
        else:
            assert any(line.startswith(p) for p in NOT_RUN), f"unexpected shell line: {line}"
    return commands


def test_every_page_has_examples_and_no_unknown_shell_lines():
    for page in PAGES:
        found = blocks(page)
        assert any(kind == "python" for kind, _ in found), page
        for kind, code in found:
            if kind == "bash":
                shell_commands(code)


@pytest.fixture
def tiny_world(tmp_path, monkeypatch):
    """The shipped data cut to a stratified subset of cells and genes, tiny sampler defaults,
    a fresh folder."""
    import anndata

    from scld_aug import SCLDSampler, datasets
    from scld_aug.presets import TINY

    full = datasets.baron_pancreas()
    rng = np.random.default_rng(0)
    keep = []
    for cell_type in full.obs["cell_type"].unique():
        rows = np.flatnonzero(full.obs["cell_type"].to_numpy() == cell_type)
        keep += list(rng.choice(rows, size=min(len(rows), 60), replace=False))
    cells = full[np.sort(keep)]
    # 1,000 genes (the most expressed): every example fits classifiers on all genes.
    genes = np.sort(np.argsort(-np.asarray(cells.X.sum(axis=0)).ravel())[:1000])
    subset = cells[:, genes].copy()
    monkeypatch.setattr(datasets, "baron_pancreas", lambda: subset.copy())
    defaults = {**SCLDSampler.__init__.__kwdefaults__, **TINY}
    monkeypatch.setattr(SCLDSampler.__init__, "__kwdefaults__", defaults)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    # Files the shell examples read: the data as an .h5ad, and with a counts layer.
    subset.write_h5ad("pancreas.h5ad")
    with_layer = anndata.AnnData(X=subset.X.copy(), obs=subset.obs, var=subset.var)
    with_layer.layers["counts"] = subset.X.copy()
    with_layer.write_h5ad("atlas.h5ad")
    return subset


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run_as_written(page, tiny_world):
    from sklearn.linear_model import LogisticRegression

    from scld_aug.apps.cli import main as cli

    namespace = {
        "X_counts": tiny_world.X,
        "y": tiny_world.obs["cell_type"].to_numpy(),
        "clf": LogisticRegression(max_iter=1000),
    }
    ran = 0
    for kind, code in blocks(page):
        if kind == "python":
            exec(compile(code, f"{page} example {ran + 1}", "exec"), namespace)
            ran += 1
            continue
        for argv in shell_commands(code):
            assert cli([*argv, "--quick"]) == 0, argv
            ran += 1
    assert ran >= 1
    if "augmented" in namespace:  # the AnnData example: every type kept, rare ones raised
        augmented = namespace["augmented"]
        assert augmented.obs["is_synthetic"].any()
        assert set(augmented.obs["cell_type"]) == set(tiny_world.obs["cell_type"])
