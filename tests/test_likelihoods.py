"""Each likelihood owns its part of the pipeline; the two behave as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scld_aug import likelihoods
from scld_aug.genes import GenePanel
from scld_aug.likelihoods.base import Likelihood
from tests.conftest import make_counts


@pytest.mark.parametrize("name", sorted(likelihoods.LIKELIHOODS))
def test_every_likelihood_implements_the_whole_interface(name):
    model = likelihoods.get(name)
    for method in (
        "output_dtype",
        "gene_statistics",
        "other_genes",
        "output_prior",
        "encoder_input",
        "decoder_target",
        "log_likelihood",
        "decode",
    ):
        assert getattr(type(model), method) is not getattr(Likelihood, method), method


@pytest.mark.parametrize("name", sorted(likelihoods.LIKELIHOODS))
def test_panel_encode_decode_round_trip_shapes(name):
    X, y = make_counts(sizes=(40, 20), n_genes=30)
    values = X.astype(np.float64) if name == "nb" else np.log1p(X.astype(np.float64))
    import scipy.sparse as sp

    matrix = sp.csr_matrix(values.astype(np.float32))
    codes = np.unique(y, return_inverse=True)[1]
    model = likelihoods.get(name)
    library = values.sum(1) if model.uses_library else None
    panel = GenePanel.fit(matrix, codes, 2, np.full(len(y), 1 / len(y)), library, 10, name)
    modelled = values[:, panel.genes]
    x = panel.encoder_input(modelled, library)
    other = panel.other_totals(panel.modelled(matrix), library)
    target = panel.decoder_target(modelled, other)
    assert x.dtype == target.dtype == np.float32
    assert target.shape == (len(y), panel.n_outputs)
    decoded = model.transform(torch.zeros(len(y), panel.n_outputs))
    dispersion = torch.ones(panel.n_outputs)
    generator = torch.Generator().manual_seed(0)
    libraries = values.sum(1) if model.uses_library else None
    cells = model.decode(decoded[:5], dispersion, panel, 1, "sample", generator, libraries)
    assert cells.shape == (5, 30)
    if name == "nb":  # sampled counts come as canonical CSR with integer values
        assert sp.isspmatrix_csr(cells) and cells.has_canonical_format
        assert (cells.data > 0).all() and np.array_equal(cells.data, np.round(cells.data))
        cells = cells.toarray()
    assert np.isfinite(cells).all()
    loglik = model.log_likelihood(
        decoded,
        torch.from_numpy(target),
        torch.zeros(panel.n_outputs),
        torch.from_numpy(np.maximum(values.sum(1), 1)).float() if model.uses_library else None,
    )
    assert loglik.shape == (len(y),) and torch.isfinite(loglik).all()


def test_output_dtypes_and_modes():
    nb, gaussian = likelihoods.get("nb"), likelihoods.get("gaussian")
    assert nb.output_dtype(np.dtype("int32"), "sample") == np.int32
    assert nb.output_dtype(np.dtype("int32"), "mean") == np.float64
    assert gaussian.output_dtype(np.dtype("int64"), "sample") == np.float64
    assert gaussian.output_dtype(np.dtype("float32"), "sample") == np.float32
    with pytest.raises(ValueError, match="output='counts' needs a generator trained on counts"):
        gaussian.check_output("counts")
    nb.check_values(None)  # count data
    with pytest.raises(ValueError, match="the value -2, which is negative"):
        nb.check_values(np.float64(-2.0))
    with pytest.raises(ValueError, match="the value 2.5, which is not a whole number"):
        nb.check_values(np.float64(2.5))
    gaussian.check_values(np.float64(2.5))  # anything finite
    with pytest.raises(ValueError, match="likelihood must be one of"):
        likelihoods.get("poisson")
    assert likelihoods.for_data(True) == "nb" and likelihoods.for_data(False) == "gaussian"


def test_sampled_counts_follow_the_negative_binomial_model():
    """Means, variances and the covariance of two 'other' genes (which share the gamma draw
    of their total) of many sampled cells match the model's, within 5 standard errors."""
    import scipy.sparse as sp

    from scld_aug.genes import GenePanel

    genes, rest = np.array([0, 2, 5]), np.array([1, 3, 4, 6])
    profile = np.array([[0.5, 0.3, 0.0, 0.2]])  # gene 4 is not expressed by the class
    empty = np.zeros((1, 0), dtype=np.float32)
    panel = GenePanel(
        n_genes=7, likelihood="nb", genes=genes, center=np.zeros(3, np.float32),
        scale=np.ones(3, np.float32), rest=rest, rest_profile=profile, rest_spread=empty,
        rest_zero_rate=empty, lower=np.zeros(0), upper=np.zeros(0),
        output_prior=np.zeros(4, np.float32),
    )  # fmt: skip
    proportions = np.array([0.05, 0.25, 0.1, 0.6])  # 3 modelled genes, then the others' total
    theta = np.array([0.5, 2.0, 10.0, 3.0])
    library, n = 40.0, 40_000
    decoded = torch.log(torch.tensor(proportions, dtype=torch.float32)).expand(n, -1)
    cells = likelihoods.get("nb").decode(
        decoded, torch.tensor(theta, dtype=torch.float32), panel, 0, "sample",
        torch.Generator().manual_seed(0), np.array([library]),
    )  # fmt: skip
    assert sp.isspmatrix_csr(cells) and cells.has_canonical_format
    cells = cells.toarray()
    mu = np.zeros(7)
    mu[genes] = library * proportions[:3]
    mu[rest] = library * proportions[3] * profile[0]
    shape = np.zeros(7)
    shape[genes], shape[rest] = theta[:3], theta[3]
    var = mu + np.divide(mu**2, shape, out=np.zeros(7), where=shape > 0)
    assert (cells[:, 4] == 0).all()
    seen = [g for g in range(7) if g != 4]
    z_mean = (cells.mean(0) - mu)[seen] / np.sqrt(var[seen] / n)
    # Var of a sample variance: (mu4 - sigma^4) / n, bounded here by a generous 10 sigma^4.
    z_var = (cells.var(0) - var)[seen] / np.sqrt(10 * var[seen] ** 2 / n)
    cov = np.cov(cells[:, 1], cells[:, 3])[0, 1]
    expected_cov = mu[1] * mu[3] / theta[3]
    z_cov = (cov - expected_cov) / np.sqrt(var[1] * var[3] * 3 / n)
    assert np.abs(z_mean).max() < 5, z_mean
    assert np.abs(z_var).max() < 5, z_var
    assert abs(z_cov) < 5, z_cov


def test_other_genes_are_drawn_with_their_overdispersion():
    """With ``rest_overdispersion`` phi, another gene's variance grows to
    mu + mu^2 ((1 + 1/theta_total)(1 + phi) - 1); the mean and the covariance of two other
    genes (their shared total) stay as before, and phi = 0 is Poisson around the share."""
    from scld_aug.genes import GenePanel

    genes, rest = np.array([0, 2]), np.array([1, 3, 4])
    profile = np.array([[0.5, 0.3, 0.2]])
    phi = np.array([2.0, 0.0, 0.5])
    empty = np.zeros((1, 0), dtype=np.float32)
    panel = GenePanel(
        n_genes=5, likelihood="nb", genes=genes, center=np.zeros(2, np.float32),
        scale=np.ones(2, np.float32), rest=rest, rest_profile=profile, rest_spread=empty,
        rest_zero_rate=empty, lower=np.zeros(0), upper=np.zeros(0),
        output_prior=np.zeros(3, np.float32), rest_overdispersion=phi,
    )  # fmt: skip
    proportions = np.array([0.2, 0.2, 0.6])
    theta = np.array([2.0, 2.0, 4.0])
    library, n = 30.0, 60_000
    decoded = torch.log(torch.tensor(proportions, dtype=torch.float32)).expand(n, -1)
    cells = likelihoods.get("nb").decode(
        decoded, torch.tensor(theta, dtype=torch.float32), panel, 0, "sample",
        torch.Generator().manual_seed(1), np.array([library]),
    ).toarray()  # fmt: skip
    mu = library * proportions[2] * profile[0]
    var = mu + mu**2 * ((1 + 1 / theta[2]) * (1 + phi) - 1)
    x = cells[:, rest]
    z_mean = (x.mean(0) - mu) / np.sqrt(var / n)
    z_var = (x.var(0) - var) / np.sqrt(10 * var**2 / n)
    cov = np.cov(x[:, 0], x[:, 2])[0, 1]
    z_cov = (cov - mu[0] * mu[2] / theta[2]) / np.sqrt(var[0] * var[2] * 3 / n)
    assert np.abs(z_mean).max() < 5, z_mean
    assert np.abs(z_var).max() < 5, z_var
    assert abs(z_cov) < 5, z_cov
    # The overdispersed gene is visibly wider than a Poisson share would make it.
    assert x[:, 0].var() > 1.5 * (mu[0] + mu[0] ** 2 / theta[2])


def test_overdispersion_of_the_other_genes_is_estimated_within_types():
    """Gamma-Poisson counts around each type's composition of many genes: the estimate
    recovers each gene's 1/theta, and differences between the types' compositions add
    nothing to it."""
    import scipy.sparse as sp

    from scld_aug.statistics import MAX_OVERDISPERSION, class_composition

    rng = np.random.default_rng(0)
    n, g = 4000, 200
    codes = rng.integers(0, 2, n)
    share = np.vstack([rng.dirichlet(np.ones(g)), rng.dirichlet(np.ones(g))])
    phi = np.resize([0.0, 0.25, 0.5, 1.0, 2.0], g)
    shape = 1 / np.maximum(phi, 1e-12)
    draws = np.where(phi > 0, rng.gamma(shape, 1 / shape, size=(n, g)), 1.0)
    totals = rng.integers(2000, 8000, n)
    X = sp.csr_matrix(rng.poisson(totals[:, None] * share[codes] * draws).astype(np.float32))
    composition, estimate = class_composition(X, codes, 2, np.arange(g))
    observed = np.vstack([np.asarray(X[codes == c].sum(0)).ravel() for c in (0, 1)])
    np.testing.assert_allclose(composition, observed / observed.sum(1, keepdims=True))
    for value in np.unique(phi):
        got = estimate[phi == value]
        assert abs(np.median(got) - value) <= 0.03 + 0.1 * value, (value, np.median(got))
    # A gene seen in one cell of 400 (a burst): an unbounded estimate, clipped; a gene
    # with the same count in every cell is less variable than Poisson: 0.
    burst = np.zeros((400, 2))
    burst[0, 0], burst[:, 1] = 3.0, 50.0
    _, out = class_composition(sp.csr_matrix(burst), np.zeros(400, dtype=int), 1, np.arange(2))
    assert out.tolist() == [MAX_OVERDISPERSION, 0.0]
