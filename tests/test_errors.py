"""Bad input gets a clear error that says what is wrong and how to fix it."""

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
    with pytest.raises(ValueError, match="negative values.*likelihood='gaussian'"):
        sampler.set_params(likelihood="nb").fit_resample(X, y)


def test_non_integer_values_with_count_likelihood(sampler, data):
    X, y = data
    X[0, 0] = 0.5
    with pytest.raises(ValueError, match="non-integer values.*raw counts"):
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
