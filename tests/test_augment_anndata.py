"""``scld_aug.augment``: the AnnData front door, with the command line's defaults."""

from __future__ import annotations

import warnings

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scld_aug
from scld_aug.apps.augment import AugmentError
from tests.conftest import TINY, make_counts


@pytest.fixture(scope="module")
def adata():
    # 300 + 200 cells of two types and one of 6 cells (under 2%): the rare one.
    X, y = make_counts(sizes=(300, 200, 6), n_genes=60)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(y),
            "compartment": np.where(y == "type0", "immune", "stromal"),
            "batch": np.tile(["b1", "b2"], len(y) // 2 + 1)[: len(y)],
        },
        index=[f"cell-{i}" for i in range(len(y))],
    )
    counts = sp.csr_matrix(X.astype(np.float32))
    return anndata.AnnData(
        X=None,
        obs=obs,
        var=pd.DataFrame(index=[f"g{i}" for i in range(X.shape[1])]),
        layers={"counts": counts, "spliced": counts.copy()},
    )


@pytest.fixture(scope="module")
def result(adata):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = scld_aug.augment(adata, "cell_type", layer="counts", **TINY)
    return out, [str(w.message) for w in caught]


def test_only_the_rare_types_are_raised_to_the_median_type_size(adata, result):
    out, _ = result
    before = adata.obs["cell_type"].value_counts()
    after = out.obs["cell_type"].value_counts()
    assert after["type2"] == int(np.median(before)) == 200
    assert after["type0"] == before["type0"] and after["type1"] == before["type1"]
    assert int(out.obs["is_synthetic"].sum()) == 200 - 6
    table = out.uns["scld_aug"]["cell_types"]
    assert table.loc["type2", "n_synthetic"] == 194 and out.uns["scld_aug"]["key_added"] == (
        "is_synthetic"
    )


def test_the_result_is_ready_for_scanpy(result):
    import scanpy as sc

    out, _ = result
    assert out.X is not None and out.layers["counts"].shape == out.X.shape
    sc.pp.pca(out, n_comps=5)  # X is the log-normalized layer
    assert out.obsm["X_pca"].shape == (out.n_obs, 5)


def test_obs_columns_a_type_shares_are_filled_the_others_are_missing(result):
    out, _ = result
    synthetic = out.obs[out.obs["is_synthetic"]]
    assert (synthetic["compartment"] == "stromal").all()  # every real type2 cell's value
    assert synthetic["batch"].isna().all()  # type2's real cells span both batches


def test_layers_that_cannot_follow_are_named_in_a_warning(result):
    out, messages = result
    assert "spliced" not in out.layers
    assert any("['spliced']" in m and "not carried over" in m for m in messages)


def test_the_input_is_not_modified(adata, result):
    assert adata.n_obs == 506 and "is_synthetic" not in adata.obs
    assert set(adata.layers) == {"counts", "spliced"} and adata.X is None


@pytest.mark.filterwarnings("ignore:Layers")
def test_key_added_names_the_column_and_must_be_new(adata, count_trainings):
    with pytest.raises(ValueError, match="already has a column 'batch'"):
        scld_aug.augment(adata, "cell_type", layer="counts", key_added="batch", **TINY)
    assert count_trainings == []
    out = scld_aug.augment(
        adata, "cell_type", layer="counts", key_added="synthetic", cell_types=["type2"],
        target=50, **TINY,
    )  # fmt: skip
    assert "is_synthetic" not in out.obs and int(out.obs["synthetic"].sum()) == 44


def test_errors_name_the_function_arguments_before_training(adata, count_trainings):
    with pytest.raises(AugmentError, match=r"Unknown cell type\(s\) \['nk'\]"):
        scld_aug.augment(adata, "cell_type", layer="counts", cell_types=["nk"], **TINY)
    with pytest.raises(AugmentError, match="Raise target or leave it out of cell_types"):
        scld_aug.augment(
            adata, "cell_type", layer="counts", cell_types=["type0"], target=100, **TINY
        )
    with pytest.raises(ValueError, match="cell_types= and their size with target="):
        scld_aug.augment(adata, "cell_type", layer="counts", sampling_strategy="auto", **TINY)
    assert count_trainings == []
