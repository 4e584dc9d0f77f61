"""Augmentation methods compared by the benchmark, and the downstream pipelines.

Every method sees the same training split and raises the same classes to the same sizes
(``targets``), so differences come from the cells they make, not from how many.
"""

from __future__ import annotations

from collections.abc import Callable

from imblearn.over_sampling import ADASYN, SMOTE, RandomOverSampler
from imblearn.pipeline import Pipeline
from sklearn.decomposition import TruncatedSVD
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline as make_sklearn_pipeline
from sklearn.preprocessing import StandardScaler

from scld_aug import SCLDSampler
from scld_aug.preprocessing import log_normalizer

# Where each method's cells live: all methods here receive raw counts and return counts-space
# rows (SMOTE/ADASYN interpolate counts, so their rows are non-integer).
METHOD_SPACE = {
    "none": "-",
    "RandomOverSampler": "copies of real count rows",
    "SMOTE": "interpolated count rows (non-integer)",
    "ADASYN": "interpolated count rows (non-integer)",
    "SCLD": "sampled integer counts (NB decoder)",
    "scVI": "posterior predictive integer counts of random real cells (ZINB decoder)",
}
#: Every method the benchmark can run ("none" is the classifier on the real cells alone).
METHODS = tuple(METHOD_SPACE)


def make_sampler(
    name: str,
    targets: dict,
    seed: int,
    memory: str | None,
    scld_params: dict,
    scvi_epochs: int | None = None,
):
    """A fresh sampler; ``targets`` maps class -> size after resampling."""
    if name == "none":
        return None
    if name == "RandomOverSampler":
        return RandomOverSampler(sampling_strategy=targets, random_state=seed)
    if name == "SMOTE":
        # k=2: augmented types have as few as 3 training cells.
        return SMOTE(sampling_strategy=targets, k_neighbors=2, random_state=seed)
    if name == "ADASYN":
        return ADASYN(sampling_strategy=targets, n_neighbors=2, random_state=seed)
    if name == "scVI":
        from scld_aug.benchmark.scvi_baseline import SCVISampler

        return SCVISampler(
            sampling_strategy=targets, random_state=seed, max_epochs=scvi_epochs, memory=memory
        )
    if name.startswith("SCLD"):
        return SCLDSampler(
            sampling_strategy=targets, random_state=seed, memory=memory, **scld_params
        )
    raise ValueError(f"unknown method {name!r}")


CLASSIFIERS: dict[str, Callable] = {
    # Scaled components for the linear model; kNN and forests use the PCs as they are
    # (scaling would give the noisy trailing components the weight of the leading ones).
    "logreg": lambda seed: make_sklearn_pipeline(
        StandardScaler(), LogisticRegression(max_iter=2000)
    ),
    "knn": lambda seed: KNeighborsClassifier(n_neighbors=15, weights="distance"),
    "random_forest": lambda seed: RandomForestClassifier(
        n_estimators=200, class_weight=None, n_jobs=1, random_state=seed
    ),
}


def make_pipeline(sampler, classifier: str, seed: int) -> Pipeline:
    """Augment -> log-normalize -> 50 SVD components -> classifier."""
    steps = [] if sampler is None else [("aug", sampler)]
    steps += [
        ("norm", log_normalizer()),
        ("svd", TruncatedSVD(50, random_state=seed)),
        ("clf", CLASSIFIERS[classifier](seed)),
    ]
    return Pipeline(steps)
