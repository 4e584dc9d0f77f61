"""Bad input gets a clear error that says what is wrong and how to fix it."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scld_aug import SCLDSampler


@pytest.fixture
def sampler(tiny_params):
    return SCLDSampler(random_state=0, **tiny_params)


@pytest.fixture
def data(counts_data):
    X, y = counts_data
    return X.astype(float), y.copy()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values(sampler, data, bad):
    X, y = data
    X[3, 4] = bad
    with pytest.raises(ValueError, match="NaN|infinity"):
        sampler.fit_resample(X, y)


def test_non_finite_values_sparse(sampler, data):
    X, y = data
    X[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sampler.fit_resample(sp.csr_matrix(X), y)


def test_negative_values_with_count_likelihood(sampler, data):
    X, y = data
    X[0, 0] = -1
    with pytest.raises(ValueError, match="the value -1, which is negative.*likelihood='gaussian'"):
        sampler.set_params(likelihood="nb").fit_resample(X, y)


def test_non_integer_values_with_count_likelihood(sampler, data):
    X, y = data
    X[0, 0] = 0.5
    with pytest.raises(ValueError, match="the value 0.5, which is not a whole number.*raw counts"):
        sampler.set_params(likelihood="nb").fit_resample(X, y)


def test_class_with_too_few_cells(sampler, data, monkeypatch):
    import scld_aug.train

    X, y = data
    y = y.copy()
    y[-10:-8] = "tiny"  # two cells
    original = scld_aug.train.fit_generator
    monkeypatch.setattr(scld_aug.train, "fit_generator", lambda *a, **k: pytest.fail("trained"))
    # Asked for by name: an error before any training.
    with pytest.raises(ValueError, match=r"fewer than min_class_size=3 cells.*'tiny' \(2\)"):
        sampler.set_params(sampling_strategy={"tiny": 20, "type2": 20}).fit_resample(X, y)
    monkeypatch.setattr(scld_aug.train, "fit_generator", original)
    # The default strategy leaves it as it is, says so once and records it.
    sampler.set_params(sampling_strategy="auto")
    with pytest.warns(UserWarning, match=r"Not over-sampling 1 class.*'tiny' \(2\)") as caught:
        X_res, y_res = sampler.fit_resample(X, y)
    assert len([w for w in caught if "Not over-sampling" in str(w.message)]) == 1
    assert sampler.skipped_classes_ == {"tiny": 2}
    assert (y_res == "tiny").sum() == 2
    majority = max((y == c).sum() for c in set(y))
    assert all((y_res == c).sum() == majority for c in set(y) if c != "tiny")
    # Leaving the class out of a dict strategy is the other documented fix.
    _, y_res = sampler.set_params(sampling_strategy={"type2": 20}).fit_resample(X, y)
    assert (y_res == "tiny").sum() == 2 and sampler.skipped_classes_ == {}


def test_unknown_class_in_generate(sampler, data):
    X, y = data
    sampler.fit(X, y)
    with pytest.raises(ValueError, match="Unknown class 'neuron'.*type0"):
        sampler.generate(5, "neuron")
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        sampler.generate(0, "type0")


def test_generate_before_fit(sampler):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        sampler.generate(5, "type0")


def test_mismatched_shapes(sampler, data):
    X, y = data
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        sampler.fit_resample(X, y[:-1])


def test_empty_input(sampler):
    with pytest.raises(ValueError, match="0 sample"):
        sampler.fit_resample(np.zeros((0, 5)), np.array([]))


def test_one_dimensional_x(sampler):
    with pytest.raises(ValueError, match="Expected 2D array"):
        sampler.fit_resample(np.arange(10.0), np.array([0, 1] * 5))


def test_continuous_target(sampler, data):
    X, _ = data
    with pytest.raises(ValueError, match="Unknown label type"):
        sampler.fit_resample(X, np.linspace(0, 1, len(X)))


def test_single_class(sampler, data):
    X, _ = data
    with pytest.raises(ValueError, match="class"):
        sampler.fit_resample(X, np.zeros(len(X)))


def test_empty_cells_with_count_likelihood_warn(sampler, data):
    X, y = data
    X[5] = 0
    with pytest.warns(UserWarning, match="zero total counts.*row 5"):
        X_res, _ = sampler.fit_resample(X, y)
    assert np.isfinite(X_res).all()


def test_invalid_parameters_are_rejected_at_fit(data):
    X, y = data
    with pytest.raises(ValueError, match="guidance_scale"):
        SCLDSampler(guidance_scale=-1).fit_resample(X, y)
    with pytest.raises(ValueError, match="likelihood"):
        SCLDSampler(likelihood="poisson").fit_resample(X, y)
    with pytest.raises(ValueError, match="n_jobs"):
        SCLDSampler(n_jobs=0).fit_resample(X, y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device(sampler, data):
    X, y = data
    with pytest.raises(ValueError, match="CUDA is not available"):
        sampler.set_params(device="cuda").fit_resample(X, y)


def test_load_missing_or_foreign_file(tmp_path):
    import torch

    with pytest.raises(FileNotFoundError, match="No saved model"):
        SCLDSampler.load(tmp_path / "missing.scld")
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a saved SCLDSampler"):
        SCLDSampler.load(tmp_path / "other.pt")


def test_all_zero_counts_are_refused_with_a_clear_message(sampler, data, count_trainings):
    X, y = data
    for empty in (np.zeros_like(X), sp.csr_matrix(X.shape, dtype=np.int64)):
        with pytest.raises(ValueError, match="no non-zero value.*cells in rows"):
            sampler.fit_resample(empty, y)
    assert count_trainings == []


@pytest.mark.parametrize("bad", [20.7, -3, "20", True, float("nan")])
def test_dict_strategy_needs_whole_numbers_of_cells(sampler, data, count_trainings, bad):
    X, y = data
    with pytest.raises(ValueError, match=r"sampling_strategy\['type2'\].*whole number >= 0"):
        sampler.set_params(sampling_strategy={"type2": bad}).fit_resample(X, y)
    assert count_trainings == []


def test_integer_categorical_labels_are_named_by_their_own_values(sampler, data):
    import anndata
    import pandas as pd

    X, y = data
    codes = np.unique(y, return_inverse=True)[1] + 1  # 1, 2, 3
    adata = anndata.AnnData(
        X.astype(np.float32),
        obs=pd.DataFrame(
            {"cell_type": pd.Categorical(codes)}, index=[f"c{i}" for i in range(len(y))]
        ),
    )
    out = sampler.set_params(sampling_strategy={3: 30}).fit_resample_anndata(adata)
    assert out.obs["cell_type"].dtype == "category"
    assert list(out.obs["cell_type"].cat.categories) == [1, 2, 3]
    assert (out.obs["cell_type"] == 3).sum() == 30


def test_requests_that_cannot_fit_in_memory_are_refused_before_work(
    sampler, data, count_trainings, monkeypatch
):
    X, y = data
    with pytest.raises(ValueError, match=r"Generating 9,999,999,990 synthetic cells.*fewer"):
        sampler.set_params(sampling_strategy={"type2": 10**10}).fit_resample(X, y)
    assert count_trainings == []
    sampler.set_params(sampling_strategy="auto").fit(X, y)
    with pytest.raises(ValueError, match=r"Generating 1,000,000,000,000 synthetic cells"):
        sampler.generate(10**12, "type2")
    # Sparse output is sized by the stored values per cell, not by every gene: with 10% of
    # the values stored, 60,000 cells need ~40 MB as CSR but ~190 MB dense.
    from sklearn.base import clone

    import scld_aug.data

    thin = X * (np.random.default_rng(0).random(X.shape) < 0.1)
    monkeypatch.setattr(scld_aug.data, "available_memory", lambda: 64 * 2**20)
    dense = clone(sampler).fit(thin, y)
    with pytest.raises(ValueError, match="64.0 MiB is available"):
        dense.generate(60_000, "type2")
    sparse = clone(sampler).fit(sp.csr_matrix(thin), y)
    assert sparse.generate(60_000, "type2").shape == (60_000, X.shape[1])


def test_one_rule_and_one_message_for_counts_on_every_path(tmp_path, capsys, count_trainings):
    """A value 1e-12 away from a whole number is not a count, whether the command line
    checks an .h5ad file or the sampler chooses its likelihood (before any conversion to
    float32, which would round it away); every path names the value with all its digits."""
    import anndata

    from scld_aug.apps.cli import main
    from tests.conftest import make_counts

    X, y = make_counts(sizes=(100, 30), n_genes=40)
    X = X.astype(np.float64)
    X[5, 7] = 18.000000000001
    expected = "X does not hold raw counts: it has the value 18.000000000001, which is not a "
    expected += "whole number (it is within 1e-6 of one"
    source = tmp_path / "in.h5ad"
    obs = {"cell_type": y}
    anndata.AnnData(X, obs=obs).write_h5ad(source)
    assert main(["augment", str(source), str(tmp_path / "out.h5ad"), "--device", "cpu"]) == 1
    assert expected in capsys.readouterr().err
    tiny = dict(autoencoder_steps=5, diffusion_steps=5, classifier_steps=2, n_sampling_steps=2)
    with pytest.raises(ValueError, match="likelihood='nb' models raw counts, but ") as caught:
        SCLDSampler(likelihood="nb", **tiny).fit(X, y)
    assert expected in str(caught.value)
    assert count_trainings == []
    sampler = SCLDSampler(random_state=0, **tiny).fit(X, y)
    assert sampler.likelihood_ == "gaussian"  # not counts: modelled as they are
    assert SCLDSampler(random_state=0, **tiny).fit(X.round(), y).likelihood_ == "nb"


def test_generate_refuses_a_class_too_small_to_learn_as_fit_does(sampler, data, tmp_path):
    X, y = data
    y = y.copy()
    y[-2:] = "tiny"
    with pytest.warns(UserWarning, match="Not over-sampling 1 class"):
        sampler.fit_resample(X, y)
    message = r"Class 'tiny' had 2 cell\(s\).*fewer than min_class_size=3"
    with pytest.raises(ValueError, match=message):
        sampler.generate(5, "tiny")
    sampler.save(tmp_path / "s.scld")
    with pytest.raises(ValueError, match=message):
        SCLDSampler.load(tmp_path / "s.scld").generate(5, "tiny")
    assert sampler.generate(5, "type2").shape == (5, X.shape[1])


@pytest.mark.parametrize("name", ["guidance_scale", "latent_dim", "post_guidance_scale"])
def test_booleans_are_not_numbers(sampler, data, name, count_trainings):
    X, y = data
    with pytest.raises(ValueError, match=f"'{name}' parameter of SCLDSampler must be.*Got True"):
        sampler.set_params(**{name: True}).fit(X, y)
    assert count_trainings == []


def test_a_loaded_sampler_says_when_fitting_replaces_its_generator(sampler, data, tmp_path):
    X, y = data
    sampler.fit(X, y).save(tmp_path / "s.scld")
    loaded = SCLDSampler.load(tmp_path / "s.scld")
    with pytest.warns(UserWarning, match="X has 150 genes, the loaded generator 200: fitting"):
        loaded.fit(X[:, :150], y)
    assert loaded.generator_source_ == "trained"
    again = SCLDSampler.load(tmp_path / "s.scld")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the data it was trained on: reused, no warning
        again.fit(X, y)
    assert again.generator_source_ == "reused"


def test_tune_says_which_type_its_folds_are_too_small_for(tmp_path, capsys, count_trainings):
    import anndata

    from scld_aug.apps.cli import main
    from tests.conftest import make_counts

    X, y = make_counts(sizes=(300, 100, 5), n_genes=40)
    source = tmp_path / "in.h5ad"
    anndata.AnnData(X.astype(np.float32), obs={"cell_type": y}).write_h5ad(source)
    assert main(["tune", str(source), "--cv", "2", "--n-trials", "1", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "Cell type 'type2' has 5 cells: split into 2 cross-validation folds, a training " in err
    assert "fold holds as few as 2 of them, fewer than min_class_size=3" in err
    assert "--types on the command line" in err and "dict sampling_strategy" not in err
    assert count_trainings == []


@pytest.mark.filterwarnings("ignore:Not over-sampling")
def test_raw_is_not_carried_over_silently(sampler, data):
    import anndata

    X, y = data
    counts = anndata.AnnData(X, obs={"cell_type": y})
    normalized = counts.copy()
    normalized.X = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    normalized.raw = counts
    with pytest.warns(UserWarning) as caught:
        out = sampler.fit_resample_anndata(normalized, labels_key="cell_type")
    message = " ".join(str(w.message) for w in caught)
    assert "adata.raw is not carried over to the result" in message
    assert "not raw counts (modelled as Gaussian) but adata.raw holds raw counts" in message
    assert "adata.layers['counts'] = adata.raw[:, adata.var_names].X" in message
    assert out.raw is None and sampler.likelihood_ == "gaussian"


def test_synthetic_cell_names_never_repeat_a_real_one(sampler, data):
    import anndata

    X, y = data
    names = [f"cell{i}" for i in range(len(y))]
    names[:3] = ["synthetic-0", "synthetic1-1", "synthetic2-2"]  # the first choices, taken
    adata = anndata.AnnData(X, obs={"cell_type": y})
    adata.obs_names = names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = sampler.fit_resample_anndata(adata, labels_key="cell_type")
    assert out.obs_names.is_unique and out.n_obs > adata.n_obs
    assert out.obs_names[adata.n_obs :].str.startswith("synthetic3-").all()


def test_augment_refuses_what_h5ad_cannot_store_before_training(
    tmp_path, count_trainings, monkeypatch
):
    import anndata

    import scld_aug.anndata_io
    from scld_aug.apps.augment import AugmentError, augment_h5ad
    from tests.conftest import make_counts

    X, y = make_counts(sizes=(100, 30, 5), n_genes=40)
    adata = anndata.AnnData(X.astype(np.float32), obs={"cell_type": y})
    adata.write_h5ad(tmp_path / "in.h5ad")
    adata.uns["note"] = object()  # no .h5ad can hold it
    monkeypatch.setattr(scld_aug.anndata_io, "read", lambda path: adata)
    with pytest.raises(AugmentError, match="could not be stored as .h5ad.*nothing was trained"):
        augment_h5ad(tmp_path / "in.h5ad", tmp_path / "out.h5ad", cell_types=["type2"])
    assert count_trainings == [] and not (tmp_path / "out.h5ad").exists()
