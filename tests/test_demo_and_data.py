"""The shipped dataset, preprocessing helpers and the main job's smoke mode."""

import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scld_aug import datasets
from scld_aug.preprocessing import log_normalize


def test_baron_pancreas_is_shipped_raw_counts():
    adata = datasets.baron_pancreas()
    assert adata.shape == (1937, 20125)
    assert sp.issparse(adata.X)
    assert np.all(adata.X.data == np.round(adata.X.data)) and adata.X.data.min() >= 1
    counts = adata.obs["cell_type"].value_counts()
    assert counts["beta"] == 872 and counts["t_cell"] == 2 and len(counts) == 14


def test_log_normalize_dense_and_sparse_agree():
    X = np.array([[1, 3, 0], [0, 0, 0], [5, 5, 10]])
    dense = log_normalize(X)
    sparse = log_normalize(sp.csr_matrix(X))
    assert sp.issparse(sparse)
    np.testing.assert_allclose(sparse.toarray(), dense)
    np.testing.assert_allclose(np.expm1(dense[0]).sum(), 1e4)
    assert np.all(dense[1] == 0)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_demo_quick_mode_runs_end_to_end(tmp_path, capsys):
    from scld_aug.apps.cli import main

    assert main(["demo", "--quick", "--folds", "2", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # Every training is reported: the demo's own and one per fold (3 with 2 folds).
    assert len(re.findall(r"Training SCLD on \d+ cells", out)) == 3
    assert "Marker expression, synthetic / real" in out
    counts = pd.read_csv(tmp_path / "class_counts.csv", index_col=0)
    rare = ["macrophage", "epsilon", "mast", "schwann"]
    assert (counts.loc[rare, "synthetic"] > 0).all()
    assert (counts.drop(index=rare)["synthetic"] == 0).all()
    f1 = pd.read_csv(tmp_path / "f1.csv", index_col=0)
    assert list(f1.columns) == ["none", "RandomOverSampler", "SMOTE", "SCLD"]
    assert f1.loc["macro-F1, all types"].between(0, 1).all()
    # Every bar has its bootstrap interval, around the F1 of the table.
    intervals = pd.read_csv(tmp_path / "f1_intervals.csv").set_index(["method", "cell_type"])
    assert (intervals["low"] <= intervals["f1"]).all() and (
        intervals["f1"] <= intervals["high"]
    ).all()
    for method in f1.columns:
        assert intervals.loc[(method, "mean"), "f1"] == pytest.approx(
            f1.loc["mean F1, rare types", method]
        )
        assert intervals.loc[(method, "mast"), "f1"] == pytest.approx(f1.loc["mast", method])
    for name in (
        "tsne_real_vs_synthetic.png",
        "marker_dotplot.png",
        "rare_f1.png",
        "baron_augmented.h5ad",
    ):
        assert (tmp_path / name).stat().st_size > 0
    markers = pd.read_csv(tmp_path / "markers.csv")
    assert set(markers["cell_type"]) == set(rare) and (markers["fraction"].between(0, 1)).all()
    assert len(markers) == 2 * 5 * len(rare)  # 5 markers, real and synthetic, per type
    import anndata

    augmented = anndata.read_h5ad(tmp_path / "baron_augmented.h5ad")
    assert augmented.obs["is_synthetic"].sum() == counts["synthetic"].sum()
