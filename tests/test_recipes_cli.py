"""The recipes' smoke modes, run as a user would: ``python recipes/<name>.py --smoke``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anndata
import pandas as pd

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
RARE = ["macrophage", "epsilon", "mast", "schwann"]  # Baron types with < 2% and >= 3 cells


def _run_recipe(name: str, output_dir: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(RECIPES / name), "--smoke", "--output-dir", str(output_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_augment_h5ad_recipe_smoke(tmp_path):
    stdout = _run_recipe("augment_h5ad.py", tmp_path)
    assert "-m scld_aug.apps.cli augment" in stdout and "--quick" in stdout
    assert "Original 1937 cells first and unchanged: True" in stdout
    result = anndata.read_h5ad(tmp_path / "baron_pancreas_augmented.h5ad")
    synthetic = result.obs.loc[result.obs["is_synthetic"], "cell_type"].astype(str)
    assert sorted(synthetic.unique()) == sorted(RARE)
    after = result.obs["cell_type"].value_counts()
    assert (after[RARE] == 81).all()  # the median type size
    # The read-back table: one row per augmented type, with its synthetic count.
    for cell_type in RARE:
        row = next(line for line in stdout.splitlines() if line.startswith(cell_type + " "))
        assert int(row.split()[2]) == (synthetic == cell_type).sum()


def test_rare_cell_oversampling_recipe_smoke(tmp_path):
    stdout = _run_recipe("rare_cell_oversampling.py", tmp_path)
    assert "2-fold stratified CV" in stdout
    # SCLD trains once per fold and the other classifiers reuse those generators.
    assert "SCLD generators: 2 trained" in stdout
    assert stdout.count("SCLD generators: 2 memory") == 2
    table = pd.read_csv(tmp_path / "f1.csv", index_col=[0, 1])
    assert set(table.index.get_level_values("classifier")) == {
        "logistic regression",
        "kNN",
        "random forest",
    }
    assert set(table.index.get_level_values("method")) == {"none", "SMOTE", "SCLD"}
    assert list(table.columns) == [*RARE, "t_cell", "mean rare F1", "macro-F1"]
    assert table.stack().between(0, 1).all()
    assert "mean rare F1" in stdout and "random forest" in stdout
    assert (tmp_path / "rare_f1_by_classifier.png").stat().st_size > 0
    assert len(list((tmp_path / "scld_cache").rglob("generator-*.pt"))) == 2


def _mlflow_runs(db: Path, experiment: str) -> pd.DataFrame:
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    try:
        return mlflow.search_runs(experiment_names=[experiment])
    finally:
        mlflow.set_tracking_uri(previous)


def test_tune_guidance_recipe_smoke(tmp_path):
    stdout = _run_recipe("tune_guidance.py", tmp_path)
    assert "3 trials in the study" in stdout
    assert "3 generators trained (folds + refit)" in stdout
    assert "cross-validated macro-F1, default setting:" in stdout
    assert "best parameters: guidance_scale=" in stdout
    # Default and tuned samplers share the refit generator (memory / reuse).
    assert "default" in stdout and "memory" in stdout and "reused" in stdout
    for name in ("optimization_history.png", "guidance_vs_score.png", "trials.csv"):
        assert (tmp_path / "plots" / name).stat().st_size > 0
    runs = _mlflow_runs(tmp_path / "mlflow.db", "tune_guidance")
    study = runs[runs["tags.scld_aug.kind"] == "tuning"]
    assert len(study) == 1
    trials = runs[runs["tags.mlflow.parentRunId"] == study["run_id"].iloc[0]]
    assert len(trials) == 3 and (trials["tags.best_trial"] == "true").sum() == 1
    assert (runs["tags.mlflow.runName"] == "tuned sampler").sum() == 1


def test_compare_in_mlflow_recipe_smoke(tmp_path):
    stdout = _run_recipe("compare_in_mlflow.py", tmp_path)
    assert "From MLflow" in stdout
    table = pd.read_csv(tmp_path / "comparison.csv", index_col=0)
    assert set(table.index) == {"none", "RandomOverSampler", "SMOTE", "SCLD", "SCLD guidance=4"}
    assert list(table["mean rare F1"]) == sorted(table["mean rare F1"], reverse=True)
    runs = _mlflow_runs(tmp_path / "mlflow.db", "compare_in_mlflow")
    top = runs[runs["tags.mlflow.parentRunId"].isna()]
    assert len(top) == 5 and top["metrics.macro_f1_mean"].between(0, 1).all()
    nested = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(nested) == 2 and nested["tags.scld_aug.model_uri"].str.startswith("models:/").all()
    # SCLD's two settings differ only at sampling time: one generator per fold in all.
    assert len(list((tmp_path / "generator_cache").rglob("generator-*.pt"))) == 2
