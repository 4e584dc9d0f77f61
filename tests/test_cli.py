"""``scld-aug augment``: the result on disk, the options, and errors before any training."""

from __future__ import annotations

import contextlib
import io

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scld_aug import SCLDSampler
from scld_aug.apps.augment import AugmentError, plan_augmentation
from scld_aug.apps.cli import main
from tests.conftest import make_counts

# 658 cells: type3 (6 cells) is the only type under 2% with at least 3 cells; type4 (2 cells)
# is too small to augment. The median type size, the default target, is 100.
SIZES = (400, 150, 100, 6, 2)
# A tiny model for the command line (--quick plus fewer steps): a few seconds per run.
FAST = [
    "--quick",
    "--autoencoder-steps",
    "20",
    "--diffusion-steps",
    "20",
    "--classifier-steps",
    "5",
    "--sampling-steps",
    "3",
    "--device",
    "cpu",
]


def _write_input(path, counts_layer: bool = False):
    X, y = make_counts(sizes=SIZES, n_genes=200, seed=1)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(y),
            "donor": ["d1"] * len(y),
            "passed_qc": np.ones(len(y), bool),
            "n_genes": (X > 0).sum(1),
        },
        index=[f"cell{i}" for i in range(len(y))],
    )
    var = pd.DataFrame(index=[f"gene{j}" for j in range(X.shape[1])])
    if counts_layer:
        log_norm = np.log1p(X / X.sum(1, keepdims=True) * 1e4).astype(np.float32)
        adata = anndata.AnnData(X=log_norm, obs=obs, var=var, layers={"counts": sp.csr_matrix(X)})
    else:
        adata = anndata.AnnData(X=sp.csr_matrix(X.astype(np.float32)), obs=obs, var=var)
    adata.write_h5ad(path)
    return adata


@pytest.fixture
def no_training(monkeypatch):
    """Make any training attempt fail loudly: errors must come before it."""

    def refuse(self, X, y):
        raise AssertionError("training started before the error was detected")

    monkeypatch.setattr(SCLDSampler, "_ensure_generator", refuse)


@pytest.fixture(scope="module")
def counts_run(tmp_path_factory):
    """One run on counts in X with the default (rare-type) choice; shared by several tests."""
    folder = tmp_path_factory.mktemp("counts_in_x")
    source, output = folder / "in.h5ad", folder / "out.h5ad"
    original = _write_input(source)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["augment", str(source), str(output), *FAST])
    return status, stdout.getvalue(), original, output


def test_augment_writes_original_then_synthetic_cells(counts_run):
    status, _, original, output = counts_run
    assert status == 0
    result = anndata.read_h5ad(output)
    n = original.n_obs
    assert result.obs["is_synthetic"].dtype == bool
    assert not result.obs["is_synthetic"].iloc[:n].any()
    assert result.obs["is_synthetic"].iloc[n:].all()
    # Original cells: same names, obs and expression.
    assert (result.obs_names[:n] == original.obs_names).all()
    pd.testing.assert_frame_equal(
        result.obs.iloc[:n].drop(columns="is_synthetic"), original.obs, check_dtype=False
    )
    assert (result.X[:n] != original.X).nnz == 0
    assert (result.var_names == original.var_names).all()
    synthetic = result.X[n:].toarray()
    assert (synthetic >= 0).all() and (synthetic == np.round(synthetic)).all()
    assert (synthetic.sum(1) > 0).all()


def test_augment_raises_rare_types_to_the_median(counts_run):
    _, _, original, output = counts_run
    result = anndata.read_h5ad(output)
    after = result.obs["cell_type"].value_counts()
    synthetic = result.obs.loc[result.obs["is_synthetic"], "cell_type"].value_counts()
    assert after["type3"] == 100  # the median type size
    assert synthetic[synthetic > 0].index.tolist() == ["type3"]
    assert after["type4"] == 2  # too few cells: left as it was
    # Synthetic cells get what every real cell of their type shares (one donor, all passed
    # QC) and missing values where the type's cells differ; the columns stay writable.
    new = result.obs.iloc[original.n_obs :]
    assert result.obs["passed_qc"].iloc[: original.n_obs].all()
    assert new["passed_qc"].all() and (new["donor"] == "d1").all()
    assert new["n_genes"].isna().all() and str(result.obs["n_genes"].dtype).startswith("Int")


def test_augment_prints_a_table_and_the_output_path(counts_run):
    _, stdout, _, output = counts_run
    assert "before" in stdout and "synthetic" in stdout and "after" in stdout
    row = next(line for line in stdout.splitlines() if line.startswith("type3"))
    assert row.split()[1:] == ["6", "94", "100"]
    assert "type4 (2)" in stdout  # said to be too small
    assert f"Wrote {output}" in stdout and "is_synthetic" in stdout


def test_augment_counts_layer_named_types_target_and_saved_sampler(tmp_path, capsys):
    source, output = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    saved = tmp_path / "model.scld"
    original = _write_input(source, counts_layer=True)
    argv = ["augment", str(source), str(output), "--layer", "counts"]
    argv += ["--types", "type2", "type3", "--target", "120", "--save-sampler", str(saved)]
    assert main(argv + [*FAST, "--quiet"]) == 0
    assert capsys.readouterr().out == ""  # --quiet: nothing but errors
    result = anndata.read_h5ad(output)
    counts = result.layers["counts"]
    assert (counts[: original.n_obs] != original.layers["counts"]).nnz == 0
    synthetic = counts[original.n_obs :].toarray()
    assert (synthetic >= 0).all() and (synthetic == np.round(synthetic)).all()
    after = result.obs["cell_type"].value_counts()
    assert after["type2"] == 120 and after["type3"] == 120 and after["type0"] == 400
    sampler = SCLDSampler.load(saved, device="cpu")
    assert sampler.generate(4, "type3").shape == (4, 200)


def test_plan_matches_types_as_text_and_keeps_label_types():
    y = np.array([0] * 300 + [1] * 100 + [2] * 50 + [3] * 5)
    assert plan_augmentation(y) == {3: 75}  # median of 300, 100, 50, 5
    assert plan_augmentation(y, cell_types=["2", "3"], target=60) == {2: 60, 3: 60}
    with pytest.raises(AugmentError, match="Nothing to add: '1' already has 100 cells"):
        plan_augmentation(y, cell_types=["1"], target=60)


def _run_failing(argv, capsys):
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 1
    # Progress bars may come first; the error is the last line, without a traceback.
    assert err.splitlines()[-1].startswith("scld-aug augment: error: ")
    assert "Traceback" not in err
    return err


@pytest.mark.usefixtures("no_training")
@pytest.mark.parametrize(
    "extra, expected",
    [
        (
            ["--labels-key", "celltype"],
            "Labels key 'celltype' is not a column of obs; pass --labels-key with one of "
            "['cell_type', 'donor', 'passed_qc', 'n_genes']",
        ),
        (
            ["--types", "type3", "Type3", "mast"],
            "Unknown cell type(s) ['Type3', 'mast']. Available types (cells): type0 (400), "
            "type1 (150), type2 (100), type3 (6), type4 (2).",
        ),
        (["--types", "type4"], "'type4' has 2; a type needs at least 3 cells"),
        (["--layer", "raw"], "Layer 'raw' not found; the file has no layers."),
        (["--target", "3"], "No rare cell type to augment"),
    ],
)
def test_user_errors_are_reported_before_training(tmp_path, capsys, extra, expected):
    source, output = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    _write_input(source)
    err = _run_failing(["augment", str(source), str(output), *extra], capsys)
    assert expected in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad"]


@pytest.mark.usefixtures("no_training")
def test_normalized_x_without_layer_points_to_the_counts_layer(tmp_path, capsys):
    source, output = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    _write_input(source, counts_layer=True)
    err = _run_failing(["augment", str(source), str(output)], capsys)
    assert "X does not hold raw counts" in err
    assert "pass --layer counts" in err and "--likelihood gaussian" in err
    assert not output.exists()


@pytest.mark.usefixtures("no_training")
def test_path_errors(tmp_path, capsys):
    source, output = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    _write_input(source)
    err = _run_failing(["augment", str(tmp_path / "missing.h5ad"), str(output)], capsys)
    assert "missing.h5ad' does not exist" in err
    err = _run_failing(["augment", str(source), str(source), "--overwrite"], capsys)
    assert "is the input file" in err
    output.write_bytes(b"previous result")
    err = _run_failing(["augment", str(source), str(output)], capsys)
    assert "already exists; pass --overwrite" in err
    assert output.read_bytes() == b"previous result"


def test_failure_while_writing_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    source, output = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    _write_input(source)
    output.write_bytes(b"previous result")

    def broken_write(self, filename, **kwargs):
        with open(filename, "wb") as f:
            f.write(b"half an h5ad file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(anndata.AnnData, "write_h5ad", broken_write)
    err = _run_failing(["augment", str(source), str(output), *FAST, "--overwrite"], capsys)
    assert "No space left on device" in err and "no partial file was left" in err
    # The previous output is untouched and no temporary file is left behind.
    assert output.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad", "out.h5ad"]


def test_demo_subcommand_is_kept(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    assert "--quick" in capsys.readouterr().out


@pytest.mark.usefixtures("no_training")
@pytest.mark.parametrize(
    "extra, expected",
    [
        (
            ["--guidance-scale", "inf"],
            "--guidance-scale: expected a float in the range [0.0, inf), got inf",
        ),
        (["--guidance-scale", "nan"], "expected a float in the range [0.0, inf), got nan"),
        (["--guidance-scale", "x"], "--guidance-scale: expected a number, got 'x'"),
        (["--kl-weight", "auto"], "--kl-weight: expected a number, got 'auto'"),
        (["--target", "0"], "--target: expected a positive number, got 0"),
        (["--sampling-steps", "5000"], "expected an int in the range [1, 1000], got 5000"),
        (
            ["--class-balance", "2"],
            "--class-balance: expected a float in the range [0.0, 1.0], got 2",
        ),
        (["--likelihood", "poisson"], "--likelihood: expected a str among"),
        (["--seed", "x"], "--seed: invalid int value: 'x'"),
    ],
)
def test_invalid_options_print_one_line_and_exit_2(tmp_path, capsys, extra, expected):
    source, output = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    _write_input(source)
    try:
        code = main(["augment", str(source), str(output), *extra])
    except SystemExit as exit_info:  # argparse's own checks
        code = exit_info.code
    assert code == 2
    err = capsys.readouterr().err
    assert expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not output.exists()


@pytest.mark.usefixtures("no_training")
def test_a_target_that_cannot_fit_in_memory_is_refused_before_training(tmp_path, capsys):
    source, output = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    _write_input(source)
    err = _run_failing(["augment", str(source), str(output), "--target", "1000000000"], capsys)
    assert "Generating 999,999,994 synthetic cells needs about" in err and "fewer" in err
    assert len(err.strip().splitlines()) == 1
    assert not output.exists()


def test_version_and_overview_help_answer_without_loading_torch():
    import subprocess
    import sys

    from scld_aug import __version__

    code = (
        "import sys; from scld_aug.apps.cli import main\n"
        "try: main(sys.argv[1:])\n"
        "except SystemExit: pass\n"
        "heavy = [m for m in ('torch', 'sklearn', 'anndata') if m in sys.modules]\n"
        "print('loaded:', heavy)"
    )
    for flag in ("--version", "--help"):
        out = subprocess.run(
            [sys.executable, "-c", code, flag], capture_output=True, text=True, check=True
        ).stdout
        assert "loaded: []" in out, out
    version = subprocess.run(
        [sys.executable, "-m", "scld_aug", "--version"], capture_output=True, text=True
    )
    assert version.stdout.strip() == f"scld-aug {__version__}"


def test_augment_with_a_pretrained_generator_trains_nothing(tmp_path, capsys, monkeypatch):
    import scld_aug.train

    source, generator = tmp_path / "in.h5ad", tmp_path / "g.pt"
    original = _write_input(source)
    training = [a for a in FAST if a not in ("--sampling-steps", "3")]  # train: no sampling
    assert main(["train", str(source), str(generator), *training, "--quiet"]) == 0
    monkeypatch.setattr(
        scld_aug.train, "fit_generator", lambda *a, **k: pytest.fail("trained again")
    )
    output = tmp_path / "out.h5ad"
    argv = ["augment", str(source), str(output), "--generator", str(generator), "--quiet"]
    assert main([*argv, "--n-sampling-steps", "3", "--device", "cpu"]) == 0
    result = anndata.read_h5ad(output)
    assert result.n_obs > original.n_obs and result.obs["is_synthetic"].sum() > 0
    # A generator file that is not there: an error naming it, before anything is read.
    missing = tmp_path / "missing.pt"
    capsys.readouterr()
    argv = ["augment", str(source), str(tmp_path / "o2.h5ad"), "--generator", str(missing)]
    assert main(argv) == 1
    assert "missing.pt" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_tune_runs_a_study_tracks_it_and_saves_the_tuned_sampler(tmp_path, capsys):
    source, saved = tmp_path / "in.h5ad", tmp_path / "tuned.scld"
    _write_input(source)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    argv = ["tune", str(source), "--n-trials", "2", "--cv", "2", *FAST]
    argv += ["--tracking", uri, "--save-sampler", str(saved), "--output-dir", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Best f1_macro: " in out and "(defaults: " in out
    assert "2 trials, 3 generator trainings" in out  # the defaults are trial 0; 2 folds + refit
    assert "MLflow run " in out and (tmp_path / "store" / "mlflow_artifacts").is_dir()
    import mlflow

    study_run = mlflow.MlflowClient(uri).get_run(out.split("MLflow run ")[1].split()[0])
    assert study_run.data.tags["scld_aug.model_uri"].startswith("models:/")  # the tuned one
    assert (tmp_path / "trials.csv").exists()
    tuned = SCLDSampler.load(saved)
    assert tuned.sampling_strategy == {"type3": 100}  # the rare type, to the median
    # An existing output is not replaced by mistake, and bad input is one clear line.
    assert main(argv) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["tune", str(tmp_path / "missing.h5ad"), *FAST]) == 1
    assert "missing.h5ad' does not exist" in capsys.readouterr().err


BENCH = ["--protocols", "natural", "downsample", "--classifiers", "logreg", "--k", "5"]
BENCH += ["--methods", "none", "SMOTE", "SCLD", "--seeds", "2", "--types", "type2"]


def test_benchmark_runs_the_protocols_on_a_users_file_and_keeps_its_results(tmp_path, capsys):
    source, out = tmp_path / "in.h5ad", tmp_path / "bench"
    _write_input(source, counts_layer=True)
    argv = ["benchmark", str(source), "--layer", "counts", "--output-dir", str(out), *BENCH, *FAST]
    assert main(argv) == 0
    assert f"Report: {out / 'report.md'}" in capsys.readouterr().out
    rows = pd.read_csv(out / "results_downstream.csv")
    assert set(rows["protocol"]) == {"natural", "downsample"}
    assert set(rows["method"]) == {"none", "SMOTE", "SCLD"} and set(rows["seed"]) == {0, 1}
    rare = rows[(rows["metric"] == "rare_macro_f1") & (rows["protocol"] == "downsample")]
    assert len(rare) == 6 and rare["value"].between(0, 1).all()
    report = (out / "report.md").read_text()
    assert "# Benchmark: in" in report and "scld-aug benchmark" in report
    assert (out / "rare_f1_downsample_k5.png").stat().st_size > 0
    # A second run does not replace the results by mistake...
    saved = (out / "results_downstream.csv").read_bytes()
    assert main(argv) == 1
    assert "already holds benchmark results" in capsys.readouterr().err
    assert (out / "results_downstream.csv").read_bytes() == saved
    # ...and the report can be rebuilt from them without running anything.
    (out / "report.md").unlink()
    # (--output, the option's former name, still works and says what it is called now.)
    assert main(["benchmark", str(source), "--output", str(out), "--report-only"]) == 0
    assert (out / "report.md").read_text() == report
    assert "--output is now --output-dir" in capsys.readouterr().err


@pytest.fixture
def no_benchmark_runs(monkeypatch):
    """Make any protocol run fail loudly: errors must come before the first method."""
    from scld_aug.benchmark import protocols

    def refuse(*args, **kwargs):
        raise AssertionError("a protocol ran before the error was detected")

    for name in ("natural_imbalance", "rare_downsampling", "fidelity"):
        monkeypatch.setattr(protocols, name, refuse)


@pytest.mark.usefixtures("no_benchmark_runs")
@pytest.mark.parametrize(
    "extra, status, expected",
    [
        (["--methods", "SMOTE", "CTGAN"], 1, "Unknown method(s) ['CTGAN']; choose from"),
        (["--methods", "SCLD w=-1"], 2, "'guidance_scale' parameter of SCLDSampler must be"),
        (["--methods", "SCLD guidance=3"], 1, "use key=value with keys"),
        (["--types", "type9"], 1, "Type(s) ['type9'] to downsample are not among the labels"),
        (["--layer", "raw"], 1, "Layer 'raw' not found"),
        (
            [],
            1,
            "X does not hold raw counts: it has the value 4.406945, which is not a whole number "
            "(normalized or scaled data?). SCLD models raw UMI counts; pass --layer counts "
            "(layers with counts: ['counts']).",
        ),
        (["--likelihood", "gaussian"], 1, "X does not hold raw counts"),
    ],
)
def test_benchmark_input_errors_come_before_any_run(tmp_path, capsys, extra, status, expected):
    source, out = tmp_path / "in.h5ad", tmp_path / "bench"
    _write_input(source, counts_layer=True)
    in_x = not extra or extra[0] in ("--layer", "--likelihood")  # X is log-normalized
    layer = [] if in_x else ["--layer", "counts"]
    assert main(["benchmark", str(source), "--output-dir", str(out), *layer, *extra]) == status
    err = capsys.readouterr().err
    assert err.startswith("scld-aug benchmark: error: ") and expected in err, err
    assert not out.exists()


@pytest.mark.usefixtures("no_benchmark_runs")
def test_benchmark_says_which_extras_to_install_before_running(tmp_path, capsys, monkeypatch):
    from scld_aug.benchmark import run

    monkeypatch.setattr(run, "_installed", lambda module: module not in {"tabulate", "scvi"})
    source = tmp_path / "in.h5ad"
    _write_input(source, counts_layer=True)
    argv = ["benchmark", str(source), "--layer", "counts", "--output-dir", str(tmp_path / "b")]
    assert main([*argv, "--methods", "none", "scVI"]) == 1
    err = capsys.readouterr().err
    assert "needs tabulate, scvi-tools: pip install 'scld-aug[benchmark]' and " in err, err
    assert "'scld-aug[scvi]', or leave scVI out of the methods." in err
    # Only what is missing is named.
    monkeypatch.setattr(run, "_installed", lambda module: module != "scvi")
    assert main([*argv, "--methods", "none", "scVI"]) == 1
    err = capsys.readouterr().err
    assert "needs scvi-tools: pip install 'scld-aug[scvi]', or leave scVI out" in err, err


def test_interrupted_benchmark_says_nothing_was_written(tmp_path, capsys, monkeypatch):
    from scld_aug.benchmark import protocols

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(protocols, "natural_imbalance", interrupt)
    source = tmp_path / "in.h5ad"
    _write_input(source, counts_layer=True)
    argv = ["benchmark", str(source), "--layer", "counts", "--output-dir", str(tmp_path / "b")]
    assert main([*argv, "--protocols", "natural"]) == 130
    assert "interrupted; no output was written" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["demo", "augment", "train", "tune", "benchmark"])
def test_every_command_takes_quiet_and_verbose_but_not_both(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "-q, --quiet" in text and "-v, --verbose" in text
    argv = [command] + ([] if command == "demo" else ["in.h5ad"])
    argv += [] if command in ("demo", "tune", "benchmark") else ["out.h5ad"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "-q", "-v"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_verbose_shows_the_training_losses_along_the_way(tmp_path, capsys):
    source, output = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    _write_input(source)
    argv = ["augment", str(source), str(output), *FAST, "--autoencoder-steps", "500", "-v"]
    assert main(argv) == 0
    assert "autoencoder step 500/500: loss" in capsys.readouterr().out
