"""Smoke test of the benchmark harness (tiny SCLD model, PBMC subset, two seeds)."""

from unittest import mock

import numpy as np
import pandas as pd
import pytest

from evaluation.__main__ import main
from scld_aug.benchmark.protocols import REAL_HELD_OUT, split


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_benchmark_harness_writes_every_output(tmp_path):
    argv = ["all", "--dataset", "pbmc", "--quick", "--output", str(tmp_path)]
    argv += ["--classifiers", "logreg", "--methods", "none", "SMOTE", "SCLD"]
    argv += ["--k", "10", "--fidelity-seeds", "1"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv += ["--mlflow", uri]
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
    _check_held_out_recognition(fidelity)
    report = (tmp_path / "report.md").read_text()
    assert "Downstream classification" in report and "Fidelity of synthetic cells" in report
    assert REAL_HELD_OUT in report.split("### Conditional fidelity per type")[1]
    for name in (
        "guidance_sweep.png",
        "embedding.png",
        "rare_f1_natural.png",
        "rare_f1_downsample_k10.png",
    ):
        assert (tmp_path / name).stat().st_size > 0

    _check_mlflow_runs(uri, downstream)


def _check_held_out_recognition(fidelity):
    """The reference rows are the classifier of real training cells applied to held-out
    real cells, recomputed here independently of the protocol."""
    from sklearn.linear_model import LogisticRegression

    from evaluation.__main__ import load
    from scld_aug.metrics import ReferenceEmbedding

    held = fidelity[fidelity["method"] == REAL_HELD_OUT]
    assert set(held["metric"]) == {"recognised", "confusion"}
    X, y = load("pbmc")
    train, test = split(y, 0)
    embedding = ReferenceEmbedding().fit(X[train])
    classifier = LogisticRegression(max_iter=2000).fit(embedding.transform(X[train]), y[train])
    predicted = classifier.predict(embedding.transform(X[test]))
    recognised = held[held["metric"] == "recognised"].set_index("cell_type")["value"]
    assert len(recognised) >= 5
    for cell_type, value in recognised.items():
        mine = y[test] == cell_type
        assert value == pytest.approx(np.mean(predicted[mine] == cell_type))
    # PBMC's look-alike T-cell subsets are confused among real cells too.
    assert recognised.min() < 0.9


def _check_mlflow_runs(uri, downstream):
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["scld-aug-benchmark"])
    parent = runs[runs["tags.mlflow.runName"] == "benchmark pbmc"]
    assert len(parent) == 1
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]]
    scld = children[
        (children["params.protocol"] == "natural") & (children["params.method"] == "SCLD")
    ]
    assert len(scld) == 1
    expected = downstream[
        (downstream["protocol"] == "natural")
        & (downstream["method"] == "SCLD")
        & (downstream["metric"] == "rare_macro_f1")
    ]["value"].mean()
    assert scld["metrics.rare_macro_f1_mean"].iloc[0] == pytest.approx(expected)
    assert "fidelity SMOTE" in set(children["tags.mlflow.runName"])
    artifacts = mlflow.artifacts.list_artifacts(run_id=parent["run_id"].iloc[0])
    assert "report.md" in {a.path for a in artifacts}


def test_unreachable_tracking_server_only_warns(tmp_path, monkeypatch):
    from scld_aug.tracking.benchmarks import log_benchmark

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    (tmp_path / "report.md").write_text("# report")
    # Port 9 (discard) on loopback has no MLflow server.
    with pytest.warns(RuntimeWarning, match="results in .* are complete"):
        run_id = log_benchmark(tmp_path, "x", None, None, {}, uri="http://127.0.0.1:9")
    assert run_id is None


@pytest.mark.parametrize(
    "method, expected",
    [
        ("SCLD", {}),
        ("SCLD w=3", {"guidance_scale": 3.0}),
        ("SCLD w=0 s=2", {"guidance_scale": 0.0, "post_guidance_scale": 2.0}),
        ("SCLD anchor=0.5", {"anchor_strength": 0.5}),
        ("SCLD balance=0.5", {"class_balance": 0.5}),
        (
            "SCLD w=auto ref=confusable",
            {"guidance_scale": "auto", "guidance_reference": "confusable"},
        ),
        ("SMOTE", {}),
    ],
)
def test_method_names_encode_scld_variants(method, expected):
    from scld_aug.benchmark.protocols import variant_params

    assert variant_params(method) == expected


def test_unknown_variant_key_is_a_clear_error():
    from scld_aug.benchmark.protocols import variant_params

    with pytest.raises(ValueError, match="key=value"):
        variant_params("SCLD guidance=3")


def test_scvi_baseline_samples_counts_of_the_requested_classes(tmp_path):
    pytest.importorskip("scvi")
    import numpy as np
    import scipy.sparse as sp

    from scld_aug.benchmark.scvi_baseline import SCVISampler

    from .conftest import make_counts

    X, y = make_counts(sizes=(120, 30), n_genes=60)
    X_csr = sp.csr_matrix(X)
    kw = dict(sampling_strategy={"type1": 80}, random_state=0, max_epochs=150, memory=tmp_path)
    X_res, y_res = SCVISampler(**kw).fit_resample(X_csr, y)
    assert sp.issparse(X_res) and X_res.shape == (200, 60)
    assert (y_res == "type1").sum() == 80
    synthetic = X_res[150:].toarray()
    assert synthetic.min() >= 0 and np.array_equal(synthetic, np.round(synthetic))
    # Posterior samples of type1 cells look like type1 (its own gene program), not type0.
    profile = np.log1p(synthetic.mean(0))
    r = {t: np.corrcoef(profile, np.log1p(X[y == t].mean(0)))[0, 1] for t in ("type0", "type1")}
    assert r["type1"] > 0.9 and r["type1"] > r["type0"] + 0.05, r
    # The cached model gives the same cells.
    again, _ = SCVISampler(**kw).fit_resample(X_csr, y)
    assert (again != X_res).nnz == 0
    with pytest.raises(ValueError, match="raw counts"):
        SCVISampler(**kw).fit_resample(X_csr * 0.5, y)


def test_ablation_reads_variants_and_summarises_every_goal():
    import pandas as pd

    from evaluation.ablation import parse, summary

    assert parse("default") == {}
    assert parse("aebalance=0 w=4 ref=confusable") == {
        "autoencoder_class_balance": 0.0,
        "guidance_scale": 4.0,
        "guidance_reference": "confusable",
    }
    rows = []
    for seed, f1 in ((0, 0.5), (1, 0.7)):
        rows += [
            dict(seed=seed, method="SCLD", seconds=9.0, classifier="logreg", metric=m, value=f1)
            for m in ("rare_macro_f1", "macro_f1")
        ]
        rows += [
            dict(seed=seed, method="SCLD", seconds=9.0, cell_type=t, metric=m, value=v)
            for t, v in (("a", 0.9), ("b", 0.8))
            for m in ("recognised", "memorization_ratio")
        ]
        rows += [
            dict(seed=seed, method="SCLD", cell_type="a", metric="guidance_scale", value=w)
            for w in ((2.0, 6.0) if seed else (4.0,))
        ]
        rows.append(dict(seed=seed, method="SCLD", metric="sampling_seconds", value=seed + 1.0))
    table = summary(pd.DataFrame(rows))
    assert table.loc["SCLD", "w (mean, range)"] == "4.0 (2-6)"
    assert table.loc["SCLD", "sampling s"] == "1.5"
    assert table.loc["SCLD", "logreg rare"] == "0.600 ± 0.141"
    assert table.loc["SCLD", "recognised min"] == "0.80 (b)"
    assert table.loc["SCLD", "memorization"] == 0.85


def test_rerun_keeps_the_saved_rows_of_methods_it_did_not_run(tmp_path):
    """``--keep-other-methods``: new rows replace a method's saved ones, methods not rerun
    keep theirs, and a saved run on other splits is refused."""
    import json

    from scld_aug.benchmark.run import BenchmarkError, keep_saved_rows

    meta = {"seeds": [0, 1], "downsampled types": ["a"], "command": "old", "scVI": "100 epochs"}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    old = pd.DataFrame({"method": ["SCLD", "scVI", "none"], "value": [0.1, 0.9, 0.5]})
    old.to_csv(tmp_path / "results_downstream.csv", index=False)
    old.to_csv(tmp_path / "results_fidelity.csv", index=False)
    new = pd.DataFrame({"method": ["SCLD", "none"], "value": [0.7, 0.5]})
    downstream, fidelity, note = keep_saved_rows(tmp_path, new, new, [0, 1], ["a"])
    for merged in (downstream, fidelity):
        assert dict(zip(merged["method"], merged["value"], strict=True)) == {
            "SCLD": 0.7,
            "none": 0.5,
            "scVI": 0.9,
        }
    assert "['scVI']" in note["kept from the previous run"] and note["scVI"] == "100 epochs"
    # A protocol not run now keeps all its saved rows.
    downstream, fidelity, note = keep_saved_rows(tmp_path, None, new, [0, 1], ["a"])
    pd.testing.assert_frame_equal(downstream, old)
    assert "downstream rows of ['SCLD', 'none', 'scVI']" in note["kept from the previous run"]
    with pytest.raises(BenchmarkError, match="rerun every method"):
        keep_saved_rows(tmp_path, new, new, [0, 1, 2], ["a"])


def test_fit_time_variants_are_read_as_parameters():
    from evaluation.fit_time import parse

    assert parse("kl_weight=1 autoencoder_class_balance=None guidance_reference=confusable") == {
        "kl_weight": 1,
        "autoencoder_class_balance": None,
        "guidance_reference": "confusable",
    }
    assert parse("aebalance=None w=3") == {
        "autoencoder_class_balance": None,
        "guidance_scale": 3,
    }
    with pytest.raises(SystemExit, match="key=value"):
        parse("kl_weight")


def test_fit_time_reads_each_phase_and_times_only_the_checkout_it_is_given(tmp_path):
    """Each phase's seconds and steps come from the fit's own log; a folder without the
    project would time the installed ``scld_aug`` instead: refused."""
    from evaluation.fit_time import ROOT, row, save_cells, time_fit
    from scld_aug import datasets

    adata = datasets.baron_pancreas()[:300, :400]
    cells = tmp_path / "cells.npz"
    save_cells(adata.X, adata.obs["cell_type"].astype(str).to_numpy(), cells)
    tiny = dict(hidden_dim=16, latent_dim=4, n_top_genes=50, kl_weight=0.0)
    steps = dict(autoencoder_steps=60, diffusion_steps=70, classifier_steps=80)
    fit = time_fit(ROOT, cells, {**tiny, **steps})
    line = row("this", "tiny", (300, 400), fit)
    for name, cap in zip(("autoencoder", "diffusion", "classifier"), steps.values(), strict=True):
        assert 0 < line[f"{name} steps"] <= cap and line[f"{name} s"] > 0
    assert line["trainings"] == 1 and 0 < line["other s"] < line["fit s"]
    with pytest.raises(SystemExit, match="not from"):
        time_fit(tmp_path, cells, tiny)


def test_gpu_check_measures_each_goal_and_its_gpu_only_checks_run(tmp_path):
    """The GPU-only checks (10^5 cells of 2,000 genes, torchrun) run here on the CPU with a
    tiny model, and every goal gets its line, met or not."""
    from evaluation import gpu_check
    from scld_aug import datasets

    adata = datasets.baron_pancreas()
    X, y = adata.X, adata.obs["cell_type"].astype(str).to_numpy()
    genes = gpu_check.check_2000_genes(X, y, quick=True, device="cpu")
    assert genes["genes"] == 50 and genes["cells_per_s_100k_beta"] > 0
    ddp = gpu_check.check_nccl(adata, quick=True, device="cpu")
    assert ddp["torchrun_nccl_ok"], ddp["torchrun_tail"]
    table = pd.DataFrame(
        [
            {"device": "cuda:0", "variant": "default", "fit_s": 12.5, "cells_per_s_100k_beta": 9e4},
            {"device": "cpu", "variant": "default", "fit_s": 80.0, "cells_per_s_100k_beta": 2e3},
        ]
    ).set_index(["device", "variant"])
    lines = gpu_check.goals(table, {**genes, "cells_per_s_100k_beta": 1.5e5, **ddp})
    assert lines[0] == "default fit on Baron, default: 12.5 s (goal <= 10 s: not met)"
    assert lines[1] == "10^5 cells x 50 genes on the GPU: 150,000 cells/s (goal >= 100,000: met)"
    assert lines[-1].startswith("torchrun on the GPU (NCCL): ran in ")


def test_training_proxies_reward_cells_of_the_right_type_and_punish_the_wrong_one():
    import numpy as np

    from evaluation.ablation import training_proxies
    from scld_aug.metrics import ReferenceEmbedding

    from .conftest import make_counts

    X, y = make_counts(sizes=(200, 150, 10), n_genes=300, seed=3)
    embedding = ReferenceEmbedding(n_components=10, n_top_genes=300).fit(X)
    rng = np.random.default_rng(0)
    rare, other = np.flatnonzero(y == "type2"), np.flatnonzero(y == "type1")
    labels = np.array(["type2"] * 60)
    right = training_proxies(embedding, X, y, X[rng.choice(rare, 60)], labels, ["type2"], 0)
    wrong = training_proxies(embedding, X, y, X[rng.choice(other, 60)], labels, ["type2"], 0)
    scores = {r["metric"]: r["value"] for r in right}
    assert scores["proxy_knn"] > 0.9 and scores["proxy_logreg"] > 0.9, scores
    # Cells of another type labelled as the rare one make its real cells' neighbours and
    # its decision region wrong.
    for r, w in zip(right, wrong, strict=True):
        assert w["value"] < r["value"] - 0.3, (right, wrong)


def test_inner_choice_scores_each_variant_on_cells_its_generator_never_saw():
    from evaluation.__main__ import load
    from evaluation.inner_choice import inner_rows
    from scld_aug.benchmark.protocols import default_downsample_types

    X, y = load("pbmc")
    tiny = "autoencoder_steps=20 diffusion_steps=20 classifier_steps=5 hidden_dim=32"
    rows = inner_rows(X, y, 0, 10, default_downsample_types(y), [tiny], ["logreg"], 1)
    assert [(r["variant"], r["classifier"]) for r in rows] == [(tiny, "logreg")]
    assert 0 <= rows[0]["value"] <= 1


def test_per_type_errors_tell_precision_from_recall():
    from evaluation.ablation import per_type_errors, per_type_summary

    y_true = np.array(["a", "a", "a", "a", "b", "b", "c", "c"])
    # Half of a's cells are missed (recall 0.5); b's prediction pulls in one c (precision 2/3).
    y_pred = np.array(["a", "a", "c", "c", "b", "b", "b", "c"])
    rows = per_type_errors(y_true, y_pred, ["a", "b"], "knn")
    got = {(r["cell_type"], r["metric"]): r["value"] for r in rows}
    assert got == {
        ("a", "precision"): 1.0,
        ("a", "recall"): 0.5,
        ("b", "precision"): pytest.approx(2 / 3),
        ("b", "recall"): 1.0,
    }
    table = per_type_summary(pd.DataFrame([{"seed": 0, "method": "SCLD", **r} for r in rows]))
    assert table.loc[("SCLD", "knn"), ("a", "recall")] == 0.5
    assert per_type_summary(pd.DataFrame({"metric": ["recognised"], "value": [1.0]})).empty


def test_latent_spread_changes_only_what_the_diffusion_model_learns():
    from evaluation import latent_spread
    from scld_aug import train

    codes = np.arange(12, dtype=np.float32).reshape(6, 2)
    scales = np.full_like(codes, 0.5)
    with mock.patch.object(train, "encode_cells", lambda *a, **k: (codes, scales)):
        latents, spread = latent_spread.codes_patch("means")()
        assert latents is codes and spread is None
        with pytest.raises(ValueError, match="deterministic encoder"):
            latent_spread.codes_patch("jitter=0.5")()
    with mock.patch.object(train, "encode_cells", lambda *a, **k: (codes, None)):
        latents, spread = latent_spread.codes_patch("jitter=0.5")()
        assert latents is codes
        np.testing.assert_allclose(spread, np.broadcast_to(0.5 * codes.std(0), codes.shape))
    with pytest.raises(ValueError, match="'means' or 'jitter=S'"):
        latent_spread.codes_patch("wide")


def test_fidelity_table_puts_held_out_real_cells_after_the_training_cells():
    """The held-out real cells carry recognition only: their row follows the training
    cells', the other metrics keep their order and are left empty for them."""
    from scld_aug.benchmark.report import fidelity_table

    rows = [
        ("real (train)", "mmd", 0.1),
        ("real (train)", "recognised", 1.0),
        ("SMOTE", "mmd", 0.3),
        ("SMOTE", "recognised", 0.9),
        (REAL_HELD_OUT, "recognised", 0.6),
    ]
    df = pd.DataFrame(rows, columns=["method", "metric", "value"])
    table = fidelity_table(df)
    assert list(table.index) == ["real (train)", REAL_HELD_OUT, "SMOTE"]
    assert list(table.columns) == ["mmd", "recognised"]
    assert table.loc[REAL_HELD_OUT, "recognised"] == 0.6
    assert np.isnan(table.loc[REAL_HELD_OUT, "mmd"])


def test_ablation_held_out_recognition_is_the_judge_on_real_test_cells():
    from evaluation.__main__ import load
    from evaluation.ablation import held_out_recognition, recognition_judge
    from scld_aug.benchmark.protocols import default_downsample_types, downsampled

    X, y = load("pbmc")
    types = default_downsample_types(y)
    train, train_k, test, _ = downsampled(y, 0, 10, types)
    rows = held_out_recognition(X, y, train, train_k, test, types)
    embedding, judge = recognition_judge(X, y, train, train_k)
    assert [row["cell_type"] for row in rows] == list(types)
    for row in rows:
        real = X[test[y[test] == row["cell_type"]]]
        expected = np.mean(judge.predict(embedding.transform(real)) == row["cell_type"])
        assert row["metric"] == "recognised"
        assert row["value"] == pytest.approx(expected)
    # Monocytes' real test cells are partly taken for dendritic cells.
    assert min(row["value"] for row in rows) < 1.0


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_draws_redraws_the_cells_of_one_generator_and_draw_0_is_the_benchmarks(tmp_path):
    """Draw 0 uses the seed (the benchmark's own draw); later draws only change the random
    state of the cells, and the summary's mean of draws is the mean of the per-draw means."""
    from evaluation import ablation, draws
    from evaluation.__main__ import load
    from scld_aug import SCLDSampler
    from scld_aug.benchmark.methods import make_pipeline
    from scld_aug.benchmark.protocols import default_downsample_types, downsampled
    from scld_aug.metrics import downstream_scores
    from scld_aug.params import TRAINING_PARAMS
    from scld_aug.presets import TINY

    X, y = load("pbmc")
    types = default_downsample_types(y)
    _, train_k, test, targets = downsampled(y, 0, 10, types)
    # A tiny network, sampled with the default sampling parameters as the benchmark's SCLD.
    tiny = {name: value for name, value in TINY.items() if name in TRAINING_PARAMS}
    sampler = SCLDSampler(sampling_strategy=targets, random_state=0, **tiny)
    X_bench, y_bench = sampler.fit_resample(X[train_k], y[train_k])
    generator = sampler.generator_
    # What the benchmark's Pipeline draws is what a sampler holding the trained generator
    # draws with the seed as its random state.
    X_again, y_again = ablation.resample(generator, targets, 0, 1, X[train_k], y[train_k])[1:]
    np.testing.assert_array_equal(y_again, y_bench)
    assert (X_again != X_bench).nnz == 0
    generator.save(tmp_path / "pbmc_k10_seed0_tiny.pt")
    out = tmp_path / "draws.csv"
    argv = ["--dataset", "pbmc", "--seeds", "0", "--draws", "2", "--classifiers", "logreg"]
    argv += ["--generators", str(tmp_path), "--variant", "tiny", "--output", str(out)]
    assert draws.main(argv) == 0
    results = pd.read_csv(out)
    assert set(results["method"]) == {"RandomOverSampler", "SMOTE", "SCLD"}
    assert sorted(set(results["draw"])) == [0, 1]
    assert len(results) == 3 * 2 * 2  # methods x draws x (rare-type F1, macro-F1)

    def scld_rare_f1(state):
        X_res, y_res = ablation.resample(generator, targets, state, 1, X[train_k], y[train_k])[1:]
        pipe = make_pipeline(None, "logreg", 0).fit(X_res, y_res)
        return downstream_scores(y[test], pipe.predict(X[test]), rare_classes=types)[
            "rare_macro_f1"
        ]

    scld = results[(results["method"] == "SCLD") & (results["metric"] == "rare_macro_f1")]
    for draw, state in ((0, 0), (1, draws.DRAW_STRIDE)):
        assert scld.loc[scld["draw"] == draw, "value"].item() == pytest.approx(scld_rare_f1(state))
    table = draws.summary(results)
    row = table.loc[("SCLD", "logreg", "rare_macro_f1")]
    assert row["mean of draws"] == pytest.approx(scld["value"].mean(), abs=1e-3)
    assert row["sd over draws"] == pytest.approx(scld["value"].std(), abs=1e-3)
    with pytest.raises(SystemExit):
        draws.main(["--protocol", "natural", "--generators", str(tmp_path), "--output", str(out)])


def test_panel_runs_every_method_resumes_and_reports(tmp_path, monkeypatch):
    from evaluation import panel

    argv = ["--datasets", "pbmc68k_subset", "--protocols", "downsample", "--seeds", "1"]
    argv += ["--draws", "2", "--quick", "--methods", "none", "RandomOverSampler", "SCLD"]
    argv += ["--variants", "guidance_scale=3", "--classifiers", "logreg", "--jobs", "1"]
    argv += ["--output", str(tmp_path)]
    assert panel.main(argv) == 0
    files = sorted(p.name for p in (tmp_path / "units" / "pbmc68k_subset").iterdir())
    assert files == [
        f"downsample_seed0_{m}.csv.gz"
        for m in ("RandomOverSampler", "SCLD", "SCLD_guidance_scale-3", "none", "real_held-out")
    ]
    results = panel.collect(tmp_path)
    scores = results[results["metric"] == "rare_macro_f1"]
    # Two draws of each sampler, one of "none"; the variant draws from the default's generator.
    assert scores.groupby("method")["draw"].nunique().to_dict() == {
        "RandomOverSampler": 2, "SCLD": 2, "SCLD guidance_scale=3": 2, "none": 1,
    }  # fmt: skip
    fits = results[results["metric"] == "fit_seconds"].set_index("method")["value"]
    assert fits["SCLD"] > 0 and fits["SCLD guidance_scale=3"] == 0
    recognised = results[results["metric"] == "recognised"]
    assert {"SCLD", REAL_HELD_OUT} <= set(recognised["method"])
    assert (tmp_path / "summary.md").exists() and (tmp_path / "pbmc68k_subset.md").exists()
    assert "## guidance_scale" in (tmp_path / "lodo.md").read_text()
    # A rerun computes nothing that is saved; --rerun computes one method again.
    monkeypatch.setattr(panel, "run_unit", mock.Mock(side_effect=AssertionError("ran")))
    assert panel.main(argv) == 0
    calls = []
    monkeypatch.setattr(
        panel, "run_unit", lambda unit, settings, methods: calls.append(methods) or {}
    )
    assert panel.main([*argv, "--rerun", "SCLD"]) == 0
    assert calls == [["SCLD"]]


def test_panel_chooses_each_mechanism_without_the_dataset_it_is_judged_on():
    from evaluation import panel

    def rows(dataset, method, values):
        return [
            {"dataset": dataset, "method": method, "metric": "rare_macro_f1", "classifier": c,
             "draw": d, "value": v}
            for d, v in enumerate(values)
            for c in ("logreg", "knn")
        ]  # fmt: skip

    data = []
    # The default (kl_weight=0) wins on a and b, loses clearly on c (beyond its draw noise
    # of ~0.01).
    for dataset, zero, one in (("a", 0.80, 0.70), ("b", 0.60, 0.55), ("c", 0.50, 0.70)):
        data += rows(dataset, "SCLD", [zero, zero + 0.01])
        data += rows(dataset, "SCLD kl_weight=1", [one, one + 0.01])
    results = pd.DataFrame(data)
    options = panel.MECHANISMS["kl_weight"]
    table = panel.option_scores(results, options)
    lodo = panel.leave_one_dataset_out(table, ["0", "1"]).set_index("dataset")
    # Without a, "1" wins on b and c (0.625 against 0.555); without c, "0" wins.
    assert lodo.loc["a", "chosen without it"] == "1"
    assert lodo.loc["c", "chosen without it"] == "0"
    verdict = panel.mechanism_verdict(table, ["0", "1"])
    assert "better on 2 of 3 datasets" in verdict
    assert "worse by more than the draw noise on c ->" in verdict
    assert "does not earn its place" in verdict


def test_panel_acceptance_names_every_row_that_misses_a_bar():
    from evaluation import panel

    def row(dataset, clf, ros, scld, sd=0.01, macro=(0.8, 0.85), gap=0.0, memo=0.9):
        return {
            "dataset": dataset, "protocol": "natural", "classifier": clf, "ROS": ros,
            "SCLD": scld, "SCLD-ROS": scld - ros, "draw_sd": sd, "macro none": macro[0],
            "macro SCLD": macro[1], "worst recognition gap": gap, "memorization": memo,
        }  # fmt: skip

    summary = pd.DataFrame(
        [
            row("a", "logreg", 0.80, 0.796),  # within the draw sd: not a miss
            row("a", "knn", 0.50, 0.70),
            row("b", "logreg", 0.80, 0.74, macro=(0.9, 0.89), gap=-0.06, memo=0.7),
            row("b", "knn", 0.50, 0.60),
            row("b", "random_forest", 0.9, 0.1, macro=(0.9, 0.1), gap=-1, memo=0),  # not judged
        ]
    )
    lines = panel.acceptance(summary).splitlines()
    assert lines[0].endswith("**missed** on b natural logreg")
    assert "knn +0.150 (met)" in lines[1] and "logreg -0.032 (**missed**)" in lines[1]
    assert lines[2].endswith("**missed** on b natural logreg")
    assert lines[3].endswith("**missed** on b natural logreg")
    assert lines[4].endswith("**missed** on b natural logreg")
    assert panel.acceptance(summary[summary["dataset"] == "a"]).count("**missed**") == 1


def test_panel_options_are_compared_on_the_splits_both_ran_on():
    from evaluation import panel

    rows = [
        {"dataset": "a", "protocol": "natural", "seed": seed, "method": method,
         "metric": "rare_macro_f1", "classifier": "logreg", "draw": 0, "value": value}
        for seed in range(5)
        for method, value in (("SCLD", 0.5 + 0.1 * seed), ("SCLD kl_weight=1", 0.6 + 0.1 * seed))
        if method == "SCLD" or seed < 2  # the variant ran on seeds 0 and 1 only
    ]  # fmt: skip
    table = panel.option_scores(pd.DataFrame(rows), panel.MECHANISMS["kl_weight"])
    assert table.loc["a", "0"] == pytest.approx(0.55) and table.loc["a", "1"] == pytest.approx(0.65)
