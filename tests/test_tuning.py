"""Tuning sampling-time parameters with Optuna: cost, failures, pruning, storages, searches."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
from imblearn.pipeline import Pipeline
from optuna.distributions import FloatDistribution
from sklearn.linear_model import LogisticRegression

from scld_aug import SCLDSampler
from scld_aug.preprocessing import log_normalizer
from scld_aug.tuning import default_search_space, tune_guidance

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def data(counts_data):
    X, y = counts_data
    return X.copy(), y.copy()


def _sampler(tiny_params, **kwargs):
    return SCLDSampler(random_state=0, **tiny_params, **kwargs)


@pytest.mark.parametrize("n_trials", [1, 6])
def test_generators_train_once_per_fold_whatever_the_number_of_trials(
    data, tiny_params, count_trainings, n_trials
):
    X, y = data
    result = tune_guidance(X, y, sampler=_sampler(tiny_params), cv=3, n_trials=n_trials)
    # Three folds + one refit on all cells, for 1 trial as for 6.
    assert len(count_trainings) == 4
    assert result.n_trainings == 4
    assert len(result.study.trials) == n_trials
    assert result.sampler.generator_source_ == "trained"
    assert result.sampler.get_params()["guidance_scale"] == result.best_params["guidance_scale"]


def test_defaults_scored_first_and_best_is_at_least_as_good(data, tiny_params):
    X, y = data
    sampler = _sampler(tiny_params, guidance_scale=2.0)
    result = tune_guidance(X, y, sampler=sampler, cv=2, n_trials=4, refit=False)
    first = result.study.trials[0]
    assert first.user_attrs["defaults"] is True
    assert first.params == {
        "guidance_scale": 2.0,
        "post_guidance_scale": 0.0,
        "filter_threshold": None,
    }
    assert result.default_score == first.value
    assert result.best_score >= result.default_score
    assert result.sampler is None
    assert len(first.user_attrs["fold_scores"]) == 2
    df = result.trials_dataframe()
    assert {"value", "params_guidance_scale", "state"} <= set(df.columns)


def test_tuned_sampler_drops_into_a_pipeline(data, tiny_params, tmp_path):
    X, y = data
    result = tune_guidance(X, y, sampler=_sampler(tiny_params, memory=tmp_path), cv=2, n_trials=2)
    pipe = Pipeline(
        [
            ("aug", result.sampler),
            ("norm", log_normalizer()),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ).fit(X, y)
    # Same data, same training parameters: the refit generator is reused, not retrained.
    assert pipe.named_steps["aug"].generator_source_ == "reused"
    assert (pipe.predict(X) == y).mean() > 0.9


def test_failed_trials_are_reported_with_their_error(data, tiny_params):
    X, y = data
    with pytest.warns(RuntimeWarning, match="trials failed") as record:
        result = tune_guidance(
            X,
            y,
            sampler=_sampler(tiny_params),
            cv=2,
            n_trials=2,
            search_space={"guidance_scale": [1.0, -1.0]},
            optuna_sampler=optuna.samplers.GridSampler({"guidance_scale": [1.0, -1.0]}, seed=0),
            score_defaults=False,
            refit=False,
        )
    messages = [str(w.message) for w in record if w.category is RuntimeWarning]
    assert "guidance_scale" in messages[0]
    assert len(result.failed_trials) == 1
    failed = result.failed_trials[0]
    assert failed["params"] == {"guidance_scale": -1.0}
    assert "guidance_scale" in failed["error"]
    trial = result.study.trials[failed["number"]]
    assert trial.state == optuna.trial.TrialState.FAIL
    assert "Traceback" in trial.user_attrs["traceback"]
    assert result.best_params == {"guidance_scale": 1.0}
    assert np.isfinite(result.best_score)


def test_all_trials_failing_raises_with_the_first_error(data, tiny_params):
    X, y = data
    with pytest.raises(RuntimeError, match="All 2 trials failed.*guidance_scale"):
        tune_guidance(
            X,
            y,
            sampler=_sampler(tiny_params),
            cv=2,
            n_trials=2,
            search_space={"guidance_scale": [-1.0]},
            score_defaults=False,
        )


def test_pruned_trials_stop_after_the_first_fold(data, tiny_params, count_trainings):
    class PruneAfterTwo(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.number >= 2

    X, y = data
    result = tune_guidance(
        X,
        y,
        sampler=_sampler(tiny_params),
        cv=3,
        n_trials=4,
        pruner=PruneAfterTwo(),
        refit=False,
    )
    states = [t.state for t in result.study.trials]
    assert states[:2] == [optuna.trial.TrialState.COMPLETE] * 2
    assert states[2:] == [optuna.trial.TrialState.PRUNED] * 2
    assert all(len(t.user_attrs["fold_scores"]) == 1 for t in result.study.trials[2:])
    assert result.failed_trials == []
    assert len(count_trainings) == 3


@pytest.mark.parametrize(
    "space, match",
    [
        ({"latent_dim": (2, 8)}, "only sampling-time parameters"),
        ({"guidance_scale": "high"}, "optuna distribution"),
        ({}, "search_space is empty"),
    ],
)
def test_bad_search_space_is_refused_before_training(
    data, tiny_params, count_trainings, space, match
):
    X, y = data
    with pytest.raises((ValueError, TypeError), match=match):
        tune_guidance(X, y, sampler=_sampler(tiny_params), search_space=space)
    assert count_trainings == []


def test_shorthand_search_space(data, tiny_params):
    X, y = data
    result = tune_guidance(
        X,
        y,
        sampler=_sampler(tiny_params),
        cv=2,
        n_trials=2,
        refit=False,
        search_space={"guidance_scale": (0.5, 4.0), "n_sampling_steps": (3, 6)},
    )
    dists = result.study.best_trial.distributions
    assert isinstance(dists["guidance_scale"], FloatDistribution)
    assert isinstance(dists["n_sampling_steps"], optuna.distributions.IntDistribution)


def test_plots_and_trials_table_are_saved(data, tiny_params, tmp_path):
    X, y = data
    result = tune_guidance(
        X, y, sampler=_sampler(tiny_params), cv=2, n_trials=3, refit=False, plots_dir=tmp_path
    )
    for name in ("optimization_history.png", "guidance_vs_score.png", "trials.csv"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "optimization_history.png").read_bytes()[:4] == b"\x89PNG"
    assert set(result.plots) == {"history", "slice", "trials"}


WORKER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    from tests.conftest import TINY, make_counts
    from scld_aug import SCLDSampler
    from scld_aug.tuning import tune_guidance

    X, y = make_counts()
    result = tune_guidance(
        X, y, sampler=SCLDSampler(random_state=0, memory={memory!r}, **TINY), cv=2,
        n_trials=3, storage={storage!r}, study_name="shared", refit=False,
    )
    print("trainings", result.n_trainings)
    """
)


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_worker_processes_share_one_study(tmp_path, kind):
    storage = (
        str(tmp_path / "study.journal") if kind == "journal" else f"sqlite:///{tmp_path}/study.db"
    )
    script = tmp_path / "worker.py"
    script.write_text(
        WORKER.format(repo=str(REPO), memory=str(tmp_path / "cache"), storage=storage)
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
    from scld_aug.tuning import _storage

    study = optuna.load_study(study_name="shared", storage=_storage(storage))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 6
    assert len({t.user_attrs["worker"] for t in complete}) == 2
    # Workers explore different settings (same seed would repeat each other's proposals).
    assert len({t.params["guidance_scale"] for t in complete}) == 6
    # The default setting is scored once, by whichever worker created the study.
    assert sum(bool(t.user_attrs.get("defaults")) for t in complete) == 1
    assert len(list((tmp_path / "cache" / "scld_aug").glob("generator-*.pt"))) == 2


def test_optuna_search_cv_over_pipeline_trains_once_per_fold(
    data, tiny_params, tmp_path, count_trainings
):
    from optuna_integration import OptunaSearchCV

    X, y = data
    pipe = Pipeline(
        [
            ("aug", _sampler(tiny_params, memory=tmp_path)),
            ("norm", log_normalizer()),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    )
    search = OptunaSearchCV(
        pipe,
        {"aug__guidance_scale": FloatDistribution(0.0, 4.0)},
        cv=2,
        n_trials=4,
        scoring="f1_macro",
        random_state=0,
    )
    search.fit(X, y)
    # Every trial clones the pipeline; memory= serves each fold's generator after the first.
    assert len(count_trainings) == 3  # two folds + refit
    assert 0.0 <= search.best_params_["aug__guidance_scale"] <= 4.0
    assert len(search.trials_) == 4
    assert (search.predict(X) == y).mean() > 0.9


def test_default_search_space_covers_guidance_and_filter():
    space = default_search_space()
    assert set(space) == {"guidance_scale", "post_guidance_scale", "filter_threshold"}
    assert space["guidance_scale"].low == 0.0
    assert None in space["filter_threshold"].choices
