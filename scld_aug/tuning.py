"""Tune sampling-time parameters (guidance, filter) against downstream classifier accuracy.

An Optuna study scores each candidate setting by cross-validation: on every training fold
the sampler adds synthetic cells, a classifier is fitted on the augmented fold and scored
on the held-out real cells. Only sampling-time parameters are searched, so the generator of
each fold is trained once and reused by every trial: a study of many trials costs one
training per fold plus, per trial, the sampling and the classifier fits.

Several processes (or machines) can share one study through ``storage=``: an Optuna RDB URL
(``sqlite:///study.db``, ``postgresql://...``) or a journal file (a path ending in
``.journal``). Pass the same ``memory=`` directory to share the trained fold generators too.
A study records its search space, scoring, direction and a fingerprint of the data, and is
only reused by calls that match them (``replace_study=True`` starts it afresh); the storage
and the study are checked before any generator is trained.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import traceback
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

try:
    import optuna
    from optuna.distributions import (
        BaseDistribution,
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )
except ImportError as err:  # an optional extra, like MLflow and matplotlib
    raise ImportError(
        "Tuning needs Optuna: pip install 'scld-aug[tune]' (or pip install optuna)."
    ) from err
from sklearn.base import clone
from sklearn.metrics import check_scoring
from sklearn.model_selection import StratifiedKFold, check_cv
from sklearn.utils import _safe_indexing
from tqdm.auto import tqdm

from scld_aug import params, plotting
from scld_aug.data import plain_scalar
from scld_aug.files import atomic_write, check_output_folder
from scld_aug.sampler import SCLDSampler
from scld_aug.tracking.studies import StudyTracker

logger = logging.getLogger(__name__)

# Parameters a study may search: changing them never retrains the generator.
SAMPLING_PARAMS = params.SAMPLING_PARAMS


def default_search_space() -> dict[str, BaseDistribution]:
    """Pre-guidance scale and reference, post-guidance scale and the filter threshold (the
    ``search`` ranges of :mod:`scld_aug.params`).

    ``guidance_scale`` 0–6 spans unconditional (0), plain conditional (1) and sharpened
    sampling; ``guidance_reference`` sharpens away from cells in general or from the type
    each sample is most easily confused with; ``post_guidance_scale`` 0–4 goes from off to
    a strong classifier push; the filter is off (None) or keeps cells the latent classifier
    gives at least 0.5 / 0.8.

    Examples
    --------
    >>> space = default_search_space()
    >>> sorted(space)
    ['filter_threshold', 'guidance_reference', 'guidance_scale', 'post_guidance_scale']
    >>> space["guidance_scale"].low, space["guidance_scale"].high
    (0.0, 6.0)
    """
    return {
        p.name: _as_distribution(p.name, p.search) for p in params.PARAMS if p.search is not None
    }


def _as_distribution(name: str, spec: Any) -> BaseDistribution:
    """Optuna distributions as they are, ``(low, high)`` as a float range, a list as choices."""
    if isinstance(spec, BaseDistribution):
        return spec
    if isinstance(spec, tuple) and len(spec) == 2:
        low, high = spec
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high)
        return FloatDistribution(float(low), float(high))
    if isinstance(spec, list) and spec:
        return CategoricalDistribution(spec)
    raise TypeError(
        f"search_space[{name!r}] = {spec!r}: use an optuna distribution, a (low, high) tuple "
        "or a non-empty list of choices."
    )


def _check_search_space(search_space: Mapping | None) -> dict[str, BaseDistribution]:
    space = default_search_space() if search_space is None else dict(search_space)
    if not space:
        raise ValueError("search_space is empty; name at least one sampling-time parameter.")
    unknown = [name for name in space if name not in SAMPLING_PARAMS]
    if unknown:
        raise ValueError(
            f"Cannot tune {unknown}: only sampling-time parameters are searched (the generator "
            f"is trained once per fold), i.e. {list(SAMPLING_PARAMS)}. Compare training "
            "parameters with separate studies or a grid search."
        )
    return {name: _as_distribution(name, spec) for name, spec in space.items()}


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    raise TypeError(f"Unsupported distribution for {name!r}: {type(dist).__name__}.")


STORAGE_HINT = (
    "Pass an RDB URL such as 'sqlite:///study.db' (a path relative to the working directory), "
    "'sqlite:////absolute/path/study.db' or 'postgresql://user@host/db' (with its driver "
    "installed), a path ending in '.journal' in an existing folder, or an optuna storage object."
)


def _describe_storage(storage) -> str:
    """The storage as messages name it (an RDB URL without its password)."""
    if isinstance(storage, str) and "://" in storage:
        try:
            from sqlalchemy.engine import make_url

            return repr(make_url(storage).render_as_string(hide_password=True))
        except Exception:  # noqa: BLE001 - only for a message
            return repr(storage.split("://", 1)[0] + "://...")
    if isinstance(storage, (str, os.PathLike)):
        return repr(str(storage))
    return type(storage).__name__


def _missing_folder(path: str | os.PathLike) -> Path | None:
    folder = Path(path).expanduser().parent
    return None if folder.is_dir() else folder


def local_storage_file(storage) -> Path | None:
    """The local file of a study storage (a ``.journal`` path or a SQLite URL's database),
    or None for other storages.

    Examples
    --------
    >>> local_storage_file("sqlite:///runs/study.db"), local_storage_file(None)
    (PosixPath('runs/study.db'), None)
    """
    if isinstance(storage, (str, os.PathLike)) and str(storage).endswith(".journal"):
        return Path(storage).expanduser()
    if isinstance(storage, str) and storage.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        try:
            database = make_url(storage).database or ""
        except Exception:  # noqa: BLE001 - _storage reports malformed URLs
            return None
        if database not in ("", ":memory:") and not database.startswith("file:"):
            return Path(database).expanduser()
    return None


def _storage(storage):
    """Optuna storage from a URL, a ``.journal`` file path, or a storage object.

    A malformed URL, a database driver that is not installed or a folder that does not
    exist raise a ValueError naming the storage, before any work is done.
    """
    if storage is None or isinstance(storage, optuna.storages.BaseStorage):
        return storage
    where = _describe_storage(storage)
    if isinstance(storage, (str, os.PathLike)) and str(storage).endswith(".journal"):
        folder = _missing_folder(storage)
        if folder is not None:
            raise ValueError(
                f"Cannot use the Optuna storage {where}: the folder {str(folder)!r} of the "
                "journal file does not exist. Create it first, or give a journal path in an "
                "existing folder."
            )
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        try:
            return JournalStorage(JournalFileBackend(str(Path(storage).expanduser())))
        except Exception as err:
            raise ValueError(
                f"Cannot open the Optuna storage {where} ({type(err).__name__}: {err}). Check "
                "that the journal file can be created and written there."
            ) from err
    if not isinstance(storage, str) or "://" not in storage:
        path = isinstance(storage, (str, os.PathLike)) and str(storage)
        hint = f"For a SQLite database use 'sqlite:///{storage}'. " if path else ""
        raise ValueError(
            f"storage={where} is neither an RDB URL nor a '.journal' file path. {hint}"
            + STORAGE_HINT
        )
    from sqlalchemy.engine import make_url

    try:
        url = make_url(storage)
    except Exception as err:
        raise ValueError(
            f"Cannot parse the Optuna storage URL {where} ({type(err).__name__}: {err}). "
            + STORAGE_HINT
        ) from err
    sqlite = url.drivername.startswith("sqlite")
    database = url.database or ""
    if sqlite and database not in ("", ":memory:") and not database.startswith("file:"):
        folder = _missing_folder(database)
        if folder is not None:
            raise ValueError(
                f"Cannot use the Optuna storage {where}: the folder {str(folder)!r} of the "
                "SQLite database does not exist. Create it first, or point the URL at an "
                "existing folder ('sqlite:///relative/study.db', "
                "'sqlite:////absolute/study.db')."
            )
    try:
        return _sqlite_storage(storage) if sqlite else optuna.storages.RDBStorage(storage)
    except Exception as err:
        raise ValueError(
            f"Cannot open the Optuna storage {where} ({type(err).__name__}: {err}). " + STORAGE_HINT
        ) from err


def _sqlite_storage(url: str, attempts: int = 5):
    """RDB storage on SQLite that tolerates workers starting together.

    Two processes opening a new database at once both try to create its tables and one
    fails ("table ... already exists", or a duplicate schema version); the next attempt
    finds them. A longer lock timeout
    lets writers queue instead of failing with "database is locked".
    """
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        except SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def default_classifier(X) -> Any:
    """Log-normalization + logistic regression for counts; scaling + logistic regression else.

    Examples
    --------
    >>> import numpy as np
    >>> [name for name, _ in default_classifier(np.array([[1, 0], [3, 2]])).steps]
    ['functiontransformer', 'logisticregression']
    >>> [name for name, _ in default_classifier(np.array([[0.5, -1.2]])).steps]
    ['maxabsscaler', 'logisticregression']
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MaxAbsScaler

    from scld_aug.data import as_csr, is_count_matrix
    from scld_aug.preprocessing import log_normalizer

    values = X.to_numpy() if hasattr(X, "to_numpy") else X
    counts = is_count_matrix(as_csr(values[:1000]))
    scale = log_normalizer() if counts else MaxAbsScaler()
    return make_pipeline(scale, LogisticRegression(max_iter=1000))


@dataclass
class TuningResult:
    """What :func:`tune_guidance` found.

    Attributes
    ----------
    study : optuna.Study
        All trials (also those of other workers sharing the storage).
    best_params : dict
        Best sampling-time parameters.
    best_score : float
        Their mean cross-validated score.
    default_params, default_score : dict, float or None
        The sampler's own settings and their score on the same folds (trial 0 of a new
        study), for comparison; None when the study did not score them.
    sampler : SCLDSampler or None
        A clone of the given sampler with ``best_params``, refit on all data (``refit=True``).
    n_trainings : int
        Generators trained by this call (folds + refit); the rest came from reuse/memory.
    failed_trials : list of dict
        ``{"number", "params", "error"}`` for each trial of this call that raised.
    plots : dict of str -> Path
        Saved figures (``plots_dir``).
    run_id : str or None
        MLflow parent run of the study, when tracked.
    seconds : float
        Wall time of this call.

    Examples
    --------
    >>> import numpy as np
    >>> from scld_aug import SCLDSampler
    >>> X = np.random.default_rng(0).poisson(2.0, size=(60, 30))
    >>> y = np.array(["common"] * 40 + ["rare"] * 20)
    >>> tiny = SCLDSampler(random_state=0, autoencoder_steps=20, diffusion_steps=20,
    ...                    classifier_steps=10, n_sampling_steps=5)
    >>> result = tune_guidance(X, y, sampler=tiny, n_trials=2, cv=2, refit=False)
    >>> result.default_params  # doctest: +NORMALIZE_WHITESPACE
    {'guidance_scale': 2.0, 'guidance_reference': 'unconditional',
     'post_guidance_scale': 0.0, 'filter_threshold': None}
    >>> result.n_trainings, result.sampler is None, len(result.trials_dataframe())
    (2, True, 2)
    """

    study: optuna.Study
    best_params: dict
    best_score: float
    default_params: dict | None
    default_score: float | None
    sampler: SCLDSampler | None
    n_trainings: int
    failed_trials: list = field(default_factory=list)
    plots: dict = field(default_factory=dict)
    run_id: str | None = None
    seconds: float = 0.0

    def trials_dataframe(self) -> pd.DataFrame:
        """One row per trial: number, state, score, parameters, error."""
        return self.study.trials_dataframe(
            attrs=("number", "value", "state", "params", "user_attrs", "duration")
        )


class _FoldCache:
    """One sampler per CV fold: trained once (or loaded from ``memory``), then reused."""

    def __init__(self, template: SCLDSampler, X, y, splits, verbose: bool) -> None:
        self.template, self.X, self.y, self.splits = template, X, y, splits
        self.samplers: dict[int, SCLDSampler] = {}
        self.n_trained = 0
        self.verbose = verbose

    def data(self, i: int):
        train, test = self.splits[i]
        return (
            _safe_indexing(self.X, train),
            _safe_indexing(self.y, train),
            _safe_indexing(self.X, test),
            _safe_indexing(self.y, test),
        )

    def sampler(self, i: int) -> SCLDSampler:
        if i not in self.samplers:
            X_train, y_train, _, _ = self.data(i)
            sampler = clone(self.template)
            if self.verbose:  # the training's own progress bars inside the folds' bar
                sampler.set_params(verbose=True)
            start = time.perf_counter()
            sampler.fit(X_train, y_train)
            logger.info(
                f"fold {i + 1}/{len(self.splits)}: generator {sampler.generator_source_} "
                f"({len(y_train)} cells) in {time.perf_counter() - start:.1f} s"
            )
            self.n_trained += sampler.generator_source_ == "trained"
            self.samplers[i] = sampler
        return self.samplers[i]

    def prepare(self) -> None:
        """Train every fold's generator up front: data errors surface here, not as trials."""
        for i in tqdm(range(len(self.splits)), desc="fold generators", disable=not self.verbose):
            self.sampler(i)


def tune_guidance(
    X,
    y,
    *,
    sampler: SCLDSampler | None = None,
    classifier=None,
    cv=3,
    scoring="f1_macro",
    n_trials: int = 20,
    timeout: float | None = None,
    search_space: Mapping | None = None,
    storage=None,
    study_name: str | None = None,
    replace_study: bool = False,
    pruner: optuna.pruners.BasePruner | None = None,
    optuna_sampler: optuna.samplers.BaseSampler | None = None,
    score_defaults: bool = True,
    refit: bool = True,
    plots_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    tracking: bool | str = False,
    experiment: str = "scld-aug-tuning",
    random_state: int = 0,
    verbose: bool = False,
) -> TuningResult:
    """Search guidance (and other sampling-time) parameters for the best downstream score.

    Parameters
    ----------
    X : {array-like, sparse matrix, DataFrame} of shape (n_cells, n_genes)
    y : array-like of shape (n_cells,)
        Cell-type labels.
    sampler : SCLDSampler or None
        Sets the training parameters and what is over-sampled (``sampling_strategy``); its
        sampling-time parameters are the defaults scored first. ``None`` uses
        ``SCLDSampler(random_state=random_state)``. Set ``memory=`` on it to share trained
        fold generators between processes or later calls.
    classifier : estimator or None
        Fitted on each augmented training fold, scored on the real held-out cells. ``None``
        uses :func:`default_classifier`.
    cv : int, CV splitter or iterable of splits, default=3
        An int is a shuffled ``StratifiedKFold`` seeded by ``random_state``. The folds are
        fixed for the whole study, so trials are compared on the same cells.
    scoring : str or callable, default="f1_macro"
        scikit-learn scorer (greater is better).
    n_trials : int, default=20
        Trials run by this call (other workers add their own).
    timeout : float or None
        Stop starting trials after this many seconds.
    search_space : dict or None
        ``{parameter: distribution}`` over ``SAMPLING_PARAMS``; values may be optuna
        distributions, ``(low, high)`` tuples or lists of choices. ``None`` uses
        :func:`default_search_space`.
    storage : str, path-like, optuna storage or None
        Where the study lives: None (in memory), an RDB URL such as ``sqlite:///study.db``,
        or a ``.journal`` file; shared storages let several processes work on one study.
        It is opened (and the study created or loaded) before any generator is trained, so
        a malformed URL or a missing folder fails at once with a ValueError.
    study_name : str or None
        Required to share a study through ``storage``; loaded when it exists. A new study
        records its search space, scoring, direction and a fingerprint of ``X, y`` (study
        user attributes ``scld_aug.*``); an existing one is only reused when they match,
        since its trials could not be compared with this call's otherwise. A mismatch
        raises a ValueError that says what differs, before any training. A study created
        outside this function is refused unless it has no trials (it is then adopted).
    replace_study : bool, default=False
        Delete an existing study named ``study_name`` in ``storage`` (all its trials) and
        start a fresh one, e.g. after changing the search space or the data. Pass it to
        one call only, not to every worker sharing the study: a worker started later with
        it deletes the trials of those already running.
    pruner : optuna pruner or None
        Stops a trial after a fold when its running score is hopeless. ``None`` uses a
        median pruner that waits for 5 complete trials; ``optuna.pruners.NopPruner()``
        turns pruning off.
    optuna_sampler : optuna sampler or None
        ``None`` uses ``TPESampler(seed=random_state)``; with ``storage`` the seed also
        depends on the process, so that workers sharing a study explore different settings
        (such studies are not reproducible trial by trial).
    score_defaults : bool, default=True
        Score the sampler's own parameters first (on a new study), giving
        ``default_score``.
    refit : bool, default=True
        Fit a sampler with the best parameters on all of ``X, y`` (one more training).
    plots_dir : path-like or None
        Save ``optimization_history.png``, ``guidance_vs_score.png`` (score against each
        searched parameter; choices that are not numbers, such as ``sampling_strategy``
        dicts, are placed by their index in the list of choices) and ``trials.csv``. The
        folder is checked before any work (a file, or a folder that cannot be written, is
        refused; so are these files where they exist, unless ``overwrite``). A figure that
        cannot be saved is left out with one RuntimeWarning; the result is returned all
        the same.
    overwrite : bool, default=False
        Replace the files of an earlier study in ``plots_dir``.
    tracking : bool or str, default=False
        Log to MLflow: True uses :func:`scld_aug.tracking.tracking_uri`, a string is the
        tracking URI. One parent run per call, one nested run per trial, the best tagged.
        Tracking never costs the result: its first failure warns once (RuntimeWarning)
        and the study goes on without it.
    experiment : str
        MLflow experiment name.
    random_state : int, default=0
    verbose : bool, default=False
        Progress bars and Optuna's per-trial log lines.

    Returns
    -------
    TuningResult

    Examples
    --------
    >>> import numpy as np
    >>> from scld_aug import SCLDSampler
    >>> from scld_aug.tuning import tune_guidance
    >>> rng = np.random.default_rng(0)
    >>> X = rng.poisson(2.0, size=(90, 30))
    >>> X[60:, :5] += 6
    >>> y = np.array(["common"] * 60 + ["rare"] * 30)
    >>> tiny = SCLDSampler(random_state=0, autoencoder_steps=20, diffusion_steps=20,
    ...                    classifier_steps=10, n_sampling_steps=5, n_top_genes=None)
    >>> result = tune_guidance(X, y, sampler=tiny, n_trials=3, cv=2)
    >>> result.n_trainings  # two folds + the refit, whatever the number of trials
    3
    >>> sorted(result.best_params)
    ['filter_threshold', 'guidance_reference', 'guidance_scale', 'post_guidance_scale']
    """
    start = time.perf_counter()
    space = _check_search_space(search_space)
    template = sampler if sampler is not None else SCLDSampler(random_state=random_state)
    if not isinstance(template, SCLDSampler):
        raise TypeError(f"sampler must be an SCLDSampler, got {type(template).__name__}.")
    if classifier is None:
        classifier = default_classifier(X)
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials must be a positive integer, got {n_trials!r}.")
    y = np.asarray(y)
    if len(y) != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} cells but y has {len(y)} labels.")
    if isinstance(cv, int):
        cv = StratifiedKFold(cv, shuffle=True, random_state=random_state)
    cv = check_cv(cv, y, classifier=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        splits = list(cv.split(np.zeros((len(y), 1)), y))
    _check_fold_sizes(template, y, splits)
    if plots_dir is not None:
        check_output_folder(plots_dir, PLOT_FILES.values(), overwrite=overwrite, what="plots")
    scorer = check_scoring(classifier, scoring=scoring)
    signature = _study_signature(space, scoring, X, y)

    # The storage and the study are checked before the (minutes of) fold training.
    with _optuna_log_level(optuna.logging.INFO if verbose else optuna.logging.WARNING):
        study, created, backend = _open_study(
            storage,
            study_name,
            signature,
            space,
            replace=replace_study,
            sampler=optuna_sampler or _default_optuna_sampler(random_state, storage),
            pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
        )
    folds = _FoldCache(template, X, y, splits, verbose)
    try:
        folds.prepare()
    except BaseException:
        if created:  # leave no empty study behind that a corrected rerun would refuse
            _delete_if_empty(study, backend)
        raise

    with _optuna_log_level(optuna.logging.INFO if verbose else optuna.logging.WARNING):
        defaults = _defaults_in_space(template, space) if score_defaults else None
        # Only the worker that created the study scores the defaults: workers that join a
        # shared study must not queue them again.
        if defaults is not None and created:
            study.enqueue_trial(defaults, user_attrs={"defaults": True})

        tracker = StudyTracker(tracking, experiment, study, template, space, scoring, splits)
        objective = _Objective(folds, classifier, scorer, space)
        study.optimize(
            objective,
            n_trials=n_trials,
            timeout=timeout,
            catch=(Exception,),
            callbacks=[tracker.log_trial],
            show_progress_bar=verbose,
        )

        # This call's trials, the defaults trial (queued before the first of them) included.
        mine = [t for t in study.trials if t.number in objective.numbers]
        failed = [
            {"number": t.number, "params": t.params, "error": t.user_attrs.get("error", "?")}
            for t in mine
            if t.state == optuna.trial.TrialState.FAIL
        ]
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            tracker.end("FAILED")
            if failed and len(failed) == len(mine):
                first = failed[0]
                raise RuntimeError(
                    f"All {len(mine)} trials failed; the first error, of trial {first['number']} "
                    f"({first['params']}), was: {first['error'].rstrip('.')}. See "
                    "study.trials[i].user_attrs['traceback'] for details."
                )
            raise RuntimeError(
                f"No trial completed ({len(failed)} failed, {len(mine) - len(failed)} pruned); "
                "run more trials or relax the pruner (optuna.pruners.NopPruner() turns it off)."
            )
        if failed:
            warnings.warn(
                f"{len(failed)} of {len(mine)} trials failed and were left out; trial "
                f"{failed[0]['number']} ({failed[0]['params']}): {failed[0]['error']}",
                RuntimeWarning,
                stacklevel=2,
            )

        best = study.best_trial
        default_score = next(
            (t.value for t in complete if t.user_attrs.get("defaults")),
            None,
        )
        tuned = None
        n_trained = folds.n_trained
        if refit:
            tuned = clone(template).set_params(**best.params).fit(X, y)
            n_trained += tuned.generator_source_ == "trained"
        plots = (
            _save_plots(study, space, Path(plots_dir), overwrite) if plots_dir is not None else {}
        )
        result = TuningResult(
            study=study,
            best_params=dict(best.params),
            best_score=float(best.value),
            default_params=defaults,
            default_score=None if default_score is None else float(default_score),
            sampler=tuned,
            n_trainings=n_trained,
            failed_trials=failed,
            plots=plots,
            seconds=time.perf_counter() - start,
        )
        result.run_id = tracker.finish(result, plots_dir, _save_plots)
        return result


def _check_fold_sizes(template: SCLDSampler, y: np.ndarray, splits: list) -> None:
    """Refuse, before any training, a class named in a dict ``sampling_strategy`` that some
    training fold holds too few cells of (a fold's fit would refuse it after the others
    have trained). Other strategies leave such a class out of the fold, with a warning."""
    strategy = template.sampling_strategy
    if not isinstance(strategy, dict) or template.generator is not None:
        return
    for label, n in strategy.items():
        if n <= 0:
            continue
        in_folds = [int(np.sum(y[train] == label)) for train, _ in splits]
        fewest = min(in_folds)
        if fewest < template.min_class_size:
            raise ValueError(
                f"Cell type {plain_scalar(label)!r} has {int(np.sum(y == label))} cells: split "
                f"into {len(splits)} cross-validation folds, a training fold holds as few as "
                f"{fewest} of them, fewer than min_class_size={template.min_class_size}, so "
                "its fold's generator cannot learn it. Leave the type out of the types to "
                "over-sample (--types on the command line, sampling_strategy in Python), "
                "merge it with a related type, or lower min_class_size."
            )


def _default_optuna_sampler(random_state: int, storage) -> optuna.samplers.BaseSampler:
    """TPE seeded by ``random_state``; on a shared storage also by the process, since workers
    with the same seed would propose the same parameters."""
    seed = random_state
    if storage is not None:
        seed = int(np.random.SeedSequence([random_state, os.getpid()]).generate_state(1)[0])
    return optuna.samplers.TPESampler(seed=seed)


def _create_or_load_study(study_name: str | None, **kwargs) -> tuple[optuna.Study, bool]:
    """The study, and whether this call created it (atomic in RDB and journal storages)."""
    try:
        return optuna.create_study(study_name=study_name, **kwargs), True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(
            study_name=study_name,
            storage=kwargs["storage"],
            sampler=kwargs["sampler"],
            pruner=kwargs["pruner"],
        ), False


# Study user attributes that record what its trials were scored with (see _study_signature).
SIGNATURE_ATTRS = {
    "search_space": "scld_aug.search_space",
    "scoring": "scld_aug.scoring",
    "direction": "scld_aug.direction",
    "data": "scld_aug.data_fingerprint",
}


def _stable_repr(value: Any) -> str:
    """``repr`` without memory addresses: functions by their qualified name."""
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    text = repr(value)
    if " at 0x" in text:
        return f"{type(value).__module__}.{type(value).__qualname__}"
    return text


def _distribution_json(dist: BaseDistribution) -> str:
    """Optuna's JSON of a distribution; choices Optuna cannot serialize by stable repr."""
    try:
        return optuna.distributions.distribution_to_json(dist)
    except (TypeError, ValueError):
        choices = [_stable_repr(choice) for choice in getattr(dist, "choices", ())]
        return json.dumps({"name": type(dist).__name__, "attributes": {"choices": choices}})


def _describe_distribution(text: str) -> str:
    try:
        return repr(optuna.distributions.json_to_distribution(text))
    except Exception:  # noqa: BLE001 - only for a message
        return text


def _same_distribution(stored: str, dist: BaseDistribution) -> bool:
    try:
        return optuna.distributions.json_to_distribution(stored) == dist
    except Exception:  # noqa: BLE001 - not an Optuna JSON: compare the text
        return stored == _distribution_json(dist)


def _data_fingerprint(X, y: np.ndarray) -> str:
    from scld_aug.data import as_csr, fingerprint

    values = X.to_numpy() if isinstance(X, pd.DataFrame) else X
    return fingerprint(as_csr(values), y)


def _study_signature(space: dict, scoring, X, y: np.ndarray) -> dict:
    """What a study's scores depend on, stored on it as user attributes."""
    return {
        SIGNATURE_ATTRS["search_space"]: {
            name: _distribution_json(dist) for name, dist in space.items()
        },
        SIGNATURE_ATTRS["scoring"]: scoring if isinstance(scoring, str) else _stable_repr(scoring),
        SIGNATURE_ATTRS["direction"]: "maximize",
        SIGNATURE_ATTRS["data"]: _data_fingerprint(X, y),
    }


def _signature_differences(stored: dict, signature: dict, space: dict) -> list[str]:
    """What differs between a study's stored signature and this call's, in words."""
    differences = []
    key = SIGNATURE_ATTRS["search_space"]
    old, new = stored.get(key), signature[key]
    old = old if isinstance(old, dict) else {}
    parts = []
    only_old = sorted(set(old) - set(new))
    only_new = sorted(set(new) - set(old))
    if only_old:
        parts.append(f"{only_old} searched only in the study")
    if only_new:
        parts.append(f"{only_new} searched only now")
    for name in sorted(set(old) & set(new)):
        if not _same_distribution(old[name], space[name]):
            parts.append(
                f"{name!r} is {_describe_distribution(old[name])} in the study but "
                f"{_describe_distribution(new[name])} now"
            )
    if parts:
        differences.append("another search space (" + "; ".join(parts) + ")")
    for key, what in (("scoring", "another scoring"), ("direction", "another direction")):
        key = SIGNATURE_ATTRS[key]
        if stored.get(key) != signature[key]:
            differences.append(f"{what} ({stored.get(key)!r} in the study, {signature[key]!r} now)")
    key = SIGNATURE_ATTRS["data"]
    if stored.get(key) != signature[key]:
        differences.append("other data (the fingerprint of X and y differs)")
    return differences


FIX_HINT = (
    "Use another study_name= for this setting, or replace_study=True to delete the existing "
    "study and start a fresh one."
)


def _check_existing_study(
    study: optuna.Study, signature: dict, space: dict, where: str, wait: float = 1.0
) -> bool:
    """Refuse a loaded study scored differently; adopt an empty one without a record.

    Returns whether the study was adopted (this call then acts as its creator).
    """
    name = f"Study {study.study_name!r} in the storage {where}"
    directions = [d.name.lower() for d in study.directions]
    if directions != ["maximize"]:
        raise ValueError(
            f"{name} was created with direction {', '.join(directions)}, but tune_guidance "
            f"maximizes the score: its best trial would be the worst setting. {FIX_HINT}"
        )
    deadline = time.monotonic() + wait
    while True:
        attrs = study.user_attrs
        missing = [key for key in signature if key not in attrs]
        n_trials = len(study.get_trials(deepcopy=False))
        # A worker that has just created the study may still be writing its record.
        if not missing or n_trials or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if missing:
        if n_trials == 0:
            for key, value in signature.items():
                study.set_user_attr(key, value)
            return True
        raise ValueError(
            f"{name} has {n_trials} trial(s) but no record of the search space, scoring and "
            "data they were scored with (it was not created by tune_guidance), so they "
            f"cannot be compared with this call's. {FIX_HINT}"
        )
    differences = _signature_differences(attrs, signature, space)
    if differences:
        raise ValueError(
            f"{name} was created with {'; '.join(differences)}. Its trials were scored "
            f"differently and cannot be compared with this call's, so it is not reused. "
            f"{FIX_HINT}"
        )
    return False


def _open_study(
    storage,
    study_name: str | None,
    signature: dict,
    space: dict,
    *,
    replace: bool,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> tuple[optuna.Study, bool, Any]:
    """Create the study (recording its signature) or load and check it; nothing is trained.

    Returns the study, whether this call created (or adopted) it, and the storage.
    """
    where = _describe_storage(storage)
    backend = _storage(storage)
    try:
        if replace and backend is not None and study_name is not None:
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=study_name, storage=backend)
        study, created = _create_or_load_study(
            storage=backend,
            study_name=study_name,
            direction="maximize",
            sampler=sampler,
            pruner=pruner,
        )
    except Exception as err:
        raise ValueError(
            f"Cannot open the Optuna storage {where} ({type(err).__name__}: {err}). " + STORAGE_HINT
        ) from err
    if created:
        for key, value in signature.items():
            study.set_user_attr(key, value)
    else:
        created = _check_existing_study(study, signature, space, where)
    return study, created, backend


def _delete_if_empty(study: optuna.Study, backend) -> None:
    """Remove a study this call created when it has no trial (its training failed)."""
    if backend is None:
        return
    with contextlib.suppress(Exception):
        if not study.get_trials(deepcopy=False):
            optuna.delete_study(study_name=study.study_name, storage=backend)


@contextlib.contextmanager
def _optuna_log_level(level: int):
    """Optuna logs every trial at INFO: keep a library call quiet unless verbose."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(level)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


def _defaults_in_space(template: SCLDSampler, space: dict) -> dict | None:
    """The template's own values of the searched parameters, if the space contains them."""
    defaults = {name: getattr(template, name) for name in space}
    for name, value in defaults.items():
        dist = space[name]
        try:
            inside = dist._contains(dist.to_internal_repr(value))
        except (ValueError, TypeError):
            inside = False
        if not inside:
            return None
    return defaults


class _Objective:
    """Mean cross-validated score of one trial's sampling parameters."""

    def __init__(self, folds: _FoldCache, classifier, scorer, space: dict) -> None:
        self.folds, self.classifier, self.scorer, self.space = folds, classifier, scorer, space
        self.numbers: set[int] = set()

    def __call__(self, trial: optuna.Trial) -> float:
        self.numbers.add(trial.number)
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        params = {name: _suggest(trial, name, dist) for name, dist in self.space.items()}
        scores = []
        try:
            for i in range(len(self.folds.splits)):
                X_train, y_train, X_test, y_test = self.folds.data(i)
                sampler = self.folds.sampler(i).set_params(**params)
                with warnings.catch_warnings():
                    # A filter that cannot fill its quota warns once per class and fold;
                    # the trial's score already tells how well that setting works.
                    warnings.filterwarnings("ignore", message="Filter \\(threshold")
                    X_res, y_res = sampler.fit_resample(X_train, y_train)
                model = clone(self.classifier).fit(X_res, y_res)
                scores.append(float(self.scorer(model, X_test, y_test)))
                trial.report(float(np.mean(scores)), i)
                if i < len(self.folds.splits) - 1 and trial.should_prune():
                    trial.set_user_attr("fold_scores", scores)
                    raise optuna.TrialPruned()
        except optuna.TrialPruned:
            raise
        except Exception as err:
            # Kept with the trial so that the study (and every worker) can say what failed.
            trial.set_user_attr("error", f"{type(err).__name__}: {err}")
            trial.set_user_attr("traceback", traceback.format_exc()[-4000:])
            raise
        trial.set_user_attr("fold_scores", scores)
        return float(np.mean(scores))


#: The files ``plots_dir`` receives, by their key in ``TuningResult.plots``.
PLOT_FILES = {
    "trials": "trials.csv",
    "history": "optimization_history.png",
    "slice": "guidance_vs_score.png",
}


def _save_plots(
    study: optuna.Study, space: dict | None, out: Path, overwrite: bool = False
) -> dict[str, Path]:
    """Optimization history, score against each searched parameter, and the trials table.

    Each file is saved on its own: one that fails is left out, and one RuntimeWarning says
    which failed and why (a file that appeared since the folder was checked is kept, and
    the new one written beside it: the warning names it).
    """
    paths: dict[str, Path] = {}
    failures: list[str] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
    except Exception as err:  # noqa: BLE001 - plots must never cost the result
        failures.append(f"the folder ({type(err).__name__}: {err})")
    else:
        savers = {
            "trials": _save_trials_table,
            "history": _save_history_plot,
            "slice": _save_slice_plot,
        }
        for key, name in PLOT_FILES.items():
            try:
                if savers[key](study, space, out / name, overwrite):
                    paths[key] = out / name
            except Exception as err:  # noqa: BLE001
                failures.append(f"{name} ({type(err).__name__}: {err})")
    if failures:
        warnings.warn(
            f"Could not save {', '.join(failures)} in {str(out)!r}; the tuning result is "
            "unaffected and returned without them.",
            RuntimeWarning,
            stacklevel=3,
        )
    return paths


def _save_trials_table(
    study: optuna.Study, space: dict | None, path: Path, overwrite: bool
) -> bool:
    table = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs"))
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False), overwrite=overwrite)
    return True


def _complete(study: optuna.Study) -> list:
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.value is not None and np.isfinite(t.value)
    ]


def _save_history_plot(
    study: optuna.Study, space: dict | None, path: Path, overwrite: bool
) -> bool:
    complete = _complete(study)
    if not complete:
        return False
    plotting.optimization_history(
        [t.number for t in complete],
        [t.value for t in complete],
        path,
        highlight=[t.number for t in complete if t.user_attrs.get("defaults")],
        overwrite=overwrite,
    )
    return True


def _plot_position(dist: BaseDistribution, value: Any) -> float | None:
    """Where a parameter value goes on its axis: numbers as they are, choices by index."""
    try:
        if isinstance(dist, CategoricalDistribution):
            return float(dist.to_internal_repr(value))
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def _choice_label(choice: Any, width: int = 18) -> str:
    text = _stable_repr(choice)
    return text if len(text) <= width else text[: width - 1] + "…"


def _save_slice_plot(study: optuna.Study, space: dict | None, path: Path, overwrite: bool) -> bool:
    """Score of every complete trial against each searched parameter, one panel each.

    Numeric parameters are placed by value, categorical ones (whatever their choices:
    None, strings, dicts) by their index in the choices. Returns False when nothing can
    be plotted.
    """
    complete = _complete(study)
    dists: dict[str, BaseDistribution] = {}
    for trial in complete:
        for name, dist in trial.distributions.items():
            if space is None or name in space:
                dists[name] = dist  # the latest trial's: what the study searches now
    panels = []
    for name in sorted(dists, key=lambda name: (name != "guidance_scale", name)):
        dist = dists[name]
        points = [
            (_plot_position(dist, t.params[name]), t.value, t.number)
            for t in complete
            if name in t.params
        ]
        points = np.array([p for p in points if p[0] is not None], dtype=float)
        if len(points):
            categorical = isinstance(dist, CategoricalDistribution)
            panels.append(
                {
                    "name": name,
                    "x": points[:, 0],
                    "score": points[:, 1],
                    "trial": points[:, 2],
                    "ticks": [_choice_label(c) for c in dist.choices] if categorical else None,
                    "log": getattr(dist, "log", False),
                }
            )
    if not panels:
        return False
    plotting.parameter_scores(panels, path, overwrite=overwrite)
    return True
