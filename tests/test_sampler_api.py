"""Contract of SCLDSampler: counts per class, containers, determinism, reuse, persistence."""

from collections import Counter

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from scld_aug import SCLDSampler


@pytest.fixture
def data(counts_data):
    X, y = counts_data
    return X.copy(), y.copy()


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("auto", {"type0": 300, "type1": 300, "type2": 300}),
        ("minority", {"type0": 300, "type1": 120, "type2": 300}),
        ({"type2": 50}, {"type0": 300, "type1": 120, "type2": 50}),
        ("not majority", {"type0": 300, "type1": 300, "type2": 300}),
        (lambda y: {"type1": 200}, {"type0": 300, "type1": 200, "type2": 10}),
    ],
)
def test_class_counts_follow_sampling_strategy(data, tiny_params, strategy, expected):
    X, y = data
    X_res, y_res = SCLDSampler(
        sampling_strategy=strategy, random_state=0, **tiny_params
    ).fit_resample(X, y)
    assert Counter(y_res) == expected
    assert X_res.shape == (sum(expected.values()), X.shape[1])


def test_float_strategy_on_binary_target(data, tiny_params):
    X, y = data
    keep = y != "type1"
    _, y_res = SCLDSampler(sampling_strategy=0.5, random_state=0, **tiny_params).fit_resample(
        X[keep], y[keep]
    )
    assert Counter(y_res) == {"type0": 300, "type2": 150}


def test_originals_first_and_untouched_and_input_not_modified(data, tiny_params):
    X, y = data
    X_before, y_before = X.copy(), y.copy()
    X_res, y_res = SCLDSampler(random_state=0, **tiny_params).fit_resample(X, y)
    np.testing.assert_array_equal(X_res[: len(X)], X_before)
    np.testing.assert_array_equal(y_res[: len(y)], y_before)
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)
    synthetic = X_res[len(X) :]
    assert synthetic.dtype == X.dtype and synthetic.min() >= 0


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_sparse_stays_sparse_and_input_not_modified(data, tiny_params, fmt):
    X, y = data
    Xs = sp.csr_matrix(X.astype(np.float32)).asformat(fmt)
    before = Xs.copy()
    X_res, y_res = SCLDSampler(random_state=0, **tiny_params).fit_resample(Xs, y)
    assert sp.issparse(X_res) and X_res.format == fmt and X_res.dtype == np.float32
    assert (Xs != before).nnz == 0
    assert (X_res[: X.shape[0]] != Xs).nnz == 0
    synthetic = X_res[X.shape[0] :].toarray()
    np.testing.assert_array_equal(synthetic, np.round(synthetic))


def test_float32_csr_is_read_in_place_and_left_unchanged(data, tiny_params):
    # Canonical float32 CSR is not copied for training, and every gene modelled (no panel
    # copy either): the result must equal the one from dense input, and X stay as it was.
    X, y = data
    Xs = sp.csr_matrix(X.astype(np.float32))
    before = Xs.copy()
    params = {**tiny_params, "n_top_genes": None}
    sparse_res, _ = SCLDSampler(random_state=1, **params).fit_resample(Xs, y)
    dense_res, _ = SCLDSampler(random_state=1, **params).fit_resample(Xs.toarray(), y)
    np.testing.assert_array_equal(sparse_res.toarray(), dense_res)
    assert (Xs != before).nnz == 0 and Xs.has_canonical_format


def test_sparse_and_dense_give_identical_cells(data, tiny_params):
    X, y = data
    X = X.astype(np.float32)
    dense_res, _ = SCLDSampler(random_state=3, **tiny_params).fit_resample(X, y)
    sparse_res, _ = SCLDSampler(random_state=3, **tiny_params).fit_resample(sp.csr_matrix(X), y)
    np.testing.assert_array_equal(sparse_res.toarray(), dense_res)


def test_dataframe_keeps_columns_and_generate_returns_dataframe(data, tiny_params):
    X, y = data
    genes = [f"gene{i}" for i in range(X.shape[1])]
    df = pd.DataFrame(X, columns=genes, index=[f"cell{i}" for i in range(len(X))])
    labels = pd.Series(y, name="cell_type")
    sampler = SCLDSampler(random_state=0, **tiny_params)
    X_res, y_res = sampler.fit_resample(df, labels)
    assert isinstance(X_res, pd.DataFrame) and list(X_res.columns) == genes
    assert isinstance(y_res, pd.Series) and y_res.name == "cell_type"
    generated = sampler.generate(7, "type2")
    assert isinstance(generated, pd.DataFrame) and list(generated.columns) == genes


def test_augmented_anndata_with_bool_and_int_obs_columns_can_be_written(
    data, tiny_params, tmp_path
):
    X, y = data
    obs = pd.DataFrame(
        {
            "cell_type": y,
            "doublet": np.arange(len(y)) % 2 == 0,  # differs within every type
            "qc": np.ones(len(y), bool),  # shared by every cell of a type
            "n_genes": np.arange(len(y)),
        },
        index=[f"c{i}" for i in range(len(y))],
    )
    adata = anndata.AnnData(X=sp.csr_matrix(X), obs=obs)
    out = SCLDSampler(random_state=0, **tiny_params).fit_resample_anndata(adata)
    assert out.obs["doublet"].dtype == "boolean" and out.obs["n_genes"].dtype == "Int64"
    assert out.obs["doublet"].iloc[len(y) :].isna().all()
    assert out.obs["qc"].iloc[len(y) :].all() and out.obs["n_genes"].iloc[len(y) :].isna().all()
    assert (out.obs["n_genes"].iloc[: len(y)].to_numpy() == np.arange(len(y))).all()
    out.write_h5ad(tmp_path / "out.h5ad")
    back = anndata.read_h5ad(tmp_path / "out.h5ad")
    assert back.n_obs == out.n_obs and back.obs["is_synthetic"].sum() == out.n_obs - len(y)


def test_anndata_entry_point_marks_synthetic_cells(data, tiny_params):
    X, y = data
    adata = anndata.AnnData(
        X=sp.csr_matrix(np.log1p(X).astype(np.float32)),
        obs=pd.DataFrame(
            {"cell_type": pd.Categorical(y), "batch": "b1"}, index=[f"c{i}" for i in range(len(y))]
        ),
        var=pd.DataFrame(
            {"symbol": [f"G{i}" for i in range(X.shape[1])]},
            index=[f"g{i}" for i in range(X.shape[1])],
        ),
    )
    adata.layers["counts"] = sp.csr_matrix(X.astype(np.float32))
    snapshot = adata.copy()
    out = SCLDSampler(random_state=0, **tiny_params).fit_resample_anndata(
        adata, labels_key="cell_type", layer="counts"
    )
    assert out.n_obs == 900 and out.obs["is_synthetic"].sum() == 900 - len(y)
    assert not out.obs["is_synthetic"].iloc[: len(y)].any()
    assert out.var.equals(adata.var)
    assert list(out.obs_names[: len(y)]) == list(adata.obs_names) and out.obs_names.is_unique
    assert Counter(out.obs["cell_type"]) == {"type0": 300, "type1": 300, "type2": 300}
    assert isinstance(out.obs["cell_type"].dtype, pd.CategoricalDtype)
    counts = out.layers["counts"]
    assert sp.issparse(counts) and (counts[: len(y)] != adata.layers["counts"]).nnz == 0
    assert (adata.X != snapshot.X).nnz == 0 and adata.n_obs == snapshot.n_obs
    # Log-normalized X is modelled with a Gaussian likelihood and stays non-negative float.
    out_x = SCLDSampler(random_state=0, **tiny_params).fit_resample_anndata(
        adata, labels_key="cell_type"
    )
    assert out_x.X[len(y) :].min() >= 0 and out_x.X.dtype == np.float32


def test_same_random_state_same_output_and_global_rng_untouched(data, tiny_params):
    X, y = data
    torch.manual_seed(123)
    # The legacy global RNG is exactly what must stay untouched.
    np.random.seed(123)  # noqa: NPY002
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()  # noqa: NPY002
    a, _ = SCLDSampler(random_state=7, **tiny_params).fit_resample(X, y)
    assert torch.equal(torch.get_rng_state(), torch_state)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)  # noqa: NPY002
    b, _ = SCLDSampler(random_state=7, **tiny_params).fit_resample(X, y)
    c, _ = SCLDSampler(random_state=8, **tiny_params).fit_resample(X, y)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_generator_is_reused_when_only_sampling_parameters_change(
    data, tiny_params, count_trainings
):
    X, y = data
    sampler = SCLDSampler(random_state=0, **tiny_params)
    sampler.fit_resample(X, y)
    assert sampler.generator_source_ == "trained"
    for params in (
        dict(guidance_scale=4.0),
        dict(post_guidance_scale=1.0),
        dict(sampling_strategy={"type2": 40}),
        dict(n_sampling_steps=3),
        dict(filter_threshold=0.2, max_filter_rounds=2),
        dict(output="mean"),
        dict(anchor_strength=0.4),
    ):
        sampler.set_params(**params)
        sampler.fit_resample(X, y)
        assert sampler.generator_source_ == "reused", params
    assert len(count_trainings) == 1
    sampler.set_params(latent_dim=4)
    sampler.fit_resample(X, y)
    assert len(count_trainings) == 2
    X2 = X.copy()
    X2[0, 0] += 1
    sampler.fit_resample(X2, y)
    assert len(count_trainings) == 3


def test_memory_cache_shared_by_clones(data, tiny_params, tmp_path, count_trainings):
    from sklearn.base import clone

    X, y = data
    sampler = SCLDSampler(random_state=0, memory=str(tmp_path), **tiny_params)
    first, _ = sampler.fit_resample(X, y)
    other = clone(sampler)
    second, _ = other.fit_resample(X, y)
    assert other.generator_source_ == "memory"
    assert len(count_trainings) == 1
    np.testing.assert_array_equal(first, second)
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize(
    "options",
    [
        {"kl_weight": 0.0, "guidance_reference": "unconditional"},
        {"kl_weight": 1.0, "guidance_reference": "confusable", "guidance_scale": 3.0},
    ],
    ids=["deterministic-encoder", "variational-encoder-confusable"],
)
def test_save_load_round_trip_reproduces_samples(data, tiny_params, tmp_path, options):
    X, y = data
    df = pd.DataFrame(X, columns=[f"g{i}" for i in range(X.shape[1])])
    sampler = SCLDSampler(
        random_state=5, sampling_strategy={"type2": 30}, **{**tiny_params, **options}
    ).fit(df, y)
    assert sampler.generator_.autoencoder.variational == (options["kl_weight"] > 0)
    path = tmp_path / "model.scld"
    sampler.save(path)
    loaded = SCLDSampler.load(path, device="cpu")
    assert loaded.get_params()["sampling_strategy"] == {"type2": 30}
    pd.testing.assert_frame_equal(loaded.generate(20, "type2"), sampler.generate(20, "type2"))
    assert loaded.generator_source_ == "loaded"
    a, _ = sampler.fit_resample(df, y)
    b, _ = loaded.fit_resample(df, y)
    assert loaded.generator_source_ == "reused"
    pd.testing.assert_frame_equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == ["model.scld"]


def test_load_refuses_pickled_objects(tmp_path, capsys):
    import pickle

    path = tmp_path / "evil.scld"

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    with open(path, "wb") as f:
        pickle.dump({"format": "scld-aug-sampler", "x": Evil()}, f)
    with pytest.raises(ValueError, match="not a saved SCLDSampler") as caught:
        SCLDSampler.load(path)
    assert str(path) in str(caught.value)
    # Nothing ran, and torch's advice to retry with weights_only=False is not relayed.
    assert "executed" not in capsys.readouterr().out
    assert "weights_only" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_generate_matches_resampled_cells(data, tiny_params):
    X, y = data
    sampler = SCLDSampler(random_state=1, sampling_strategy={"type2": 25}, **tiny_params)
    X_res, _ = sampler.fit_resample(X, y)
    # A dict gives the class size after resampling: 25 - 10 real = 15 synthetic cells.
    assert X_res.shape[0] - len(X) == 15
    np.testing.assert_array_equal(sampler.generate(15, "type2"), X_res[len(X) :])


def test_filter_rejects_and_warns_when_quota_unreachable(data, tiny_params):
    X, y = data
    sampler = SCLDSampler(
        random_state=0,
        sampling_strategy={"type2": 20},
        filter_threshold=1.0,
        max_filter_rounds=2,
        **tiny_params,
    )
    with pytest.warns(UserWarning, match="accepted only"):
        X_res, y_res = sampler.fit_resample(X, y)
    assert Counter(y_res)["type2"] == 20


def test_log_normalized_input_gives_gaussian_output_in_input_space(data, tiny_params):
    X, y = data
    logged = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    sampler = SCLDSampler(random_state=0, **tiny_params)
    X_res, _ = sampler.fit_resample(logged, y)
    assert sampler.likelihood_ == "gaussian"
    synthetic = X_res[len(X) :]
    assert synthetic.min() >= 0 and synthetic.max() <= logged.max() + 1e-6
    with pytest.raises(ValueError, match="output='counts'"):
        sampler.set_params(output="counts").fit_resample(logged, y)


def test_anchored_generation_survives_cache_and_save(data, tiny_params, tmp_path):
    X, y = data
    params = dict(random_state=3, anchor_strength=0.5, memory=str(tmp_path / "cache"))
    sampler = SCLDSampler(**params, **tiny_params).fit(X, y)
    first = sampler.generate(15, "type2")
    cached = SCLDSampler(**params, **tiny_params).fit(X, y)
    assert cached.generator_source_ == "memory"
    np.testing.assert_array_equal(cached.generate(15, "type2"), first)
    sampler.save(tmp_path / "model.scld")
    loaded = SCLDSampler.load(tmp_path / "model.scld")
    np.testing.assert_array_equal(loaded.generate(15, "type2"), first)


def test_anchored_generation_needs_stored_anchors(data, tiny_params):
    X, y = data
    sampler = SCLDSampler(random_state=0, anchor_strength=0.5, **tiny_params).fit(X, y)
    sampler.generator_.anchors = None  # as in a file saved without them
    with pytest.raises(ValueError, match="without the latent codes"):
        sampler.generate(5, "type2")


def test_a_whole_number_for_a_float_parameter_is_the_same_cached_generator(data, tiny_params):
    from scld_aug import store
    from scld_aug.data import as_csr
    from scld_aug.params import TRAINING_PARAMS, TrainingConfig

    X, y = data
    matrix = as_csr(X)
    training = {k: v for k, v in tiny_params.items() if k in TRAINING_PARAMS}
    config = TrainingConfig(**{**training, "likelihood": "nb"})
    whole = TrainingConfig(**{**training, "likelihood": "nb", "kl_weight": 1})
    as_float = TrainingConfig(**{**training, "likelihood": "nb", "kl_weight": 1.0})
    key = store.training_key(matrix, y, whole, 0)
    assert key == store.training_key(matrix, y, as_float, 0)
    assert key != store.training_key(matrix, y, config, 0)
