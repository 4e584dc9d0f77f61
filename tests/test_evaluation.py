"""Smoke test of the benchmark harness (tiny SCLD model, PBMC subset, two seeds)."""

import pandas as pd
import pytest

from evaluation.__main__ import main


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_benchmark_harness_writes_every_output(tmp_path):
    argv = ["all", "--dataset", "pbmc", "--quick", "--output", str(tmp_path)]
    argv += ["--classifiers", "logreg", "--methods", "none", "SMOTE", "SCLD"]
    argv += ["--k", "10", "--fidelity-seeds", "1"]
    assert main(argv) == 0
    downstream = pd.read_csv(tmp_path / "results_downstream.csv")
    assert set(downstream["protocol"]) == {"natural", "downsample"}
    assert set(downstream["method"]) == {"none", "SMOTE", "SCLD"}
    assert set(downstream["seed"]) == {0, 1}
    scores = downstream[downstream["metric"].isin(["macro_f1", "rare_macro_f1"])]["value"]
    assert scores.between(0, 1).all()
    fidelity = pd.read_csv(tmp_path / "results_fidelity.csv")
    assert {"real (train)", "SMOTE", "SCLD pre (w=2, default)"} <= set(fidelity["method"])
    auc = fidelity[fidelity["metric"] == "two_sample_auc"]["value"]
    assert auc.between(0, 1).all()
    report = (tmp_path / "report.md").read_text()
    assert "Downstream classification" in report and "Fidelity of synthetic cells" in report
    for name in (
        "guidance_sweep.png",
        "embedding.png",
        "rare_f1_natural.png",
        "rare_f1_downsample_k10.png",
    ):
        assert (tmp_path / name).stat().st_size > 0
