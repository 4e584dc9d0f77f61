"""Pretrain once (in memory, streamed from disk, or with torchrun DDP), reuse in samplers."""

from __future__ import annotations

import os
import subprocess
import sys

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from scld_aug import SCLDGenerator, SCLDSampler
from scld_aug.preprocessing import log_normalize
from scld_aug.pretrain import pretrain
from tests.conftest import TINY, make_counts
from tests.test_generation_quality import QUALITY

TRAIN = {k: v for k, v in TINY.items() if k != "n_sampling_steps"}


def _adata(X, y, layer: str | None = None) -> anndata.AnnData:
    matrix = sp.csr_matrix(X.astype(np.float32))
    var = pd.DataFrame(index=[f"g{i}" for i in range(X.shape[1])])
    obs = pd.DataFrame({"cell_type": pd.Categorical(y)}, index=[f"c{i}" for i in range(len(y))])
    if layer is None:
        return anndata.AnnData(matrix, obs=obs, var=var)
    return anndata.AnnData(
        sp.csr_matrix(log_normalize(matrix)), obs=obs, var=var, layers={layer: matrix}
    )


def _same_weights(a: SCLDGenerator, b: SCLDGenerator) -> bool:
    sa, sb = a.state(), b.state()
    return all(
        torch.equal(sa[m][k], sb[m][k])
        for m in ("autoencoder", "denoiser", "classifier")
        for k in sa[m]
    ) and np.array_equal(a.latent_mean, b.latent_mean)


@pytest.fixture(scope="module")
def data():
    return make_counts()


def test_pretrain_in_one_process_trains_what_the_sampler_trains(data):
    X, y = data
    generator = pretrain(_adata(X, y), random_state=3, **TRAIN)
    sampler = SCLDSampler(random_state=3, **TINY).fit(X, y)
    assert _same_weights(generator, sampler.generator_)
    assert generator.gene_names.tolist() == [f"g{i}" for i in range(X.shape[1])]


@pytest.mark.parametrize("layer", [None, "counts", "dense"])
def test_streaming_from_disk_trains_the_same_generator(data, tmp_path, layer):
    X, y = data
    path = tmp_path / "cells.h5ad"
    adata = _adata(X, y, layer)
    if layer == "dense":
        adata.layers["dense"] = adata.layers["dense"].toarray()
    adata.write_h5ad(path)
    in_memory = pretrain(adata, layer=layer, random_state=0, **TRAIN)
    streamed = pretrain(path, layer=layer, backed=True, random_state=0, **TRAIN)
    assert _same_weights(in_memory, streamed)
    # An AnnData opened backed is streamed as well (X only: anndata loads layers).
    if layer is None:
        backed = anndata.read_h5ad(path, backed="r")
        assert _same_weights(in_memory, pretrain(backed, random_state=0, **TRAIN))
        backed.file.close()


def test_normalized_data_gets_the_gaussian_decoder_as_in_the_sampler(data):
    X, y = data
    adata = _adata(X, y)
    adata.X = sp.csr_matrix(log_normalize(adata.X))
    assert pretrain(adata, **TRAIN).panel.likelihood == "gaussian"


def test_non_finite_values_on_disk_are_refused(data, tmp_path):
    X, y = data
    adata = _adata(X, y)
    adata.X.data[5] = np.nan
    adata.write_h5ad(tmp_path / "nan.h5ad")
    with pytest.raises(ValueError, match=r"NaN or infinite values \(e.g. nan\). Remove or impute"):
        pretrain(tmp_path / "nan.h5ad", backed=True, **TRAIN)


def test_backed_column_major_file_is_refused_with_a_fix(data, tmp_path):
    X, y = data
    adata = _adata(X, y)
    adata.X = adata.X.tocsc()
    adata.write_h5ad(tmp_path / "csc.h5ad")
    with pytest.raises(ValueError, match="column-major.*tocsr"):
        pretrain(tmp_path / "csc.h5ad", backed=True, **TRAIN)


def test_pretrain_errors_name_the_problem(data, tmp_path):
    X, y = data
    with pytest.raises(FileNotFoundError, match="No such .h5ad"):
        pretrain(tmp_path / "missing.h5ad")
    with pytest.raises(TypeError, match="Unknown training option.*guidance_scale"):
        pretrain(_adata(X, y), guidance_scale=2.0)
    path = tmp_path / "cells.h5ad"
    _adata(X, y).write_h5ad(path)
    with pytest.raises(KeyError, match="layer='counts' not found"):
        pretrain(path, layer="counts", backed=True, **TRAIN)
    with pytest.raises(KeyError, match="labels_key='celltype'"):
        pretrain(path, labels_key="celltype", backed=True, **TRAIN)


@pytest.fixture(scope="module")
def pretrained_file(data, tmp_path_factory):
    X, y = data
    path = tmp_path_factory.mktemp("pretrained") / "generator.pt"
    pretrain(_adata(X, y), random_state=0, out=path, **TRAIN)
    return path


def test_pipeline_with_a_pretrained_generator_trains_nothing(
    data, pretrained_file, count_trainings
):
    from imblearn.pipeline import make_pipeline

    X, y = data
    pipe = make_pipeline(
        SCLDSampler(generator=str(pretrained_file), random_state=0, n_sampling_steps=5),
        LogisticRegression(max_iter=500),
    )
    scores = cross_val_score(pipe, X, y, cv=3, error_score="raise")
    assert len(scores) == 3 and np.all(scores > 0.5)
    assert count_trainings == []


def test_pretrained_generator_samples_like_the_trained_one(data, pretrained_file):
    X, y = data
    trained = SCLDSampler(random_state=0, **TINY).fit(X, y)
    reused = SCLDSampler(generator=pretrained_file, random_state=0, n_sampling_steps=5)
    X_res, y_res = reused.fit_resample(X, y)
    assert reused.generator_source_ == "pretrained"
    assert np.array_equal(reused.generate(20, "type2"), trained.generate(20, "type2"))
    assert X_res.dtype == X.dtype and (y_res == "type2").sum() == (y == "type0").sum()
    # Few cells of a type are fine: the generator learned it elsewhere.
    few = np.r_[np.flatnonzero(y != "type2"), np.flatnonzero(y == "type2")[:1]]
    X_few, y_few = reused.fit_resample(X[few], y[few])
    assert (y_few == "type2").sum() == (y == "type0").sum()


def test_pretrained_generator_object_and_saved_sampler(data, pretrained_file, tmp_path):
    X, y = data
    generator = SCLDGenerator.load(pretrained_file)
    sampler = SCLDSampler(generator=generator, random_state=0, n_sampling_steps=5).fit(X, y)
    assert sampler.generator_ is generator
    sampler.save(tmp_path / "sampler.pt")
    loaded = SCLDSampler.load(tmp_path / "sampler.pt")
    assert isinstance(loaded.generator, SCLDGenerator)
    refit = loaded.fit(X[::2], y[::2])
    assert refit.generator_source_ == "pretrained"
    assert np.array_equal(refit.generate(5, "type1"), sampler.generate(5, "type1"))
    with pytest.raises(ValueError, match="saved SCLDSampler: load it with SCLDSampler.load"):
        SCLDGenerator.load(tmp_path / "sampler.pt")


def test_data_that_does_not_fit_the_pretrained_generator_is_refused(data, pretrained_file):
    X, y = data
    sampler = SCLDSampler(generator=pretrained_file, n_sampling_steps=5)
    with pytest.raises(ValueError, match="X has 199 genes but the pretrained generator"):
        sampler.fit(X[:, :-1], y)
    columns = [f"g{i}" for i in range(X.shape[1])]
    swapped = columns[:]
    swapped[0], swapped[1] = swapped[1], swapped[0]
    with pytest.raises(ValueError, match="Gene 0 is 'g1' here but 'g0'"):
        sampler.fit(pd.DataFrame(X, columns=swapped), y)
    assert sampler.fit(pd.DataFrame(X, columns=columns), y).generator_source_ == "pretrained"
    with pytest.raises(ValueError, match=r"cannot make class\(es\) \['type9'\]"):
        sampler.fit(X, np.where(y == "type2", "type9", y))
    with pytest.raises(
        ValueError,
        match=r"models raw counts, but X does not hold raw counts: it has the value \d+\.5, which",
    ):
        sampler.fit(X + 0.5, y)
    adata = _adata(X, y)
    adata.var_names = swapped
    with pytest.raises(ValueError, match="Gene 0 is 'g1' here but 'g0'"):
        sampler.fit_resample_anndata(adata)
    with pytest.raises(FileNotFoundError, match="generator='nowhere.pt': no such file"):
        SCLDSampler(generator="nowhere.pt").fit(X, y)


def _recognised(generator: SCLDGenerator, X, y) -> dict:
    reference = LogisticRegression(max_iter=3000).fit(log_normalize(X), y)
    sampler = SCLDSampler(generator=generator, random_state=0, n_sampling_steps=25).fit(X, y)
    return {
        t: float((reference.predict(log_normalize(sampler.generate(200, t))) == t).mean())
        for t in np.unique(y)
    }


def test_torchrun_ddp_on_cpu_matches_single_process_quality(data, tmp_path):
    """Two gloo processes under torchrun train a generator as good as one process."""
    X, y = data
    _adata(X, y).write_h5ad(tmp_path / "cells.h5ad")
    steps = {k: QUALITY[k] for k in ("autoencoder_steps", "diffusion_steps", "classifier_steps")}
    options = [f"--{k.replace('_', '-')}={v}" for k, v in steps.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        + ["-m", "scld_aug", "train", str(tmp_path / "cells.h5ad")]
        + [str(tmp_path / "ddp.pt"), "--device=cpu", "--n-top-genes=100", *options],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "with 2 DDP processes" in run.stdout
    ddp = SCLDGenerator.load(tmp_path / "ddp.pt")
    assert ddp.config["kl_weight"] == 0.0
    single = pretrain(_adata(X, y), n_top_genes=100, random_state=0, **steps)
    ddp_scores, single_scores = _recognised(ddp, X, y), _recognised(single, X, y)
    for cell_type, score in single_scores.items():
        assert ddp_scores[cell_type] >= 0.9, ddp_scores
        assert ddp_scores[cell_type] >= score - 0.05, (ddp_scores, single_scores)


def test_train_command_saves_a_generator_and_explains_errors(data, tmp_path, capsys):
    from scld_aug.apps.cli import main

    X, y = data
    path = tmp_path / "cells.h5ad"
    _adata(X, y).write_h5ad(path)
    out = tmp_path / "generator.pt"
    assert main(["train", str(path), str(out), "--quick", "--backed", "--quiet"]) == 0
    assert SCLDGenerator.load(out).classes.tolist() == ["type0", "type1", "type2"]
    assert main(["train", str(path), str(out), "--quick"]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["train", str(path), str(out), "--quick", "--overwrite", "--labels-key=x"]) == 1
    assert "labels_key='x' is not a column" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nope.h5ad"), str(tmp_path / "o.pt")]) == 1
    assert "No such .h5ad file" in capsys.readouterr().err
    assert main(["train", str(path), str(out), "--quick", "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "3 cell types" in printed and 'SCLDSampler(generator="' in printed


@pytest.mark.parametrize("entry", ["dataframe", "anndata"])
def test_a_generator_trained_by_the_sampler_knows_its_gene_names(data, tmp_path, entry):
    # SCLDSampler.fit and pretrain share one training entry point: both record gene names,
    # so a generator saved from a sampler checks data by name as a pretrained one does.
    X, y = data
    columns = [f"g{i}" for i in range(X.shape[1])]
    sampler = SCLDSampler(random_state=0, **TINY)
    if entry == "dataframe":
        sampler.fit(pd.DataFrame(X, columns=columns), y)
    else:
        sampler.fit_resample_anndata(_adata(X, y))
    assert sampler.generator_.gene_names.tolist() == columns
    sampler.generator_.save(tmp_path / "from_sampler.pt")
    swapped = columns[1::-1] + columns[2:]
    reuse = SCLDSampler(generator=tmp_path / "from_sampler.pt", n_sampling_steps=5)
    with pytest.raises(ValueError, match="Gene 0 is 'g1' here but 'g0'"):
        reuse.fit(pd.DataFrame(X, columns=swapped), y)
