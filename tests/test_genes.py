"""The gene panel: what the networks read and reconstruct."""

import numpy as np
import scipy.sparse as sp

from scld_aug.data import library_sizes, sampling_weights
from scld_aug.genes import GenePanel
from tests.conftest import make_counts


def test_minibatches_from_the_modelled_genes_equal_those_from_all_genes():
    X, y = make_counts()
    X = sp.csr_matrix(X.astype(np.float32))
    classes, codes = np.unique(y, return_inverse=True)
    weights = sampling_weights(codes, len(classes), 1.0)
    library = library_sizes(X)
    panel = GenePanel.fit(X, codes, len(classes), weights, library, 50, "nb")
    modelled = panel.modelled(X)
    other = panel.other_totals(modelled, library)
    assert modelled.shape == (X.shape[0], 50) and len(panel.rest) == X.shape[1] - 50
    rows = np.arange(0, X.shape[0], 7)
    dense = X[rows].toarray()
    target = panel.decoder_target(modelled.take(rows), other[rows])
    # Modelled genes' counts, then the total of every other gene.
    assert np.array_equal(target[:, :-1], dense[:, panel.genes])
    assert np.array_equal(target[:, -1], dense.sum(1) - dense[:, panel.genes].sum(1))
    x = panel.encoder_input(modelled.take(rows), library[rows])
    assert x.dtype == np.float32 and x.flags["C_CONTIGUOUS"] and x.shape == (len(rows), 50)


def test_large_inputs_select_the_modelled_genes_per_minibatch_without_a_copy(
    counts_data, tiny_params, monkeypatch
):
    """Above COLUMN_COPY_BYTES the modelled columns are not copied; results are the same."""
    import scld_aug.data
    from scld_aug import SCLDSampler

    X, y = counts_data
    copied = SCLDSampler(random_state=0, **tiny_params).fit(X, y)
    monkeypatch.setattr(scld_aug.data, "COLUMN_COPY_BYTES", 0)
    matrix = sp.csr_matrix(X.astype(np.float32))
    rows = scld_aug.data.cell_rows(matrix).columns(np.arange(0, X.shape[1], 2))
    assert rows.matrix is matrix and rows.shape == (X.shape[0], X.shape[1] // 2)
    streamed = SCLDSampler(random_state=0, **tiny_params).fit(X, y)
    assert np.array_equal(streamed.generate(30, "type2"), copied.generate(30, "type2"))
