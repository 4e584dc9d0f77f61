"""Metrics comparing synthetic with real cells, each checked on data with a known answer."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from scld_aug.metrics import (
    ReferenceEmbedding,
    downstream_scores,
    gene_fidelity,
    mmd_rbf,
    sliced_wasserstein,
    two_sample_auc,
)

N_GENES = 200
PROGRAM = 50  # genes over-expressed by each cell type, i.e. its true markers


def profiles(n_types=3, seed=0):
    """Expression profiles (rows sum to 1): type k boosts genes [k*PROGRAM, (k+1)*PROGRAM)."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(0.8, 1.0, N_GENES)
    out = np.tile(base, (n_types, 1))
    for k in range(n_types):
        out[k, k * PROGRAM : (k + 1) * PROGRAM] *= 6.0
    return out / out.sum(axis=1, keepdims=True)


def poisson_cells(profile, n, seed, depth=2000.0):
    """Poisson counts around ``profile`` with log-normal library sizes."""
    rng = np.random.default_rng(seed)
    lib = rng.lognormal(np.log(depth), 0.3, n)
    return rng.poisson(lib[:, None] * profile).astype(np.int64)


def shifted(X, shift):
    e = np.zeros(X.shape[1])
    e[0] = shift
    return X + e


@pytest.fixture(scope="module")
def gaussians():
    rng = np.random.default_rng(1)
    return rng.normal(size=(500, 5)), rng.normal(size=(500, 5))


@pytest.fixture(scope="module")
def cell_types():
    """Real cells of type 0, other real types, and fresh draws from type 0's profile."""
    p = profiles()
    real = poisson_cells(p[0], 300, seed=1)
    other = np.vstack([poisson_cells(p[1], 200, seed=2), poisson_cells(p[2], 200, seed=3)])
    synthetic = poisson_cells(p[0], 250, seed=4)
    shuffled = poisson_cells(np.random.default_rng(5).permutation(p[0]), 250, seed=6)
    return real, other, synthetic, shuffled


# --- mmd_rbf ---------------------------------------------------------------------------


def test_mmd_same_distribution_is_near_zero(gaussians):
    A, B = gaussians
    assert abs(mmd_rbf(A, B)) < 0.02


def test_mmd_detects_a_mean_shift(gaussians):
    A, B = gaussians
    assert mmd_rbf(A, shifted(B, 3.0)) > 0.3


def test_mmd_grows_with_the_shift(gaussians):
    A, B = gaussians
    values = [mmd_rbf(A, shifted(B, s)) for s in (0.0, 0.5, 1.0, 2.0)]
    assert np.all(np.diff(values) > 0), values


def test_mmd_fixed_bandwidth_matches_direct_formula():
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(6, 2)), rng.normal(size=(5, 2)) + 1.0

    def k(X, Y):
        d2 = ((X[:, None, :] - Y[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * 1.5**2))

    m, n = len(A), len(B)
    expected = (
        (k(A, A).sum() - m) / (m * (m - 1))
        + (k(B, B).sum() - n) / (n * (n - 1))
        - 2 * k(A, B).mean()
    )
    assert mmd_rbf(A, B, bandwidth=1.5) == pytest.approx(expected, rel=1e-12)


def test_mmd_subsamples_large_inputs():
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(2100, 2)), rng.normal(size=(2050, 2))
    value = mmd_rbf(A, B)
    assert abs(value) < 0.01
    assert mmd_rbf(A, B) == value  # subsampling is seeded


def test_mmd_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2 rows"):
        mmd_rbf(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="columns"):
        mmd_rbf(np.zeros((4, 3)), np.zeros((5, 2)))


# --- sliced_wasserstein ----------------------------------------------------------------


def test_sliced_wasserstein_same_distribution_is_near_zero():
    rng = np.random.default_rng(2)
    assert sliced_wasserstein(rng.normal(size=(1000, 5)), rng.normal(size=(1000, 5))) < 0.1


@pytest.mark.parametrize("d", [0.5, -2.0, 7.25])
def test_sliced_wasserstein_of_a_1d_shift_is_the_shift(d):
    a = np.random.default_rng(3).normal(size=(300, 1))
    assert sliced_wasserstein(a, a + d) == pytest.approx(abs(d), abs=1e-6)


def test_sliced_wasserstein_grows_with_the_shift(gaussians):
    A, B = gaussians
    values = [sliced_wasserstein(A, shifted(B, s)) for s in (0.0, 0.5, 1.0, 2.0)]
    assert np.all(np.diff(values) > 0), values


def test_sliced_wasserstein_is_seeded(gaussians):
    A, B = gaussians
    assert sliced_wasserstein(A, B, random_state=4) == sliced_wasserstein(A, B, random_state=4)


# --- two_sample_auc --------------------------------------------------------------------


@pytest.mark.parametrize("classifier", ["knn", "logreg"])
def test_auc_same_distribution_is_chance(gaussians, classifier):
    A, B = gaussians
    assert two_sample_auc(A, B[:400], classifier=classifier) == pytest.approx(0.5, abs=0.1)


@pytest.mark.parametrize("classifier", ["knn", "logreg"])
def test_auc_separated_samples(gaussians, classifier):
    A, B = gaussians
    assert two_sample_auc(A[:300], shifted(B, 5.0), classifier=classifier) > 0.95


def test_auc_tiny_samples_still_work():
    rng = np.random.default_rng(0)
    auc = two_sample_auc(rng.normal(size=(3, 2)), rng.normal(size=(2, 2)) + 10.0, cv=5)
    assert 0.0 <= auc <= 1.0


def test_auc_rejects_bad_input():
    with pytest.raises(ValueError, match="B needs at least 2 rows"):
        two_sample_auc(np.zeros((5, 2)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="classifier"):
        two_sample_auc(np.zeros((5, 2)), np.zeros((5, 2)), classifier="svm")


# --- gene_fidelity ---------------------------------------------------------------------


def test_gene_fidelity_same_profile(cell_types):
    real, other, synthetic, _ = cell_types
    scores = gene_fidelity(real, synthetic, other_real=other)
    assert set(scores) == {
        "mean_pearson",
        "mean_spearman",
        "var_pearson",
        "var_spearman",
        "dropout_pearson",
        "dropout_spearman",
        "marker_overlap",
    }
    assert scores["mean_pearson"] > 0.95
    assert scores["marker_overlap"] > 0.7
    assert scores["dropout_spearman"] > 0.8


def test_gene_fidelity_bootstrap_of_real_cells(cell_types):
    real, other, _, _ = cell_types
    resample = real[np.random.default_rng(0).integers(0, len(real), len(real))]
    scores = gene_fidelity(real, resample, other_real=other)
    assert scores["mean_pearson"] > 0.95
    assert scores["marker_overlap"] > 0.7


def test_gene_fidelity_shuffled_profile(cell_types):
    real, other, synthetic, shuffled = cell_types
    good = gene_fidelity(real, synthetic, other_real=other)
    bad = gene_fidelity(real, shuffled, other_real=other)
    assert bad["mean_pearson"] < 0.5
    assert bad["marker_overlap"] < 0.45
    assert bad["mean_spearman"] < good["mean_spearman"] - 0.3


def test_gene_fidelity_without_other_real_has_no_marker_overlap(cell_types):
    real, _, synthetic, _ = cell_types
    assert "marker_overlap" not in gene_fidelity(real, synthetic)


def test_gene_fidelity_drops_constant_genes(cell_types):
    real, other, synthetic, _ = cell_types
    pad = [np.hstack([X, np.zeros((len(X), 5), dtype=X.dtype)]) for X in (real, other, synthetic)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = gene_fidelity(real, synthetic, other_real=other)
        padded = gene_fidelity(pad[0], pad[2], other_real=pad[1])
        # Normalized values with a gene fixed at 2.0 everywhere (counts=False).
        fixed = [np.hstack([np.log1p(X), np.full((len(X), 1), 2.0)]) for X in (real, synthetic)]
        normalized = gene_fidelity(fixed[0], fixed[1], counts=False)
    assert padded == pytest.approx(plain, rel=1e-12)
    assert not np.isnan(list(normalized.values())).any()
    assert normalized == pytest.approx(
        gene_fidelity(np.log1p(real), np.log1p(synthetic), counts=False), rel=1e-12
    )


def test_gene_fidelity_keeps_genes_constant_at_different_levels():
    # Zero in every real cell but 3 in every synthetic cell: a real mismatch, so it is kept.
    rng = np.random.default_rng(0)
    real = rng.normal(np.arange(1.0, 6.0), 1.0, size=(50, 5))
    synthetic = real + rng.normal(0.0, 0.01, size=real.shape)
    real[:, 0], synthetic[:, 0] = 0.0, 3.0
    assert gene_fidelity(real[:, 1:], synthetic[:, 1:], counts=False)["mean_pearson"] > 0.99
    assert gene_fidelity(real, synthetic, counts=False)["mean_pearson"] < 0.9


def test_gene_fidelity_too_few_genes_gives_nan_without_warnings():
    real = np.array([[1.0, 0.0, 2.0, 0.0], [3.0, 0.0, 1.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = gene_fidelity(real, real[::-1], other_real=real + 1.0, n_markers=2)
    assert np.isnan(scores["mean_pearson"]) and np.isnan(scores["dropout_spearman"])
    assert scores["marker_overlap"] == 1.0


@pytest.mark.parametrize("counts", [True, False])
def test_gene_fidelity_sparse_equals_dense(cell_types, counts):
    # counts=False on raw integers has many exactly tied variances: Spearman must agree too.
    real, other, synthetic, _ = cell_types
    dense = gene_fidelity(real, synthetic, other_real=other, counts=counts)
    sparse = gene_fidelity(
        sp.csr_matrix(real), sp.csc_matrix(synthetic), other_real=sp.coo_array(other), counts=counts
    )
    assert sparse == pytest.approx(dense, rel=1e-12)


# --- downstream_scores -----------------------------------------------------------------


def test_downstream_scores_hand_computed():
    y_true = ["a", "a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "b", "b", "c", "c"]
    # a: P=1, R=2/3 -> F1=0.8; b: P=1/2, R=1/2 -> 0.5; c: P=1/2, R=1 -> 2/3.
    scores = downstream_scores(y_true, y_pred, rare_classes=["b", "c"])
    assert scores["per_class_f1"] == pytest.approx({"a": 0.8, "b": 0.5, "c": 2 / 3})
    assert scores["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert scores["rare_macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert scores["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)


def test_downstream_scores_without_rare_classes_and_unpredicted_class():
    scores = downstream_scores([0, 0, 1, 1], [0, 0, 0, 0])
    assert scores["per_class_f1"] == pytest.approx({0: 2 / 3, 1: 0.0})
    assert scores["balanced_accuracy"] == pytest.approx(0.5)
    assert np.isnan(scores["rare_macro_f1"])


def test_downstream_scores_rare_class_missing_from_y_true():
    with pytest.warns(UserWarning, match=r"\['z'\] do not occur in y_true"):
        scores = downstream_scores(["a", "b", "b"], ["a", "b", "a"], rare_classes=["a", "z"])
    assert scores["rare_macro_f1"] == pytest.approx(2 / 3)
    with pytest.warns(UserWarning):
        assert np.isnan(downstream_scores(["a"], ["a"], rare_classes=["z"])["rare_macro_f1"])


# --- ReferenceEmbedding ----------------------------------------------------------------


@pytest.fixture(scope="module")
def two_classes():
    p = profiles(n_types=2)
    X = np.vstack([poisson_cells(p[0], 150, seed=7), poisson_cells(p[1], 150, seed=8)])
    return X, np.repeat([0, 1], 150)


def test_embedding_separates_classes_on_pc1(two_classes):
    X, y = two_classes
    Z = ReferenceEmbedding(n_top_genes=100, n_components=10).fit(X).transform(X)
    assert Z.shape == (len(X), 10)
    pc1 = Z[:, 0]
    pooled_sd = np.sqrt((pc1[y == 0].var() + pc1[y == 1].var()) / 2)
    assert abs(pc1[y == 0].mean() - pc1[y == 1].mean()) > 2 * pooled_sd


def test_embedding_sparse_equals_dense(two_classes):
    X, _ = two_classes
    emb = ReferenceEmbedding(n_top_genes=100, n_components=10).fit(X)
    np.testing.assert_allclose(emb.transform(sp.csr_matrix(X)), emb.transform(X), atol=1e-10)
    emb_sparse = ReferenceEmbedding(n_top_genes=100, n_components=10).fit(sp.csc_matrix(X))
    np.testing.assert_array_equal(emb_sparse.genes_, emb.genes_)
    np.testing.assert_allclose(emb_sparse.transform(X), emb.transform(X), atol=1e-8)


def test_embedding_selects_high_variance_genes():
    rng = np.random.default_rng(0)
    sd = np.ones(30)
    high = np.array([3, 11, 17, 28])
    sd[high] = [4.0, 5.0, 6.0, 7.0]
    X = rng.normal(10.0, sd, size=(200, 30))
    emb = ReferenceEmbedding(n_top_genes=4, n_components=2, counts=False).fit(X)
    np.testing.assert_array_equal(emb.genes_, high)
    assert emb.mean_.shape == emb.scale_.shape == (4,)


def test_embedding_caps_components_and_clips(two_classes):
    X, _ = two_classes
    emb = ReferenceEmbedding(n_top_genes=8, n_components=50).fit(X[:5])
    assert emb.n_components_ == 4 and emb.transform(X).shape == (len(X), 4)
    outlier = np.zeros((1, 3))
    outlier[0, 0] = 1e6
    base = np.random.default_rng(0).normal(size=(20, 3))
    emb = ReferenceEmbedding(n_top_genes=3, n_components=2, counts=False).fit(base)
    # The outlier's z-score is clipped at 10, so its embedding stays bounded.
    assert np.abs(emb.transform(outlier)).max() < 10 * np.sqrt(3) + 1


def test_embedding_does_not_modify_input(two_classes):
    X, _ = two_classes
    for data in (X.astype(float), sp.csr_matrix(X, dtype=float)):
        before = data.copy()
        emb = ReferenceEmbedding(n_top_genes=50, n_components=5).fit(data)
        emb.transform(data)
        ReferenceEmbedding(n_top_genes=50, n_components=5, counts=False).fit(data).transform(data)
        if sp.issparse(data):
            assert (data != before).nnz == 0
        else:
            np.testing.assert_array_equal(data, before)


def test_embedding_rejects_wrong_gene_count(two_classes):
    X, _ = two_classes
    emb = ReferenceEmbedding(n_top_genes=20, n_components=3).fit(X)
    with pytest.raises(ValueError, match="genes"):
        emb.transform(X[:, :-1])


def test_memorization_tells_copies_from_new_cells():
    from scld_aug.metrics import memorization

    rng = np.random.default_rng(1)
    train, held_out = rng.normal(size=(200, 8)), rng.normal(size=(100, 8))
    copies = memorization(train, train[rng.integers(200, size=150)], held_out)
    assert copies["ratio"] == 0.0 and copies["copies"] == 1.0
    jittered = memorization(train, train[:150] + 0.05 * rng.normal(size=(150, 8)), held_out)
    assert jittered["ratio"] < 0.2 and jittered["copies"] == 0.0
    fresh = memorization(train, rng.normal(size=(150, 8)), held_out)
    assert 0.8 < fresh["ratio"] < 1.25
    assert fresh["held_out_median"] == copies["held_out_median"] > 0
    # Duplicates embedded in another batch of rows differ by rounding, not by a cell.
    rounded = train[:150] * (1 + 1e-12 * rng.standard_normal((150, 8)))
    assert memorization(train, rounded, held_out)["copies"] == 1.0


def test_density_coverage_separate_fidelity_from_diversity():
    from scld_aug.metrics import density_coverage

    rng = np.random.default_rng(2)
    real = rng.normal(size=(300, 4))
    same = density_coverage(real, rng.normal(size=(300, 4)))
    assert same["precision"] > 0.8 and same["recall"] > 0.8 and same["coverage"] > 0.8
    assert 0.6 < same["density"] < 1.5
    collapsed = density_coverage(real, real[:5].repeat(60, axis=0))  # a few cells, repeated
    # Faithful (every cell lies on real cells) but not diverse: 5 distinct cells cover a
    # few real neighbourhoods, and hardly any real cell lies near a synthetic one.
    assert collapsed["precision"] == 1.0 and collapsed["coverage"] < 0.2
    assert collapsed["recall"] < 0.05 and collapsed["density"] > same["density"]
    off = density_coverage(real, rng.normal(loc=6.0, size=(300, 4)))
    assert off["precision"] < 0.05 and off["coverage"] < 0.05


def test_conditional_fidelity_names_the_confused_type():
    from sklearn.neighbors import KNeighborsClassifier

    from scld_aug.metrics import conditional_fidelity

    real = np.array([[0.0], [0.2], [5.0], [5.2], [10.0], [10.2]])
    classifier = KNeighborsClassifier(1).fit(real, [1, 1, 2, 2, 3, 3])
    synthetic = np.array([[0.1], [4.9], [5.1], [5.0], [10.1], [9.9], [5.1], [10.0]])
    labels = [1, 1, 2, 2, 3, 3, 3, 3]
    result = conditional_fidelity(classifier, synthetic, labels)
    assert result[1] == {"n": 2, "recognised": 0.5, "confused_with": 2, "confusion": 0.5}
    assert result[2] == {"n": 2, "recognised": 1.0, "confused_with": None, "confusion": 0.0}
    assert result[3]["recognised"] == 0.75 and result[3]["confused_with"] == 2
