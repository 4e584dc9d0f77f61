"""An augmented AnnData goes through scanpy's usual steps, from memory and from disk, and
says how it was made."""

from __future__ import annotations

import json

import anndata
import numpy as np
import pandas as pd
import pytest

from scld_aug import SCLDSampler
from scld_aug.presets import TINY

sc = pytest.importorskip("scanpy")


@pytest.fixture(scope="module")
def analysed():
    """Shipped data cut to every type's first 40 cells, then analysed as scanpy users do:
    counts in a layer, log-normalized X, PCA, neighbours and UMAP of the real cells."""
    from scld_aug import datasets

    full = datasets.baron_pancreas()
    types = full.obs["cell_type"].to_numpy()
    keep = np.sort(np.concatenate([np.flatnonzero(types == t)[:40] for t in np.unique(types)]))
    adata = full[keep].copy()
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.pca(adata, n_comps=10)
    sc.pp.neighbors(adata, n_neighbors=5)
    sc.tl.umap(adata)
    return adata


def _umap_runs(adata) -> None:
    sc.pp.pca(adata, n_comps=10)
    sc.pp.neighbors(adata, n_neighbors=5)
    sc.tl.umap(adata)
    assert adata.obsm["X_umap"].shape == (adata.n_obs, 2)
    assert np.isfinite(adata.obsm["X_umap"]).all()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_normalized_x_goes_straight_to_umap_after_a_round_trip(analysed, tmp_path):
    before = {k: type(v) for k, v in analysed.uns.items()}
    out = SCLDSampler(random_state=0, **TINY).fit_resample_anndata(
        analysed, labels_key="cell_type", layer="counts", normalize_x=True
    )
    assert dict.fromkeys(analysed.uns) == dict.fromkeys(before)  # the input is untouched
    # Results of the real cells only are gone; X is new, and uns says how it was made.
    assert not {"pca", "neighbors", "umap"} & set(out.uns)
    assert out.uns["log1p"] == {"base": None}
    assert not out.obsm and not out.obsp
    counts = out.layers["counts"]
    expected = np.log1p(counts.toarray() / counts.sum(1).A * 1e4)
    np.testing.assert_allclose(out.X.toarray(), expected, rtol=1e-5, atol=1e-6)
    record = out.uns["scld_aug"]
    assert record["matrix"] == "layers/counts" and record["labels_key"] == "cell_type"
    types = record["cell_types"]
    assert types["n_synthetic"].sum() == out.obs["is_synthetic"].sum() > 0
    # Too few cells to learn from: skipped, nothing generated.
    assert types.loc["t_cell", ["cells", "n_synthetic", "skipped"]].tolist() == [2, 0, True]
    assert list(types.columns) == ["cells", "n_synthetic", "skipped"]
    assert types["cells"].sum() == analysed.n_obs
    assert record["generator_source"] == "trained" and len(record["generator_id"]) > 16
    assert json.loads(record["params"])["random_state"] == 0
    out.write_h5ad(tmp_path / "out.h5ad")
    back = anndata.read_h5ad(tmp_path / "out.h5ad")
    assert back.uns["scld_aug"]["generator_id"] == record["generator_id"]
    pd.testing.assert_frame_equal(back.uns["scld_aug"]["cell_types"], types)
    _umap_runs(back)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_counts_in_x_go_through_normalize_total_pca_and_umap(analysed):
    raw = anndata.AnnData(
        X=analysed.layers["counts"].copy(), obs=analysed.obs.copy(), var=analysed.var.copy()
    )
    raw.uns = {"pca": dict(analysed.uns["pca"]), "cell_type_colors": ["#000000"] * 14}
    out = SCLDSampler(random_state=0, **TINY).fit_resample_anndata(raw, labels_key="cell_type")
    assert "pca" not in out.uns and "cell_type_colors" in out.uns
    assert out.uns["scld_aug"]["matrix"] == "X"
    sc.pp.normalize_total(out, target_sum=1e4)
    sc.pp.log1p(out)
    _umap_runs(out)


def test_normalize_x_needs_a_layer(analysed):
    with pytest.raises(ValueError, match="normalize_x=True fills X from the augmented layer"):
        SCLDSampler(**TINY).fit_resample_anndata(analysed, normalize_x=True)
