"""SCLDSampler inside imbalanced-learn Pipelines, cross-validation and searches."""

import numpy as np
from imblearn.pipeline import Pipeline
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score

from scld_aug import SCLDSampler
from scld_aug.preprocessing import log_normalizer


def _pipeline(tiny_params, **kwargs):
    return Pipeline(
        [
            ("aug", SCLDSampler(random_state=0, **tiny_params, **kwargs)),
            ("norm", log_normalizer()),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    )


def test_pipeline_fit_predict_resamples_only_in_fit(counts_data, tiny_params):
    X, y = counts_data
    pipe = _pipeline(tiny_params).fit(X, y)
    assert pipe.named_steps["aug"].generator_source_ == "trained"
    assert pipe.predict(X).shape == (len(X),)  # prediction does not resample
    assert (pipe.predict(X) == y).mean() > 0.9


def test_cross_val_score(counts_data, tiny_params):
    X, y = counts_data
    scores = cross_val_score(
        _pipeline(tiny_params),
        X,
        y,
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
        scoring="f1_macro",
    )
    assert scores.shape == (3,) and np.all(scores > 0.8)


def test_grid_search_over_guidance_scale_reuses_generators(
    counts_data, tiny_params, tmp_path, monkeypatch
):
    import scld_aug.train

    trainings = []
    original = scld_aug.train.fit_generator
    monkeypatch.setattr(
        scld_aug.train, "fit_generator", lambda *a, **k: trainings.append(1) or original(*a, **k)
    )
    X, y = counts_data
    search = GridSearchCV(
        _pipeline(tiny_params, memory=str(tmp_path)),
        {"aug__guidance_scale": [0.0, 1.0, 3.0]},
        cv=StratifiedKFold(2, shuffle=True, random_state=0),
        scoring="f1_macro",
    ).fit(X, y)
    assert search.best_params_["aug__guidance_scale"] in (0.0, 1.0, 3.0)
    # One generator per fold plus one for the refit on all data, not one per candidate.
    assert len(trainings) == 3


def test_clone_keeps_parameters_not_state(counts_data, tiny_params):
    X, y = counts_data
    sampler = SCLDSampler(random_state=0, guidance_scale=3.5, **tiny_params).fit(X, y)
    copy = clone(sampler)
    assert copy.get_params() == sampler.get_params()
    assert not hasattr(copy, "generator_")
