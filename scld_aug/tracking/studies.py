"""Logging an Optuna study of :func:`scld_aug.tuning.tune_guidance`: one parent run for
the study, one nested run per finished trial, the best tagged, the plots attached."""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scld_aug.tracking.transport import RunLogger

if TYPE_CHECKING:
    import optuna


class StudyTracker:
    """MLflow logging of a study: a parent run, a nested run per finished trial.

    Tracking must never cost the result: every step is guarded, and the first failure
    (in MLflow or in this code) warns once, ends the parent run as failed if it can, and
    turns the tracker off.
    """

    def __init__(self, tracking, experiment, study, template, space, scoring, splits) -> None:
        self.parent = None
        self.children: dict[int, Any] = {}
        self._warned = [False]
        if tracking:
            self._guard("starting the study run", self._start, tracking, experiment, study,
                        template, space, scoring, splits)  # fmt: skip

    def _start(self, tracking, experiment, study, template, space, scoring, splits) -> None:
        uri = tracking if isinstance(tracking, str) else None
        self.parent = RunLogger(
            f"tune_guidance {study.study_name}",
            experiment,
            uri,
            tags={"scld_aug.kind": "tuning", "optuna.study_name": study.study_name},
        )
        # One flag for the runs' own warning (RunLogger) and this tracker's: warn once.
        self._warned = getattr(self.parent, "_warned", self._warned)
        params = {f"sampler.{k}": v for k, v in template.get_params(deep=False).items()}
        params.update(
            {f"space.{name}": repr(dist) for name, dist in space.items()},
            scoring=str(scoring),
            n_folds=len(splits),
        )
        self.parent.log_params(params)

    def _guard(self, step: str, method, *args):
        try:
            return method(*args)
        except Exception as err:  # noqa: BLE001 - tracking must never break the study
            parent, self.parent = self.parent, None
            if parent is not None:
                with contextlib.suppress(Exception):
                    parent.end("FAILED")
            if not self._warned[0]:
                self._warned[0] = True
                warnings.warn(
                    f"MLflow tracking of the study failed while {step} "
                    f"({type(err).__name__}: {err}); the study continues without tracking "
                    "and its result is unaffected.",
                    RuntimeWarning,
                    stacklevel=4,
                )
            return None

    def log_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Optuna callback: one nested run for a finished trial."""
        self._guard(f"logging trial {trial.number}", self._log_trial, trial)

    def _log_trial(self, trial: optuna.trial.FrozenTrial) -> None:
        if self.parent is None or not self.parent.active:
            return
        run = self.parent.child(
            f"trial {trial.number}",
            tags={
                "optuna.trial_number": trial.number,
                "optuna.state": trial.state.name,
                "defaults": bool(trial.user_attrs.get("defaults", False)),
            },
        )
        run.log_params({k: v for k, v in trial.params.items()})
        if trial.value is not None:
            run.log_metrics({"score": trial.value})
        for step, value in sorted(trial.intermediate_values.items()):
            run.log_metrics({"score_running_mean": value}, step=step)
        for i, value in enumerate(trial.user_attrs.get("fold_scores", [])):
            run.log_metrics({"fold_score": value}, step=i)
        if "error" in trial.user_attrs:
            run.set_tags({"error": trial.user_attrs["error"][:5000]})
        run.end("FINISHED" if trial.state.name in {"COMPLETE", "PRUNED"} else "FAILED")
        self.children[trial.number] = run

    def finish(self, result, plots_dir, save_plots) -> str | None:
        """Log the outcome and the plots on the parent run; its id, or None untracked."""
        return self._guard(
            "logging the study's result", self._finish, result, plots_dir, save_plots
        )

    def _finish(self, result, plots_dir, save_plots) -> str | None:
        if self.parent is None:
            return None
        best = result.study.best_trial.number
        if best in self.children:
            self.children[best].set_tags({"best_trial": "true"})
        self.parent.set_tags({"best_trial_number": best})
        self.parent.log_params({f"best.{k}": v for k, v in result.best_params.items()})
        metrics = {
            "best_score": result.best_score,
            "n_trainings": result.n_trainings,
            "n_failed_trials": len(result.failed_trials),
            "seconds": result.seconds,
        }
        if result.default_score is not None:
            metrics["default_score"] = result.default_score
        self.parent.log_metrics(metrics)
        if plots_dir is None:
            with tempfile.TemporaryDirectory() as tmp:
                for path in save_plots(result.study, None, Path(tmp)).values():
                    self.parent.log_artifact(path, "tuning")
        else:
            for path in result.plots.values():
                self.parent.log_artifact(path, "tuning")
        if result.sampler is not None:  # the refit tuned sampler, loadable from the run
            from scld_aug.tracking import models

            with tempfile.TemporaryDirectory() as tmp:
                models.log_model(self.parent, result.sampler, Path(tmp))
        self.parent.end()
        return self.parent.run_id if self.parent.active else None

    def end(self, status: str) -> None:
        """End the parent run with ``status`` (the study failed)."""
        if self.parent is not None:
            self._guard("ending the study run", self.parent.end, status)
