"""Metrics that compare synthetic cells with held-out real cells.

Distribution-level metrics (:func:`mmd_rbf`, :func:`sliced_wasserstein`,
:func:`two_sample_auc`), novelty (:func:`memorization`) and precision-recall style metrics
(:func:`density_coverage`) work on dense embedded cells, usually the output of a
:class:`ReferenceEmbedding` fitted on real training cells only, so real and synthetic cells
are compared in the same coordinates. :func:`conditional_fidelity` asks a classifier of
real cells which type each synthetic cell is. :func:`gene_fidelity` compares per-gene
statistics of one cell type, and :func:`downstream_scores` summarises a classifier trained
on augmented data.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numpy.typing import ArrayLike
from scipy.spatial.distance import pdist, squareform
from scipy.stats import pearsonr, spearmanr, wasserstein_distance
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from scld_aug.preprocessing import log_normalize

__all__ = [
    "ReferenceEmbedding",
    "conditional_fidelity",
    "density_coverage",
    "downstream_scores",
    "f1_intervals",
    "gene_fidelity",
    "memorization",
    "mmd_rbf",
    "nearest_distances",
    "sliced_wasserstein",
    "two_sample_auc",
]

Matrix = np.ndarray | sp.spmatrix | sp.sparray

# Kernel matrices grow quadratically; 2000 rows per sample keeps MMD under ~200 MB.
MMD_MAX_ROWS = 2000
# Standardized values are clipped so a few extreme cells cannot dominate the PCA.
Z_CLIP = 10.0


def _prepare(X: Matrix, counts: bool) -> np.ndarray | sp.csr_matrix:
    """Float64 values, log-normalized if ``counts``.

    Sparse output is a new canonical CSR matrix without explicit zeros, so its ``indices``
    count non-zeros. Dense output may be ``X`` itself (``counts=False``): never modify it.
    """
    if sp.issparse(X):
        if X.ndim != 2:
            raise ValueError(f"expected a 2-D matrix, got shape {X.shape}")
        out = log_normalize(X) if counts else sp.csr_matrix(X, dtype=np.float64, copy=True)
        out.sum_duplicates()
        out.eliminate_zeros()
        return out
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D array (cells x genes), got shape {X.shape}")
    return log_normalize(X) if counts else X


def _mean_var(X: np.ndarray | sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and (population) variance; sparse input is never densified.

    Dense input uses the same sums as sparse input (E[x^2] - E[x]^2, rows summed in
    order), so both give identical numbers and exact ties stay ties for Spearman ranks.
    """
    if sp.issparse(X):
        s1 = np.asarray(X.sum(axis=0)).ravel()
        s2 = np.asarray(X.multiply(X).sum(axis=0)).ravel()
    else:
        s1, s2 = X.sum(axis=0), np.square(X).sum(axis=0)
    mean = s1 / X.shape[0]
    return mean, np.maximum(s2 / X.shape[0] - mean**2, 0.0)


def _dense_rows(X, name: str) -> np.ndarray:
    X = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (cells x features), got shape {X.shape}")
    return X


def _check_pair(A, B, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
    A, B = _dense_rows(A, "A"), _dense_rows(B, "B")
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"A and B have different numbers of columns: {A.shape[1]} != {B.shape[1]}")
    for name, M in (("A", A), ("B", B)):
        if M.shape[0] < min_rows:
            raise ValueError(f"{name} needs at least {min_rows} rows, got {M.shape[0]}")
    return A, B


class ReferenceEmbedding(TransformerMixin, BaseEstimator):
    """Shared low-dimensional embedding fitted on real training cells only.

    Log-normalization (for counts), the ``n_top_genes`` most variable genes, per-gene
    standardization (clipped at ±10) and PCA, all learned from the real cells, so real and
    synthetic cells are later embedded by exactly the same map.

    Parameters
    ----------
    n_top_genes : int, default=2000
        Number of genes with the highest variance (of the log-normalized values) to keep.
    n_components : int, default=50
        Number of principal components; capped at the number of selected genes and at
        ``n_cells - 1``.
    counts : bool, default=True
        Whether the input holds raw counts, to be log-normalized with
        :func:`scld_aug.preprocessing.log_normalize`; ``False`` uses the values as given.
    random_state : int, default=0
        Seed of the PCA solver.

    Attributes
    ----------
    genes_ : ndarray of shape (n_selected_genes,)
        Column indices of the selected genes, in increasing order.
    mean_, scale_ : ndarray of shape (n_selected_genes,)
        Mean and standard deviation (0 replaced by 1) of the selected genes.
    pca_ : sklearn.decomposition.PCA
        The fitted PCA.
    n_components_ : int
        Number of output columns.
    n_features_in_ : int
        Number of genes seen in :meth:`fit`.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).poisson(2.0, size=(100, 40))
    >>> emb = ReferenceEmbedding(n_top_genes=20, n_components=5).fit(X)
    >>> emb.genes_.shape, emb.transform(X).shape
    ((20,), (100, 5))
    """

    def __init__(
        self,
        n_top_genes: int = 2000,
        n_components: int = 50,
        counts: bool = True,
        random_state: int = 0,
    ) -> None:
        self.n_top_genes = n_top_genes
        self.n_components = n_components
        self.counts = counts
        self.random_state = random_state

    def fit(self, X_real: Matrix, y=None) -> ReferenceEmbedding:
        """Learn gene selection, standardization and PCA from real cells.

        Parameters
        ----------
        X_real : {ndarray, sparse matrix} of shape (n_cells, n_genes)
            Real training cells (counts if ``counts=True``).
        y : ignored

        Returns
        -------
        self : ReferenceEmbedding
        """
        if self.n_top_genes < 1 or self.n_components < 1:
            raise ValueError("n_top_genes and n_components must be positive integers")
        values = _prepare(X_real, self.counts)
        n_cells, n_genes = values.shape
        if n_cells < 2:
            raise ValueError(f"ReferenceEmbedding needs at least 2 cells, got {n_cells}")
        _, var = _mean_var(values)
        n_top = min(self.n_top_genes, n_genes)
        # Stable sort: ties go to the lower gene index, so the selection is reproducible.
        self.genes_ = np.sort(np.argsort(-var, kind="stable")[:n_top])
        sub = self._selected(values)
        self.mean_ = sub.mean(axis=0)
        std = sub.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0)
        self.n_components_ = min(self.n_components, n_top, n_cells - 1)
        self.pca_ = PCA(n_components=self.n_components_, random_state=self.random_state)
        self.pca_.fit(self._standardize(sub))
        self.n_features_in_ = n_genes
        return self

    def transform(self, X: Matrix) -> np.ndarray:
        """Embed cells with the map learned in :meth:`fit`.

        Parameters
        ----------
        X : {ndarray, sparse matrix} of shape (n_cells, n_genes)
            Cells with the same genes, in the same order, as in :meth:`fit`.

        Returns
        -------
        embedding : ndarray of shape (n_cells, ``n_components_``)
        """
        check_is_fitted(self, "pca_")
        values = _prepare(X, self.counts)
        if values.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {values.shape[1]} genes, but ReferenceEmbedding was fitted with "
                f"{self.n_features_in_}"
            )
        return self.pca_.transform(self._standardize(self._selected(values)))

    def _selected(self, values: np.ndarray | sp.csr_matrix) -> np.ndarray:
        # Only the selected genes are densified; fancy indexing copies, so the input is safe.
        sub = values[:, self.genes_]
        return sub.toarray() if sp.issparse(sub) else sub

    def _standardize(self, sub: np.ndarray) -> np.ndarray:
        sub -= self.mean_
        sub /= self.scale_
        return np.clip(sub, -Z_CLIP, Z_CLIP, out=sub)


def mmd_rbf(A: np.ndarray, B: np.ndarray, bandwidth: float | None = None) -> float:
    """Squared maximum mean discrepancy with an RBF kernel (unbiased estimator).

    The kernel is ``k(x, y) = exp(-||x - y||^2 / (2 h^2))``. Within-sample means exclude
    the diagonal, so the estimate is unbiased and can be slightly negative when the two
    samples come from the same distribution.

    Parameters
    ----------
    A, B : ndarray of shape (n_a, n_features) and (n_b, n_features)
        Two samples, e.g. embedded real and synthetic cells; each needs at least 2 rows.
        A sample with more than 2000 rows is subsampled to 2000 rows (seed 0) to bound the
        cost of the kernel matrix.
    bandwidth : float, optional
        Kernel bandwidth ``h``. ``None`` uses the median heuristic: the median Euclidean
        distance between distinct rows of the pooled sample (the median of the non-zero
        distances if that is 0; if all rows coincide, ``h = 1``).

    Returns
    -------
    mmd2 : float

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> A, B = rng.normal(size=(200, 3)), rng.normal(size=(200, 3))
    >>> abs(mmd_rbf(A, B)) < 0.02, mmd_rbf(A, B + 3.0) > 0.3
    (True, True)
    """
    A, B = _check_pair(A, B, min_rows=2)
    if bandwidth is not None and not bandwidth > 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}")
    rng = np.random.default_rng(0)
    if A.shape[0] > MMD_MAX_ROWS:
        A = A[rng.choice(A.shape[0], MMD_MAX_ROWS, replace=False)]
    if B.shape[0] > MMD_MAX_ROWS:
        B = B[rng.choice(B.shape[0], MMD_MAX_ROWS, replace=False)]
    m = A.shape[0]
    # Condensed distances cover each pair of distinct rows once: no diagonal zeros.
    sq = pdist(np.vstack([A, B]), "sqeuclidean")
    if bandwidth is None:
        dist = np.sqrt(sq)
        bandwidth = float(np.median(dist))
        if bandwidth == 0:
            # Mostly duplicated rows; fall back to the scale of the distinct ones.
            positive = dist[dist > 0]
            bandwidth = float(np.median(positive)) if positive.size else 1.0
    sq *= -1.0 / (2.0 * bandwidth**2)
    # squareform puts zeros on the diagonal, which is what the unbiased sums need.
    K = squareform(np.exp(sq, out=sq))
    del sq
    n = K.shape[0] - m
    k_aa = K[:m, :m].sum() / (m * (m - 1))
    k_bb = K[m:, m:].sum() / (n * (n - 1))
    k_ab = K[:m, m:].mean()
    return float(k_aa + k_bb - 2.0 * k_ab)


def sliced_wasserstein(
    A: np.ndarray, B: np.ndarray, n_projections: int = 256, random_state: int = 0
) -> float:
    """Sliced Wasserstein-1 distance: mean 1-D Wasserstein distance over random directions.

    Both samples are projected on ``n_projections`` random unit vectors and
    :func:`scipy.stats.wasserstein_distance` is averaged over the projections. For 1-D data
    every direction is ±1, so the result is the exact Wasserstein-1 distance.

    Parameters
    ----------
    A, B : ndarray of shape (n_a, n_features) and (n_b, n_features)
        Two samples, e.g. embedded real and synthetic cells.
    n_projections : int, default=256
        Number of random directions.
    random_state : int, default=0
        Seed of the directions.

    Returns
    -------
    distance : float

    Examples
    --------
    >>> import numpy as np
    >>> a = np.arange(10.0)[:, None]
    >>> round(sliced_wasserstein(a, a + 2.0), 6)
    2.0
    """
    A, B = _check_pair(A, B, min_rows=1)
    if n_projections < 1:
        raise ValueError(f"n_projections must be a positive integer, got {n_projections}")
    directions = np.random.default_rng(random_state).standard_normal((n_projections, A.shape[1]))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    proj_a, proj_b = A @ directions.T, B @ directions.T
    return float(
        np.mean([wasserstein_distance(proj_a[:, j], proj_b[:, j]) for j in range(n_projections)])
    )


def two_sample_auc(
    A: np.ndarray,
    B: np.ndarray,
    classifier: str = "knn",
    cv: int = 5,
    random_state: int = 0,
) -> float:
    """Cross-validated ROC AUC of a classifier that tells sample A from sample B.

    0.5 means the samples are indistinguishable, 1.0 that they are fully separable (values
    a little below 0.5 are noise). The larger sample is subsampled to the size of the
    smaller one, so class imbalance cannot inflate the score.

    Parameters
    ----------
    A, B : ndarray of shape (n_a, n_features) and (n_b, n_features)
        Two samples, e.g. embedded real and synthetic cells; each needs at least 2 rows.
    classifier : {"knn", "logreg"}, default="knn"
        ``KNeighborsClassifier`` (at most 5 neighbours) or ``LogisticRegression``, each
        after a ``StandardScaler``.
    cv : int, default=5
        Number of stratified folds, capped at the size of the balanced samples.
    random_state : int, default=0
        Seed of the subsampling and of the fold shuffling.

    Returns
    -------
    auc : float
        ROC AUC of the pooled out-of-fold probabilities.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> A, B = rng.normal(size=(100, 4)), rng.normal(loc=4.0, size=(80, 4))
    >>> two_sample_auc(A, B) > 0.95, two_sample_auc(A, B, classifier="logreg") > 0.95
    (True, True)
    """
    if classifier not in ("knn", "logreg"):
        raise ValueError(f"classifier must be 'knn' or 'logreg', got {classifier!r}")
    if cv < 2:
        raise ValueError(f"cv must be at least 2, got {cv}")
    A, B = _check_pair(A, B, min_rows=2)
    rng = np.random.default_rng(random_state)
    n = min(A.shape[0], B.shape[0])
    if A.shape[0] > n:
        A = A[np.sort(rng.choice(A.shape[0], n, replace=False))]
    if B.shape[0] > n:
        B = B[np.sort(rng.choice(B.shape[0], n, replace=False))]
    X = np.vstack([A, B])
    y = np.repeat([0, 1], n)
    n_splits = min(cv, n)
    if classifier == "knn":
        # The smallest training fold holds n - ceil(n / n_splits) cells of each sample.
        n_train = 2 * (n - -(-n // n_splits))
        model = KNeighborsClassifier(n_neighbors=min(5, n_train))
    else:
        model = LogisticRegression(max_iter=1000)
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    proba = cross_val_predict(
        make_pipeline(StandardScaler(), model), X, y, cv=folds, method="predict_proba"
    )
    return float(roc_auc_score(y, proba[:, 1]))


def nearest_distances(query: np.ndarray, reference: np.ndarray, k: int = 1) -> np.ndarray:
    """Euclidean distances from each row of ``query`` to its ``k`` nearest rows of
    ``reference`` (ascending, shape ``(n_query, k)``).

    Exact duplicates are at distance 0. With ``query`` as its own reference, column 0 is
    each row itself and column 1 its nearest other row (leave-one-out).

    Examples
    --------
    >>> import numpy as np
    >>> points = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    >>> nearest_distances(points, points, k=2)[:, 1]
    array([1.        , 4.24264069, 1.        ])
    """
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=k).fit(reference)
    neighbours = index.kneighbors(query, return_distance=False)
    # Recomputed directly: the fast search's ||x||^2 + ||y||^2 - 2xy leaves rounding of
    # ~1e-6 on identical rows, which would hide exact copies.
    exact = np.linalg.norm(query[:, None, :] - reference[neighbours], axis=2)
    return np.sort(exact, axis=1)


def memorization(train: np.ndarray, synthetic: np.ndarray, held_out: np.ndarray) -> dict:
    """How close synthetic cells are to the cells they were learned from, against new cells.

    For each synthetic cell, the distance to its nearest training cell; for each held-out
    real cell (same type, not used for training), the same distance. A generator that makes
    new cells puts its cells as far from the training cells as new real cells are
    (``ratio`` near 1); one that copies puts them on top (``ratio`` near 0, and
    ``copies`` counts exact duplicates).

    Parameters
    ----------
    train, synthetic, held_out : ndarray of shape (n, n_features)
        Embedded training cells, synthetic cells and held-out real cells of one type.

    Returns
    -------
    dict
        ``ratio``: median synthetic distance / median held-out distance;
        ``synthetic_median``, ``held_out_median``: the two medians;
        ``copies``: share of synthetic cells at distance 0 from a training cell (up to a
        millionth of the held-out median: an exact duplicate embedded in another batch
        of rows differs by the embedding's rounding).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> train, held_out = rng.normal(size=(50, 5)), rng.normal(size=(30, 5))
    >>> memorization(train, train[:20].copy(), held_out)["ratio"]  # copies
    0.0
    >>> 0.7 < memorization(train, rng.normal(size=(40, 5)), held_out)["ratio"] < 1.3
    True
    """
    train, synthetic = _check_pair(train, synthetic, min_rows=1)
    train, held_out = _check_pair(train, held_out, min_rows=1)
    d_syn = nearest_distances(synthetic, train)[:, 0]
    d_held = nearest_distances(held_out, train)[:, 0]
    held_median = float(np.median(d_held))
    syn_median = float(np.median(d_syn))
    return {
        "ratio": syn_median / held_median if held_median > 0 else float("nan"),
        "synthetic_median": syn_median,
        "held_out_median": held_median,
        "copies": float(np.mean(d_syn <= 1e-6 * held_median)),
    }


def density_coverage(real: np.ndarray, synthetic: np.ndarray, k: int = 5) -> dict:
    """Precision, recall, density and coverage of synthetic cells against real ones.

    Every real cell gets a ball reaching its ``k``-th nearest real neighbour (and every
    synthetic cell one reaching its ``k``-th nearest synthetic neighbour). Precision is the
    share of synthetic cells inside some real ball and recall the share of real cells
    inside some synthetic ball (Kynkäänniemi et al. 2019); density counts how many real
    balls hold each synthetic cell (1 on average when synthetic cells are spread like real
    ones, above 1 when they crowd into dense regions) and coverage is the share of real
    cells whose ball holds a synthetic cell (Naeem et al. 2020). Coverage and recall are
    the diversity side: synthetic copies of a few real cells cover few of the others.

    Parameters
    ----------
    real, synthetic : ndarray of shape (n, n_features)
        Embedded real cells (e.g. held-out cells of a type) and synthetic cells of the type.
    k : int, default=5
        Neighbourhood size, capped at the sample sizes.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``density``, ``coverage``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> real = rng.normal(size=(200, 3))
    >>> same = density_coverage(real, rng.normal(size=(200, 3)))
    >>> narrow = density_coverage(real, 0.1 * rng.normal(size=(200, 3)))
    >>> same["coverage"] > 0.9, narrow["coverage"] < 0.3
    (True, True)
    """
    real, synthetic = _check_pair(real, synthetic, min_rows=2)
    k_real = min(k, real.shape[0] - 1)
    k_syn = min(k, synthetic.shape[0] - 1)
    # k + 1 neighbours: each cell is its own nearest neighbour.
    real_radius = nearest_distances(real, real, k_real + 1)[:, -1]
    syn_radius = nearest_distances(synthetic, synthetic, k_syn + 1)[:, -1]
    d = np.sqrt(
        np.maximum(
            (synthetic**2).sum(1)[:, None] + (real**2).sum(1)[None, :] - 2 * synthetic @ real.T,
            0.0,
        )
    )  # synthetic x real
    inside_real = d <= real_radius[None, :]
    return {
        "precision": float(inside_real.any(1).mean()),
        "recall": float((d <= syn_radius[:, None]).any(0).mean()),
        "density": float(inside_real.sum() / (k_real * synthetic.shape[0])),
        "coverage": float((d.min(0) <= real_radius).mean()),
    }


def conditional_fidelity(
    classifier: Any, synthetic: np.ndarray, labels: ArrayLike
) -> dict[Any, dict[str, Any]]:
    """Per type, the share of its synthetic cells that a classifier of real cells calls that
    type, and the type the others are most often taken for.

    Parameters
    ----------
    classifier : fitted classifier
        Trained on real cells only (e.g. logistic regression on embedded real training
        cells); its ``predict`` takes ``synthetic``.
    synthetic : array-like of shape (n_cells, n_features)
    labels : array-like of shape (n_cells,)
        The type each synthetic cell was generated as.

    Returns
    -------
    dict
        ``{type: {"n": cells, "recognised": share predicted as the type, "confused_with":
        the most frequent other prediction (None when all are recognised),
        "confusion": its share}}``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.neighbors import KNeighborsClassifier
    >>> real = np.array([[0.0], [0.1], [5.0], [5.1]])
    >>> classifier = KNeighborsClassifier(1).fit(real, ["a", "a", "b", "b"])
    >>> result = conditional_fidelity(classifier, np.array([[0.0], [4.9], [5.0]]), ["a", "a", "b"])
    >>> result["a"]
    {'n': 2, 'recognised': 0.5, 'confused_with': 'b', 'confusion': 0.5}
    """
    labels = np.asarray(labels)
    predicted = np.asarray(classifier.predict(synthetic))
    result = {}
    for label in dict.fromkeys(labels.tolist()):
        mine = predicted[labels == label]
        others = mine[mine != label]
        confused, share = None, 0.0
        if len(others):
            values, counts = np.unique(others, return_counts=True)
            confused = values[np.argmax(counts)]
            confused = confused.item() if isinstance(confused, np.generic) else confused
            share = float(counts.max() / len(mine))
        result[label] = {
            "n": int(len(mine)),
            "recognised": float(np.mean(mine == label)),
            "confused_with": confused,
            "confusion": share,
        }
    return result


def _gene_summary(X: np.ndarray | sp.csr_matrix) -> dict[str, np.ndarray]:
    """Per-gene mean, variance, fraction of zeros, minimum and maximum."""
    mean, var = _mean_var(X)
    if sp.issparse(X):
        # Canonical CSR without explicit zeros (see _prepare): stored entries are non-zeros.
        nonzero = np.bincount(X.indices, minlength=X.shape[1])
        low, high = X.min(axis=0).toarray().ravel(), X.max(axis=0).toarray().ravel()
    else:
        nonzero = np.count_nonzero(X, axis=0)
        low, high = X.min(axis=0), X.max(axis=0)
    return {
        "mean": mean,
        "var": var,
        "dropout": 1.0 - nonzero / X.shape[0],
        "low": low,
        "high": high,
    }


def _correlations(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Pearson and Spearman correlation; nan (without a warning) when undefined."""
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    return float(pearsonr(x, y)[0]), float(spearmanr(x, y)[0])


def _top_markers(mean_type: np.ndarray, mean_other: np.ndarray, n: int) -> np.ndarray:
    return np.argsort(-(mean_type - mean_other), kind="stable")[:n]


def gene_fidelity(
    real: Matrix,
    synthetic: Matrix,
    other_real: Matrix | None = None,
    n_markers: int = 50,
    counts: bool = True,
) -> dict[str, float]:
    """Gene-level agreement between real and synthetic cells of one cell type.

    Per-gene means, variances and dropout rates (fractions of zeros) of the real and the
    synthetic cells are correlated across genes, on log-normalized values if ``counts``.
    Genes constant over the pooled real and synthetic cells (e.g. never detected) are
    dropped first: they carry no information and would only inflate the correlations. A
    correlation is nan when fewer than 3 genes remain or one side has no spread.

    Parameters
    ----------
    real, synthetic : {ndarray, sparse matrix} of shape (n_real, n_genes), (n_synth, n_genes)
        Real and synthetic cells of the same cell type.
    other_real : {ndarray, sparse matrix} of shape (n_other, n_genes), optional
        Real cells of all other types; needed for ``marker_overlap``.
    n_markers : int, default=50
        Number of marker genes compared (capped at the number of genes).
    counts : bool, default=True
        Whether the inputs are raw counts, to be log-normalized with
        :func:`scld_aug.preprocessing.log_normalize`; ``False`` uses the values as given.

    Returns
    -------
    scores : dict of str to float
        ``mean_pearson``, ``mean_spearman``, ``var_pearson``, ``var_spearman``,
        ``dropout_pearson``, ``dropout_spearman`` and, with ``other_real``,
        ``marker_overlap``: the fraction of the top ``n_markers`` genes by (mean in the type
        minus mean in ``other_real``) shared by the real-based and synthetic-based lists.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> profile = rng.gamma(1.0, 2.0, 30)
    >>> real, synthetic = rng.poisson(profile, (200, 30)), rng.poisson(profile, (200, 30))
    >>> other = rng.poisson(profile[::-1], (200, 30))
    >>> scores = gene_fidelity(real, synthetic, other_real=other, n_markers=5)
    >>> scores["mean_pearson"] > 0.9, scores["marker_overlap"] >= 0.6
    (True, True)
    """
    if n_markers < 1:
        raise ValueError(f"n_markers must be a positive integer, got {n_markers}")
    real_values, synth_values = _prepare(real, counts), _prepare(synthetic, counts)
    if real_values.shape[1] != synth_values.shape[1]:
        raise ValueError(
            f"real and synthetic have different numbers of genes: "
            f"{real_values.shape[1]} != {synth_values.shape[1]}"
        )
    for name, values in (("real", real_values), ("synthetic", synth_values)):
        if values.shape[0] < 1:
            raise ValueError(f"{name} has no cells")
    r, s = _gene_summary(real_values), _gene_summary(synth_values)
    informative = ~((r["low"] == r["high"]) & (s["low"] == s["high"]) & (r["low"] == s["low"]))
    scores: dict[str, float] = {}
    for stat in ("mean", "var", "dropout"):
        pearson, spearman = _correlations(r[stat][informative], s[stat][informative])
        scores[f"{stat}_pearson"], scores[f"{stat}_spearman"] = pearson, spearman
    if other_real is not None:
        other_values = _prepare(other_real, counts)
        if other_values.shape[1] != real_values.shape[1] or other_values.shape[0] < 1:
            raise ValueError(
                f"other_real must have cells and {real_values.shape[1]} genes, "
                f"got shape {other_values.shape}"
            )
        mean_other, _ = _mean_var(other_values)
        n = min(n_markers, real_values.shape[1])
        shared = np.intersect1d(
            _top_markers(r["mean"], mean_other, n), _top_markers(s["mean"], mean_other, n)
        )
        scores["marker_overlap"] = shared.size / n
    return scores


def marker_expression(
    real: Matrix,
    real_labels: ArrayLike,
    synthetic: Matrix,
    synthetic_labels: ArrayLike,
    cell_types: Iterable,
    n_markers: int = 5,
    gene_names: ArrayLike | None = None,
    counts: bool = True,
) -> pd.DataFrame:
    """Each type's marker genes in its real and its synthetic cells: what a dot plot shows.

    A type's markers are the ``n_markers`` genes whose mean (log-normalized if ``counts``)
    in its real cells exceeds the mean in the real cells of every other type the most.

    Parameters
    ----------
    real, synthetic : {ndarray, sparse matrix} of shape (n_cells, n_genes)
    real_labels, synthetic_labels : array-like of shape (n_cells,)
    cell_types : iterable
        Types to describe; each needs real and synthetic cells.
    n_markers : int, default=5
    gene_names : array-like of shape (n_genes,) or None
        Names for the ``gene`` column (default: the gene's position).
    counts : bool, default=True
        Log-normalize first (:func:`scld_aug.preprocessing.log_normalize`).

    Returns
    -------
    table : pandas.DataFrame
        One row per type, marker and source (``"real"`` or ``"synthetic"``), with the
        ``mean`` expression and the ``fraction`` of cells that express the gene, and
        ``ratio``: the synthetic mean over the real one (on both rows of the pair).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.poisson(1.0, (60, 8)); X[:30, 2] += 20
    >>> y = np.array(["a"] * 30 + ["b"] * 30)
    >>> table = marker_expression(X, y, X[:30], y[:30], ["a"], n_markers=1)
    >>> table[["cell_type", "gene", "source", "ratio"]].to_dict("list")
    {'cell_type': ['a', 'a'], 'gene': ['2', '2'], 'source': ['real', 'synthetic'], 'ratio': [1.0, 1.0]}
    """
    real_values, synth_values = _prepare(real, counts), _prepare(synthetic, counts)
    real_labels, synthetic_labels = np.asarray(real_labels), np.asarray(synthetic_labels)
    names = (
        np.asarray(gene_names, dtype=str)
        if gene_names is not None
        else np.arange(real_values.shape[1]).astype(str)
    )
    rows = []
    for cell_type in cell_types:
        mine, theirs = real_labels == cell_type, real_labels != cell_type
        made = synthetic_labels == cell_type
        if not mine.any() or not made.any() or not theirs.any():
            raise ValueError(
                f"cell type {cell_type!r} needs real cells, synthetic cells and real cells of "
                "other types"
            )
        mean_type, _ = _mean_var(real_values[mine])
        mean_other = np.max(
            [_mean_var(real_values[real_labels == t])[0] for t in np.unique(real_labels[theirs])],
            axis=0,
        )
        markers = _top_markers(mean_type, mean_other, min(n_markers, len(mean_type)))
        for source, values in (("real", real_values[mine]), ("synthetic", synth_values[made])):
            chosen = values[:, markers]
            mean = np.asarray(chosen.mean(axis=0)).ravel()
            expressed = (chosen != 0).sum(axis=0) if sp.issparse(chosen) else (chosen != 0).sum(0)
            fraction = np.asarray(expressed).ravel() / values.shape[0]
            for gene, m, f in zip(names[markers], mean, fraction, strict=True):
                rows.append(
                    {"cell_type": cell_type, "gene": str(gene), "source": source, "mean": float(m),
                     "fraction": float(f)}
                )  # fmt: skip
    table = pd.DataFrame(rows)
    pair = table.pivot_table(index=["cell_type", "gene"], columns="source", values="mean")
    ratio = (pair["synthetic"] / pair["real"]).rename("ratio")
    return table.join(ratio, on=["cell_type", "gene"])


def f1_intervals(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    labels: Iterable,
    *,
    n_resamples: int = 1000,
    confidence_level: float = 0.95,
    random_state: int = 0,
) -> pd.DataFrame:
    """F1 of each label, and their mean, with percentile bootstrap intervals over cells.

    The cells (pairs of true and predicted label) are resampled with replacement; the
    interval says how much the score depends on which test cells a rare type happened to
    have, not how it varies between training runs (that needs several seeds). With the
    same ``random_state`` and number of cells, every call draws the same resamples, so the
    intervals of several methods scored on the same cells are paired.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_cells,)
        True and predicted labels.
    labels : iterable
        Labels to score (a label absent from both gets F1 0, as in ``zero_division=0``).
    n_resamples : int, default=1000
    confidence_level : float, default=0.95
    random_state : int, default=0

    Returns
    -------
    table : DataFrame
        One row per label and a last row ``"mean"`` (their mean F1); columns ``f1``,
        ``low`` and ``high``.

    Examples
    --------
    >>> y = ["a"] * 40 + ["b"] * 10
    >>> pred = ["a"] * 40 + ["b"] * 8 + ["a"] * 2  # two b cells missed
    >>> f1_intervals(y, pred, ["a", "b"]).round(2)
            f1   low  high
    a     0.98  0.94   1.0
    b     0.89  0.70   1.0
    mean  0.93  0.82   1.0
    """
    from scipy.stats import DegenerateDataWarning, bootstrap

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = list(labels)
    # Integer codes: the resamples are (n_resamples, n_cells) arrays, compared once per label.
    _, codes = np.unique(
        np.concatenate([y_true, y_pred, np.asarray(labels, dtype=y_true.dtype)]),
        return_inverse=True,
    )
    t, p = codes[: len(y_true)], codes[len(y_true) : 2 * len(y_true)]
    label_codes = codes[2 * len(y_true) :]

    def f1_of(code):
        def statistic(t, p, axis=-1):
            tp = ((t == code) & (p == code)).sum(axis)
            total = (t == code).sum(axis) + (p == code).sum(axis)  # 2 TP + FP + FN
            return np.divide(2.0 * tp, total, out=np.zeros(np.shape(tp)), where=total > 0)

        return statistic

    def mean_f1(t, p, axis=-1):
        return np.mean([f1_of(code)(t, p, axis) for code in label_codes], axis=0)

    rows = {}
    statistics = [(label, f1_of(code)) for label, code in zip(labels, label_codes, strict=True)]
    for name, statistic in [*statistics, ("mean", mean_f1)]:
        with warnings.catch_warnings():
            # A label never predicted nor present in any resample has the same F1 (0) in all.
            warnings.simplefilter("ignore", DegenerateDataWarning)
            result = bootstrap(
                (t, p),
                statistic,
                paired=True,
                vectorized=True,
                n_resamples=n_resamples,
                confidence_level=confidence_level,
                method="percentile",
                rng=np.random.default_rng(random_state),
            )
        interval = result.confidence_interval
        rows[name] = (float(statistic(t, p)), float(interval.low), float(interval.high))
    return pd.DataFrame.from_dict(rows, orient="index", columns=["f1", "low", "high"])


def downstream_scores(
    y_true: ArrayLike, y_pred: ArrayLike, rare_classes: Iterable | None = None
) -> dict[str, Any]:
    """Classification scores of a model trained on (augmented) data, rare classes apart.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_cells,)
        True and predicted labels.
    rare_classes : sequence of labels, optional
        Labels whose F1 scores are averaged into ``rare_macro_f1``. A label absent from
        ``y_true`` has no defined F1: it is left out with a ``UserWarning``.

    Returns
    -------
    scores : dict
        ``macro_f1`` (mean F1 over the labels present in ``y_true``), ``balanced_accuracy``,
        ``per_class_f1`` (label -> F1 for each label present in ``y_true``) and
        ``rare_macro_f1`` (mean F1 over ``rare_classes``; nan if none are given or none
        occur in ``y_true``).

    Examples
    --------
    >>> s = downstream_scores(list("aabbcc"), list("aabccc"), rare_classes=["c"])
    >>> round(s["macro_f1"], 4), round(s["balanced_accuracy"], 4), s["rare_macro_f1"]
    (0.8222, 0.8333, 0.8)
    >>> {label: round(f1, 3) for label, f1 in s["per_class_f1"].items()}
    {'a': 1.0, 'b': 0.667, 'c': 0.8}
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = np.unique(y_true)
    f1 = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    per_class = {label: float(score) for label, score in zip(labels.tolist(), f1, strict=True)}
    rare = [] if rare_classes is None else list(rare_classes)
    missing = [label for label in rare if label not in per_class]
    if missing:
        # Warn rather than fail: a held-out split can miss a very rare type, and a long
        # benchmark should go on; scoring it as 0 would silently distort the mean.
        warnings.warn(
            f"rare_classes {missing} do not occur in y_true and are left out of rare_macro_f1",
            UserWarning,
            stacklevel=2,
        )
    present = [per_class[label] for label in rare if label in per_class]
    return {
        "macro_f1": float(np.mean(f1)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "per_class_f1": per_class,
        "rare_macro_f1": float(np.mean(present)) if present else float("nan"),
    }
