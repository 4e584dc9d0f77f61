"""Tuning sampling-time parameters with Optuna: cost, failures, pruning, storages, searches."""

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
from imblearn.pipeline import Pipeline
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from sklearn.linear_model import LogisticRegression

from scld_aug import SCLDSampler
from scld_aug.preprocessing import log_normalizer
from scld_aug.tuning import _save_plots, _storage, default_search_space, tune_guidance

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def data(counts_data):
    X, y = counts_data
    return X.copy(), y.copy()


def _sampler(tiny_params, **kwargs):
    return SCLDSampler(random_state=0, **tiny_params, **kwargs)


@pytest.fixture(scope="module")
def fold_cache(tmp_path_factory):
    """memory= shared by the tests below that need fold generators but do not count them:
    the same data, folds and training parameters train once for all of them."""
    return tmp_path_factory.mktemp("fold_cache")


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
        "guidance_reference": "unconditional",
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
    assert set(space) == {
        "guidance_scale",
        "guidance_reference",
        "post_guidance_scale",
        "filter_threshold",
    }
    assert space["guidance_scale"].low == 0.0
    assert set(space["guidance_reference"].choices) == {"unconditional", "confusable"}
    assert None in space["filter_threshold"].choices


# ----------------------------------------------------------------- plots and tracking


class FakeRun:
    """Stands in for scld_aug.tracking.RunLogger: records calls, raises at ``fail``."""

    fail: str | None = None
    calls: list

    def __init__(self, run_name, experiment=None, uri=None, parent=None, tags=None):
        self._check("start" if parent is None else "child")
        self.run_id = f"run-{len(self.calls)}"
        self.active = True
        self._warned = [False] if parent is None else parent._warned

    def _check(self, step, *args):
        self.calls.append((step, *args))
        if step == self.fail:
            raise RuntimeError(f"tracking broke at {step}")

    def child(self, run_name, tags=None):
        return type(self)(run_name, parent=self, tags=tags)

    def log_params(self, params):
        self._check("log_params", params)

    def log_metrics(self, metrics, step=0):
        self._check("log_metrics", metrics)

    def set_tags(self, tags):
        self._check("set_tags", tags)

    def log_artifact(self, path, artifact_path=None):
        self._check("log_artifact", Path(path).name)

    def end(self, status="FINISHED"):
        self._check("end", status)


@pytest.fixture
def fake_tracking(monkeypatch):
    import scld_aug.tracking.studies

    run = type("Run", (FakeRun,), {"calls": [], "fail": None})
    monkeypatch.setattr(scld_aug.tracking.studies, "RunLogger", run)
    return run


def _runtime_warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]


def test_dict_choices_are_plotted_and_tracked(
    data, tiny_params, tmp_path, fake_tracking, fold_cache
):
    X, y = data
    strategies = [{"type2": 20}, {"type2": 40}]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = tune_guidance(
            X,
            y,
            sampler=_sampler(tiny_params, memory=fold_cache),
            cv=2,
            n_trials=3,
            refit=False,
            search_space={"sampling_strategy": strategies, "guidance_scale": (0.0, 3.0)},
            plots_dir=tmp_path,
            tracking=True,
        )
    assert _runtime_warnings(record) == []
    assert result.best_params["sampling_strategy"] in strategies
    assert set(result.plots) == {"history", "slice", "trials"}
    assert (tmp_path / "guidance_vs_score.png").read_bytes()[:4] == b"\x89PNG"
    assert result.run_id is not None
    logged = {call[1] for call in fake_tracking.calls if call[0] == "log_artifact"}
    assert {"guidance_vs_score.png", "optimization_history.png"} <= logged


def test_slice_plot_places_any_choice_by_its_index(tmp_path):
    dists = {
        "guidance_scale": FloatDistribution(0.1, 6.0, log=True),
        "n_sampling_steps": IntDistribution(3, 9),
        "filter_threshold": CategoricalDistribution([None, 0.5]),
        "output": CategoricalDistribution(["sample", "mean"]),
        "sampling_strategy": CategoricalDistribution([{"type2": 20}, {"type2": 40}]),
    }
    study = optuna.create_study(direction="maximize")
    for i in range(4):
        params = {name: d.to_external_repr(i % 2) for name, d in dists.items()}
        params.update(guidance_scale=0.5 + i, n_sampling_steps=3 + i)
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=dists, value=0.5 + i / 10)
        )
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        paths = _save_plots(study, None, tmp_path)
    assert set(paths) == {"history", "slice", "trials"}
    assert paths["slice"].read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("fail", ["start", "child", "log_artifact"])
def test_failing_plots_and_tracking_only_warn(
    data, tiny_params, tmp_path, fake_tracking, monkeypatch, fold_cache, fail
):
    import matplotlib.figure

    def no_space_left(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", no_space_left)
    fake_tracking.fail = fail
    X, y = data
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = tune_guidance(
            X,
            y,
            sampler=_sampler(tiny_params, memory=fold_cache),
            cv=2,
            n_trials=2,
            refit=False,
            plots_dir=tmp_path,
            tracking=True,
        )
    messages = _runtime_warnings(record)
    assert len(messages) == 2, messages
    plots, tracking = sorted(messages)
    assert "optimization_history.png" in plots and "guidance_vs_score.png" in plots
    assert "No space left on device" in plots
    assert "MLflow tracking of the study failed" in tracking
    assert f"tracking broke at {fail}" in tracking
    assert set(result.plots) == {"trials"}
    assert (tmp_path / "trials.csv").stat().st_size > 0
    assert result.run_id is None
    assert [t.state.name for t in result.study.trials] == ["COMPLETE", "COMPLETE"]


# ------------------------------------------------------------------ storages and studies


@pytest.mark.parametrize(
    "storage, fragments",
    [
        ("notadb://x", ["'notadb://x'", "RDB URL"]),
        ("sqlite:///{tmp}/missing/y.db", ["'sqlite:///{tmp}/missing/y.db'", "does not exist"]),
        ("{tmp}/missing/study.journal", ["'{tmp}/missing/study.journal'", "does not exist"]),
        ("{tmp}/study.db", ["'{tmp}/study.db'", "use 'sqlite:///{tmp}/study.db'"]),
    ],
)
def test_bad_storage_is_refused_before_training(
    data, tiny_params, tmp_path, count_trainings, storage, fragments
):
    X, y = data
    with pytest.raises(ValueError) as info:
        tune_guidance(
            X,
            y,
            sampler=_sampler(tiny_params),
            cv=2,
            n_trials=1,
            storage=storage.format(tmp=tmp_path),
            study_name="s",
        )
    for fragment in fragments:
        assert fragment.format(tmp=tmp_path) in str(info.value)
    assert count_trainings == []
    assert not (tmp_path / "missing").exists()


def test_existing_study_is_reused_only_with_the_same_setting(
    data, tiny_params, tmp_path, count_trainings, fold_cache
):
    X, y = data
    storage = str(tmp_path / "study.journal")
    cached = _sampler(tiny_params, memory=fold_cache)
    narrow = {"guidance_scale": (0.0, 3.0)}
    kwargs = dict(cv=2, n_trials=1, refit=False, storage=storage, study_name="s")
    first = tune_guidance(X, y, sampler=cached, search_space=narrow, **kwargs)
    assert first.study.user_attrs["scld_aug.search_space"]["guidance_scale"]
    assert first.study.user_attrs["scld_aug.direction"] == "maximize"
    assert first.study.user_attrs["scld_aug.scoring"] == "f1_macro"
    count_trainings.clear()

    refused = [
        (dict(search_space={"guidance_scale": (0.0, 6.0)}), "another search space"),
        (dict(search_space={**narrow, "filter_threshold": [None, 0.5]}), "filter_threshold"),
        (dict(search_space=narrow, scoring="accuracy"), "another scoring"),
        (dict(search_space=narrow, y=y[::-1].copy()), "other data"),
    ]
    for change, what in refused:
        call = {"X": X, "y": y, "sampler": _sampler(tiny_params), **kwargs, **change}
        with pytest.raises(ValueError, match=what) as info:
            tune_guidance(**call)
        assert "study_name=" in str(info.value) and "replace_study=True" in str(info.value)
    assert count_trainings == []
    # The same setting adds trials to the study; a changed one replaces it when asked.
    again = tune_guidance(X, y, sampler=cached, search_space=narrow, **kwargs)
    assert len(again.study.trials) == 2
    wide = {"guidance_scale": (0.0, 6.0)}
    fresh = tune_guidance(X, y, sampler=cached, search_space=wide, replace_study=True, **kwargs)
    assert len(fresh.study.trials) == 1
    assert fresh.study.trials[0].user_attrs["defaults"] is True
    assert fresh.study.trials[0].distributions["guidance_scale"].high == 6.0
    assert count_trainings == []  # every fold generator came from memory


def test_study_created_elsewhere_is_adopted_only_when_empty(
    data, tiny_params, tmp_path, count_trainings, fold_cache
):
    X, y = data
    storage = str(tmp_path / "study.journal")
    backend = _storage(storage)
    optuna.create_study(storage=backend, study_name="minimize", direction="minimize")
    used = optuna.create_study(storage=backend, study_name="used", direction="maximize")
    used.add_trial(
        optuna.trial.create_trial(
            params={"guidance_scale": 1.0},
            distributions={"guidance_scale": FloatDistribution(0, 6)},
            value=1,
        )
    )
    optuna.create_study(storage=backend, study_name="empty", direction="maximize")
    kwargs = dict(cv=2, n_trials=1, refit=False, storage=storage)
    with pytest.raises(ValueError, match="direction minimize.*maximizes"):
        tune_guidance(X, y, sampler=_sampler(tiny_params), study_name="minimize", **kwargs)
    with pytest.raises(ValueError, match="1 trial.*not created by tune_guidance"):
        tune_guidance(X, y, sampler=_sampler(tiny_params), study_name="used", **kwargs)
    assert count_trainings == []
    cached = _sampler(tiny_params, memory=fold_cache)
    result = tune_guidance(X, y, sampler=cached, study_name="empty", **kwargs)
    assert result.study.trials[0].user_attrs["defaults"] is True
    assert "scld_aug.data_fingerprint" in result.study.user_attrs


# ------------------------------------------------------------------------ failed trials


@pytest.mark.parametrize("n_trials", [1, 2])
def test_failing_defaults_trial_counts_among_the_failures(data, tiny_params, fold_cache, n_trials):
    # output="counts" needs a count-trained generator: sampling fails in every trial, the
    # defaults trial (trial 0) included, while training the folds works.
    X, y = data
    sampler = _sampler(tiny_params, likelihood="gaussian", output="counts", memory=fold_cache)
    with pytest.raises(RuntimeError, match=f"All {n_trials} trials failed.*trial 0.*counts"):
        tune_guidance(
            X, y, sampler=sampler, cv=2, n_trials=n_trials, search_space={"output": ["counts"]}
        )


def test_failing_defaults_trial_is_reported(data, tiny_params, fold_cache):
    X, y = data
    sampler = _sampler(tiny_params, likelihood="gaussian", output="counts", memory=fold_cache)
    with pytest.warns(RuntimeWarning, match="1 of 2 trials failed.*trial 0"):
        result = tune_guidance(
            X,
            y,
            sampler=sampler,
            cv=2,
            n_trials=2,
            refit=False,
            search_space={"output": ["counts", "sample"]},
            optuna_sampler=optuna.samplers.BruteForceSampler(seed=0),
        )
    assert [f["number"] for f in result.failed_trials] == [0]
    assert result.failed_trials[0]["params"] == {"output": "counts"}
    assert result.default_score is None
    assert result.best_params == {"output": "sample"}
