"""Files on disk: nothing overwritten by mistake, nothing half-written, nothing stale served,
nothing unsafe loaded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from scld_aug import SCLDGenerator, SCLDSampler
from scld_aug.apps.cli import main
from scld_aug.files import (
    TMP_SUFFIX,
    OutputConflictError,
    OutputPathError,
    atomic_write,
    check_output_path,
    sweep_stale,
)
from tests.test_cli import FAST, _write_input

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def data(counts_data):
    X, y = counts_data
    return X.copy(), y.copy()


@pytest.fixture
def fitted(data, tiny_params):
    X, y = data
    return SCLDSampler(random_state=0, **tiny_params).fit(X, y)


# --------------------------------------------------------------------------- output paths


@pytest.mark.parametrize("how", ["same", "symlink", "dotdot", "hardlink"])
@pytest.mark.parametrize("command", ["augment", "train"])
def test_output_that_is_the_input_is_refused_before_training(
    tmp_path, capsys, count_trainings, how, command
):
    source = tmp_path / "in.h5ad"
    _write_input(source)
    before = source.read_bytes()
    (tmp_path / "sub").mkdir()
    if how == "same":
        target = source
    elif how == "symlink":
        target = tmp_path / "link.h5ad"
        target.symlink_to(source)
    elif how == "dotdot":
        target = tmp_path / "sub" / ".." / "in.h5ad"
    else:
        target = tmp_path / "hard.h5ad"
        os.link(source, target)
    args = [command, str(source), str(target), "--overwrite"]
    args += FAST if command == "augment" else ["--quick", "--device", "cpu"]
    assert main(args) == 1
    assert "is the input file" in capsys.readouterr().err
    assert count_trainings == []
    assert source.read_bytes() == before


@pytest.mark.parametrize("command", ["augment", "train"])
def test_unwritable_or_directory_outputs_are_refused_before_training(
    tmp_path, capsys, count_trainings, monkeypatch, command
):
    source = tmp_path / "in.h5ad"
    _write_input(source)
    extra = FAST if command == "augment" else ["--quick", "--device", "cpu"]
    assert main([command, str(source), str(tmp_path)] + extra) == 1
    assert "is a directory" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # A folder without write permission (simulated: these tests may run as root).
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    assert main([command, str(source), str(locked / "sub" / "out")] + extra) == 1
    assert f"no write permission in the folder '{locked}'" in capsys.readouterr().err
    monkeypatch.undo()
    (tmp_path / "exists.pt").write_text("keep me")
    assert main([command, str(source), str(tmp_path / "exists.pt")] + extra) == 1
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "exists.pt").read_text() == "keep me"
    assert count_trainings == []


def test_pretrain_checks_its_output_before_training(data, tmp_path, count_trainings):
    from scld_aug.files import OutputPathError
    from scld_aug.pretrain import pretrain

    source = tmp_path / "in.h5ad"
    _write_input(source)
    with pytest.raises(OutputPathError, match="is the input file"):
        pretrain(source, out=source, overwrite=True)
    (tmp_path / "old.pt").write_text("keep me")
    with pytest.raises(OutputPathError, match="already exists"):
        pretrain(source, out=tmp_path / "old.pt")
    assert count_trainings == []


def test_check_output_path_allows_new_files_in_new_folders(tmp_path):
    assert check_output_path(tmp_path / "a" / "b" / "out.h5ad") == tmp_path / "a/b/out.h5ad"


# --------------------------------------------------------------------------- atomic writes


def test_failed_write_leaves_neither_a_partial_nor_a_temporary_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_text("old")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_saved_files_get_the_umask_in_force_at_save_time(fitted, tmp_path):
    for umask, mode in ((0o077, 0o600), (0o002, 0o664)):
        previous = os.umask(umask)
        try:
            fitted.save(tmp_path / f"{umask:o}.scld")
        finally:
            os.umask(previous)
        assert (tmp_path / f"{umask:o}.scld").stat().st_mode & 0o777 == mode


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from scld_aug.files import atomic_write

    def slow(tmp):
        tmp.write_bytes(b"x" * 1_000_000)
        print("writing", flush=True)
        time.sleep(60)

    atomic_write(Path(sys.argv[1]), slow)
    """
)


def _start_writer(target: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert process.stdout.readline().strip() == "writing"
    return process


def test_sigterm_during_a_write_removes_the_temporary_file(tmp_path):
    target = tmp_path / "out.bin"
    process = _start_writer(target)
    assert len(list(tmp_path.iterdir())) == 1  # the hidden temporary file
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == -signal.SIGTERM  # still dies by SIGTERM
    assert list(tmp_path.iterdir()) == []


def test_leftover_of_a_killed_writer_is_swept_by_the_next_write(tmp_path):
    target = tmp_path / "out.bin"
    process = _start_writer(target)
    process.kill()
    process.wait(timeout=30)
    (leftover,) = tmp_path.iterdir()
    assert leftover.stat().st_size == 1_000_000
    # Not ours (another naming pattern), and a live writer's: both left alone.
    foreign = tmp_path / ".out.bin.something.tmp"
    foreign.write_text("")
    live = _start_writer(target)
    try:
        atomic_write(target, lambda tmp: tmp.write_text("new"))
        names = sorted(p.name for p in tmp_path.iterdir())
        assert leftover.name not in names
        assert foreign.name in names and "out.bin" in names
        assert len(names) == 3  # out.bin, the foreign file, the live writer's file
    finally:
        live.kill()
        live.wait(timeout=30)
    assert target.read_text() == "new"
    assert sweep_stale(target) != []  # the second writer, now dead


def test_interrupt_after_the_output_exists_says_what_was_written(tmp_path, capsys, monkeypatch):
    import scld_aug.apps.augment as augment
    from scld_aug import SCLDSampler as Sampler

    source, target, saved = tmp_path / "in.h5ad", tmp_path / "out.h5ad", tmp_path / "s.scld"
    _write_input(source)

    def interrupted_save(self, path, include_anchors, overwrite):
        raise KeyboardInterrupt

    monkeypatch.setattr(Sampler, "_write", interrupted_save)
    code = main(["augment", str(source), str(target), "--save-sampler", str(saved)] + FAST)
    assert code == 130
    err = capsys.readouterr().err
    assert f"interrupted after writing {target}" in err and "no output was written" not in err
    assert f"{saved} was not written" in err
    assert target.exists() and not saved.exists()

    def interrupted_fit(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(augment.anndata_io, "write", lambda *a, **k: interrupted_fit())
    assert main(["augment", str(source), str(target), "--overwrite"] + FAST) == 130
    assert "no output was written (existing files are unchanged)" in capsys.readouterr().err


# --------------------------------------------------------------------------- the memory= cache


def _cache_files(folder: Path) -> list[Path]:
    return sorted((folder / "scld_aug").glob("generator-*.pt"))


@pytest.mark.parametrize("damage", ["empty", "truncated", "random"])
def test_unreadable_cache_entry_is_reported_retrained_and_replaced(
    data, tiny_params, tmp_path, count_trainings, damage
):
    X, y = data
    sampler = SCLDSampler(random_state=0, memory=tmp_path, **tiny_params)
    expected = sampler.fit_resample(X, y)[0]
    (entry,) = _cache_files(tmp_path)
    content = entry.read_bytes()
    entry.write_bytes(
        {"empty": b"", "truncated": content[: len(content) // 2], "random": os.urandom(4096)}[
            damage
        ]
    )
    with pytest.warns(UserWarning, match=f"cached generator {entry}.*training again"):
        again = SCLDSampler(random_state=0, memory=tmp_path, **tiny_params)
        result = again.fit_resample(X, y)[0]
    assert again.generator_source_ == "trained" and len(count_trainings) == 2
    np.testing.assert_array_equal(result, expected)
    third = SCLDSampler(random_state=0, memory=tmp_path, **tiny_params).fit(X, y)
    assert third.generator_source_ == "memory"


def test_cache_keys_labels_with_their_types(data, tiny_params, tmp_path, count_trainings):
    X, y = data
    codes = np.unique(y, return_inverse=True)[1]
    as_int = codes + 1
    as_text = np.array([str(c) for c in as_int])
    first = SCLDSampler(random_state=0, memory=tmp_path, **tiny_params).fit(X, as_int)
    second = SCLDSampler(random_state=0, memory=tmp_path, **tiny_params).fit(X, as_text)
    assert first.generator_source_ == second.generator_source_ == "trained"
    assert first.generator_.classes.dtype.kind == "i"
    assert second.generator_.classes.dtype.kind == "U"
    assert len(_cache_files(tmp_path)) == 2


@pytest.mark.parametrize("seed", [None, "RandomState"])
def test_unseeded_fits_are_never_cached(data, tiny_params, tmp_path, count_trainings, seed):
    X, y = data

    def make():
        state = np.random.RandomState(1) if seed == "RandomState" else None
        return SCLDSampler(random_state=state, memory=tmp_path, **tiny_params)

    with pytest.warns(UserWarning, match="memory=.*is not used.*not an int"):
        make().fit(X, y)
        second = make().fit(X, y)
    assert second.generator_source_ == "trained" and len(count_trainings) == 2
    assert _cache_files(tmp_path) == []


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("damage", ["empty", "truncated", "random", "directory"])
@pytest.mark.parametrize("kind", ["sampler", "generator"])
def test_unreadable_files_name_the_path_and_format(fitted, tmp_path, damage, kind):
    path = tmp_path / "model.pt"
    (fitted.save if kind == "sampler" else fitted.generator_.save)(path)
    content = path.read_bytes()
    if damage == "directory":
        path.unlink()
        path.mkdir()
    else:
        path.write_bytes(
            {"empty": b"", "truncated": content[:1000], "random": os.urandom(5000)}[damage]
        )
    load = SCLDSampler.load if kind == "sampler" else SCLDGenerator.load
    expected = "SCLDSampler" if kind == "sampler" else "SCLD generator"
    with pytest.raises(ValueError, match=expected) as caught:
        load(path)
    message = str(caught.value)
    assert str(path) in message and "weights_only" not in message
    assert caught.value.__cause__ is None


def _tampered(path: Path, edit) -> Path:
    state = torch.load(path, weights_only=True)
    generator = state["generator"]
    meta = json.loads(generator["meta"])
    edit(meta, generator)
    generator["meta"] = json.dumps(meta)
    out = path.with_name("tampered.pt")
    torch.save(state, out)
    return out


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m, g: m["config"].update(hidden_dim=10**7), "hidden_dim"),
        (lambda m, g: m["config"].update(latent_dim=10**9), "latent_dim"),
        (lambda m, g: m["config"].update(n_blocks=10**9), "n_blocks"),
        (lambda m, g: m["config"].update(hidden_dim=64), "do not match"),
        (lambda m, g: m["config"].update(num_train_timesteps=10**12), "num_train_timesteps"),
        (lambda m, g: m.update(n_genes=10**12), "gene panel"),
        (lambda m, g: m.update(classes=m["classes"] + ["extra"]), "match"),
        (lambda m, g: g["libraries"].pop(), "classes"),
        (lambda m, g: g["panel"].update(rest_overdispersion=torch.ones(3)), "overdispersion"),
        (
            lambda m, g: g["panel"].update(rest_overdispersion=-g["panel"]["rest"].double()),
            "overdispersion",
        ),
    ],
)
def test_crafted_metadata_is_refused_before_allocating(fitted, tmp_path, edit, message):
    path = tmp_path / "generator.pt"
    fitted.generator_.save(path)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        SCLDGenerator.load(_tampered(path, edit))
    assert time.perf_counter() - start < 5


def test_overdispersion_of_the_other_genes_is_saved_and_older_files_draw_poisson(
    fitted, data, tmp_path
):
    """The panel's overdispersion of the genes outside it survives save and load; a file
    written before it existed (no such entry) loads, and draws those genes as Poisson."""
    generator = fitted.generator_
    spread = generator.panel.rest_overdispersion
    assert len(generator.panel.rest) and spread.shape == generator.panel.rest.shape
    assert (spread > 0).any()
    path = tmp_path / "generator.pt"
    generator.save(path)
    np.testing.assert_array_equal(SCLDGenerator.load(path).panel.rest_overdispersion, spread)
    older = _tampered(path, lambda m, g: g["panel"].pop("rest_overdispersion"))
    loaded = SCLDGenerator.load(older)
    assert loaded.panel.rest_overdispersion.shape == (0,)
    sampler = SCLDSampler(generator=loaded, random_state=0).fit(*data)
    cells = sampler.generate(20, loaded.classes[0])
    assert cells.shape == (20, generator.n_genes) and np.isfinite(cells.data).all()


# --------------------------------------------------------------------------- sharing


def test_generator_saved_without_training_cells(fitted, data, tmp_path):
    X, y = data
    fitted.generator_.save(tmp_path / "full.pt")
    fitted.generator_.save(tmp_path / "shared.pt", include_anchors=False)
    shared = torch.load(tmp_path / "shared.pt", weights_only=True)["generator"]
    assert "anchors" not in shared
    n_per_class = np.bincount(np.unique(y, return_inverse=True)[1])
    assert [len(lib) for lib in shared["libraries"]] == [100] * len(n_per_class)
    assert json.loads(shared["meta"])["training_cells_included"] is False
    codes = np.unique(y, return_inverse=True)[1]
    library = X.sum(1).astype(np.float64)
    for c, lib in enumerate(shared["libraries"]):
        quantiles = np.quantile(library[codes == c], (np.arange(100) + 0.5) / 100)
        np.testing.assert_allclose(lib.numpy(), quantiles)
    sampler = SCLDSampler(generator=tmp_path / "shared.pt", random_state=0, n_sampling_steps=5)
    X_res, _ = sampler.fit_resample(X, y)
    assert X_res.shape[0] > X.shape[0]
    with pytest.raises(ValueError, match="saved without the latent codes"):
        sampler.set_params(anchor_strength=0.5).fit_resample(X, y)
    fitted.save(tmp_path / "sampler.scld", include_anchors=False)
    assert SCLDSampler.load(tmp_path / "sampler.scld").generator_.anchors is None


def test_train_command_without_anchors(tmp_path):
    source = tmp_path / "in.h5ad"
    _write_input(source)
    args = ["train", str(source), str(tmp_path / "g.pt"), "--quick", "--no-anchors"]
    args += ["--autoencoder-steps", "5", "--diffusion-steps", "5", "--classifier-steps", "5"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(args + ["--quiet", "--device", "cpu"]) == 0
    assert SCLDGenerator.load(tmp_path / "g.pt").anchors is None


# --------------------------------------------------------------------------- benchmarks


def test_perf_benchmark_writes_its_data_to_a_private_folder(tmp_path, monkeypatch):
    from evaluation import perf

    seen = []
    monkeypatch.setattr(perf, "_scaling", lambda args, folder: seen.append(folder))
    shared_tmp = tmp_path / "shared"
    shared_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(shared_tmp))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    planted = shared_tmp / "scld_perf_data"
    planted.symlink_to(tmp_path)  # the old fixed location, planted by someone else
    perf.main(["--cells", "100"])
    (folder,) = seen
    assert folder.parent == shared_tmp and folder.name.startswith("scld_perf_")
    assert folder != planted and not folder.exists()  # removed at the end


# --------------------------------------------------------------------------- one rule for every file


def test_a_file_that_appears_during_the_write_is_kept_and_so_is_the_result(tmp_path):
    target = tmp_path / "out.csv"

    def write(tmp: Path) -> None:
        tmp.write_text("result")
        target.write_text("someone else's")  # appears after the caller checked the path

    with pytest.raises(OutputConflictError) as caught:
        atomic_write(target, write)
    assert target.read_text() == "someone else's"
    assert caught.value.kept == tmp_path / "out.1.csv"
    assert caught.value.kept.read_text() == "result"
    assert "appeared while scld-aug was working" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.1.csv", "out.csv"]
    # With overwrite the result replaces it; a cache entry written twice keeps the first.
    atomic_write(target, lambda tmp: tmp.write_text("mine"), overwrite=True)
    assert target.read_text() == "mine"
    atomic_write(target, lambda tmp: tmp.write_text("same"), duplicate_ok=True)
    assert target.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.1.csv", "out.csv"]


def test_write_errors_name_the_target_and_its_folder_not_the_temporary_file(tmp_path):
    def fail(tmp: Path) -> None:
        raise PermissionError(13, "Permission denied", str(tmp))

    with pytest.raises(PermissionError) as caught:
        atomic_write(tmp_path / "model.scld", fail, what="sampler")
    message = str(caught.value)
    assert f"sampler file '{tmp_path / 'model.scld'}' in the folder '{tmp_path}'" in message
    assert ".scld-" not in message and TMP_SUFFIX not in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["sampler", "generator"])
def test_saving_never_replaces_a_file_by_mistake(fitted, tmp_path, kind):
    path = tmp_path / "model.pt"
    save = fitted.save if kind == "sampler" else fitted.generator_.save
    save(path)
    first = path.read_bytes()
    with pytest.raises(OutputPathError, match="already exists; pass --overwrite"):
        save(path)
    assert path.read_bytes() == first
    save(path, overwrite=True)
    assert path.is_file()


def test_a_sampler_is_not_saved_over_its_pretrained_generator(fitted, data, tmp_path):
    X, y = data
    source = tmp_path / "pretrained.pt"
    fitted.generator_.save(source)
    before = source.read_bytes()
    sampler = SCLDSampler(generator=str(source), sampling_strategy={"type2": 20}).fit(X, y)
    with pytest.raises(OutputPathError, match="is the input file"):
        sampler.save(source, overwrite=True)
    assert source.read_bytes() == before


def _racing_output(monkeypatch, path: Path, content: bytes = b"someone else's") -> None:
    """Make ``path`` appear while the sampler trains (another process, a second run)."""
    original = SCLDSampler._ensure_generator

    def ensure_generator(self, *args, **kwargs):
        original(self, *args, **kwargs)
        path.write_bytes(content)

    monkeypatch.setattr(SCLDSampler, "_ensure_generator", ensure_generator)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("which", ["output", "--save-sampler"])
def test_augment_never_replaces_a_file_that_appeared_while_it_trained(
    tmp_path, capsys, monkeypatch, which
):
    import anndata

    source, target, saved = tmp_path / "in.h5ad", tmp_path / "out.h5ad", tmp_path / "s.scld"
    _write_input(source)
    _racing_output(monkeypatch, target if which == "output" else saved)
    argv = ["augment", str(source), str(target), "--save-sampler", str(saved), *FAST]
    assert main(argv) == 1
    err = capsys.readouterr().err
    raced = target if which == "output" else saved
    kept = raced.with_name(f"{raced.stem}.1{raced.suffix}")
    assert raced.read_bytes() == b"someone else's"
    assert f"'{raced}' appeared while scld-aug was working" in err
    assert f"the result was written to '{kept}' instead" in err
    # Nothing finished is lost: both results are on disk, complete.
    result = anndata.read_h5ad(kept if which == "output" else target)
    assert result.obs["is_synthetic"].sum() > 0
    assert SCLDSampler.load(saved if which == "output" else kept).generator_ is not None


def test_train_never_replaces_a_generator_file_that_appeared_while_it_trained(
    tmp_path, capsys, monkeypatch
):
    import scld_aug.pretrain

    source, target = tmp_path / "in.h5ad", tmp_path / "atlas.pt"
    _write_input(source)
    original = scld_aug.pretrain.train_generator

    def train_then_race(*args, **kwargs):
        generator = original(*args, **kwargs)
        target.write_text("someone else's")
        return generator

    monkeypatch.setattr(scld_aug.pretrain, "train_generator", train_then_race)
    assert main(["train", str(source), str(target), "--quick", "--device", "cpu"]) == 1
    assert "appeared while scld-aug was working" in capsys.readouterr().err
    assert target.read_text() == "someone else's"
    assert SCLDGenerator.load(tmp_path / "atlas.1.pt").n_genes == 200


@pytest.mark.parametrize("how", ["same", "symlink", "dotdot", "hardlink"])
def test_tune_never_saves_over_its_input(tmp_path, capsys, count_trainings, how):
    source = tmp_path / "in.h5ad"
    _write_input(source)
    before = source.read_bytes()
    (tmp_path / "sub").mkdir()
    if how == "same":
        target = source
    elif how == "symlink":
        target = tmp_path / "link.h5ad"
        target.symlink_to(source)
    elif how == "dotdot":
        target = tmp_path / "sub" / ".." / "in.h5ad"
    else:
        target = tmp_path / "hard.h5ad"
        os.link(source, target)
    argv = ["tune", str(source), "--n-trials", "1", "--cv", "2", *FAST, "--overwrite"]
    assert main([*argv, "--save-sampler", str(target)]) == 1
    assert "is the input file" in capsys.readouterr().err
    assert main([*argv, "--storage", f"sqlite:///{target}"]) == 1
    assert "is the input file" in capsys.readouterr().err
    assert count_trainings == []
    assert source.read_bytes() == before


def test_tune_checks_its_outputs_before_the_study(tmp_path, capsys, count_trainings, monkeypatch):
    source = tmp_path / "in.h5ad"
    _write_input(source)
    argv = ["tune", str(source), "--n-trials", "1", "--cv", "2", *FAST]
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # A folder without write permission (simulated: these tests may run as root).
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    assert main([*argv, "--save-sampler", str(locked / "tuned.scld")]) == 1
    assert f"no write permission in the folder '{locked}'" in capsys.readouterr().err
    monkeypatch.undo()
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "trials.csv").write_text("an earlier study")
    assert main([*argv, "--plots-dir", str(tmp_path / "plots")]) == 1
    assert "trials.csv' already exists; pass --overwrite" in capsys.readouterr().err
    assert main([*argv, "--plots-dir", str(source)]) == 1
    assert "is a file; give a folder" in capsys.readouterr().err
    assert count_trainings == []
    assert (tmp_path / "plots" / "trials.csv").read_text() == "an earlier study"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_tune_prints_what_it_found_even_when_the_sampler_cannot_be_saved(
    tmp_path, capsys, monkeypatch
):
    source, saved = tmp_path / "in.h5ad", tmp_path / "tuned.scld"
    _write_input(source)

    def disk_full(self, path, include_anchors, overwrite):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SCLDSampler, "_write", disk_full)
    argv = ["tune", str(source), "--n-trials", "1", "--cv", "2", *FAST]
    assert main([*argv, "--save-sampler", str(saved)]) == 1
    captured = capsys.readouterr()
    assert "Best f1_macro: " in captured.out and "Best parameters: guidance_scale=" in captured.out
    assert "the tuned sampler was not saved" in captured.err
    assert "No space left on device" in captured.err


def test_demo_refuses_to_replace_an_earlier_run_unless_asked(tmp_path, capsys):
    (tmp_path / "f1.csv").write_text("an earlier run")
    assert main(["demo", "--quick", "--output-dir", str(tmp_path)]) == 1
    assert "f1.csv' already exists; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "f1.csv").read_text() == "an earlier run"


def test_benchmark_refuses_a_results_folder_that_is_a_file(tmp_path, capsys):
    source = tmp_path / "in.h5ad"
    _write_input(source, counts_layer=True)
    (tmp_path / "bench").write_text("a file")
    argv = ["benchmark", str(source), "--layer", "counts", "--output", str(tmp_path / "bench")]
    assert main([*argv, "--methods", "none", "--protocols", "natural"]) == 1
    assert "is a file; give a folder" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["file", "file-inside", "write-fails"])
def test_a_cache_that_cannot_be_written_costs_a_warning_not_the_generator(
    data, tiny_params, tmp_path, monkeypatch, where
):
    import scld_aug.store

    X, y = data
    memory = tmp_path / "cache"
    if where == "file":
        memory.write_text("not a folder")
    elif where == "file-inside":
        memory.mkdir()
        (memory / "scld_aug").write_text("not a folder")
    else:

        def disk_full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(scld_aug.store, "atomic_torch_save", disk_full)
    expected = SCLDSampler(random_state=0, **tiny_params).fit_resample(X, y)[0]
    sampler = SCLDSampler(random_state=0, memory=memory, **tiny_params)
    with pytest.warns(UserWarning, match="could not be cached.*goes on without the cache"):
        result = sampler.fit_resample(X, y)[0]
    np.testing.assert_array_equal(result, expected)
    assert sampler.generator_source_ == "trained"


def test_a_cache_entry_is_served_only_for_its_own_key(data, tiny_params, tmp_path):
    X, y = data
    first = SCLDSampler(random_state=0, memory=tmp_path, **tiny_params).fit(X, y)
    (entry,) = _cache_files(tmp_path)
    other = SCLDSampler(random_state=1, memory=tmp_path, **tiny_params)
    from scld_aug import data as data_layer
    from scld_aug import store

    key = store.training_key(data_layer.as_csr(X), y, other._training_config("nb"), 1)
    entry.rename(store.GeneratorCache(tmp_path).path(key))  # another key's file
    with pytest.warns(UserWarning, match="cannot be used.*does not hold the generator of key"):
        other.fit(X, y)
    assert other.generator_source_ == "trained"
    assert other.generator_key_ != first.generator_key_
    again = SCLDSampler(random_state=1, memory=tmp_path, **tiny_params).fit(X, y)
    assert again.generator_source_ == "memory"  # the bad entry was replaced
