"""Small preprocessing helpers for the classifier side of a Pipeline."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import FunctionTransformer


def log_normalize(X, target_sum: float = 1e4):
    """``log1p(x / library_size * target_sum)`` per cell; sparse input stays sparse.

    Parameters
    ----------
    X : {ndarray, sparse matrix} of shape (n_cells, n_genes)
        Raw counts.
    target_sum : float, default=1e4
        Counts per cell after scaling.

    Returns
    -------
    X_norm : same container as ``X``, float64

    Examples
    --------
    >>> import numpy as np
    >>> log_normalize(np.array([[1, 3], [0, 0]])).round(3)
    array([[7.824, 8.923],
           [0.   , 0.   ]])
    """
    library = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    scale = np.divide(target_sum, library, out=np.zeros_like(library), where=library > 0)
    if sp.issparse(X):
        out = sp.csr_matrix(sp.diags(scale) @ sp.csr_matrix(X, dtype=np.float64))
        out.data = np.log1p(out.data)
        return out
    return np.log1p(np.asarray(X, dtype=np.float64) * scale[:, None])


def log_normalizer(target_sum: float = 1e4) -> FunctionTransformer:
    """A Pipeline step applying :func:`log_normalize` (picklable, sparse-aware).

    Examples
    --------
    >>> from imblearn.pipeline import Pipeline
    >>> from sklearn.linear_model import LogisticRegression
    >>> from scld_aug import SCLDSampler
    >>> pipe = Pipeline([("aug", SCLDSampler()), ("norm", log_normalizer()),
    ...                  ("clf", LogisticRegression(max_iter=1000))])
    """
    return FunctionTransformer(
        log_normalize, kw_args={"target_sum": target_sum}, accept_sparse=True
    )
