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
    decoded = model.transform(torch.zeros(len(y), panel.n_outputs)).double().numpy()
    dispersion = np.ones(panel.n_outputs)
    rng = np.random.default_rng(0)
    libraries = values.sum(1) if model.uses_library else None
    cells = model.decode(decoded[:5], dispersion, panel, 1, "sample", rng, libraries)
    assert cells.shape == (5, 30)
    if name == "nb":  # sampled counts come as canonical CSR with integer values
        assert sp.isspmatrix_csr(cells) and cells.has_canonical_format
        assert (cells.data > 0).all() and np.array_equal(cells.data, np.round(cells.data))
        cells = cells.toarray()
    assert np.isfinite(cells).all()
    loglik = model.log_likelihood(
        torch.from_numpy(decoded).float(),
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
    with pytest.raises(ValueError, match="negative values"):
        nb.check_values(np.array([1.0, -2.0]))
    with pytest.raises(ValueError, match="non-integer values"):
        nb.check_values(np.array([1.0, 2.5]))
    with pytest.raises(ValueError, match="likelihood must be one of"):
        likelihoods.get("poisson")
    assert likelihoods.for_data(True) == "nb" and likelihoods.for_data(False) == "gaussian"
