"""Command line: ``scld-aug demo``, ``augment IN.h5ad OUT.h5ad``, ``train IN.h5ad OUT.pt``
(also under ``torchrun``), ``tune IN.h5ad`` and ``benchmark IN.h5ad``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from numbers import Integral

AUGMENT_EPILOG = """\
examples:
  scld-aug augment pancreas.h5ad pancreas_aug.h5ad --labels-key cell_type --layer counts
  scld-aug augment in.h5ad out.h5ad --types mast schwann --target 200 --save-sampler mast.scld
  scld-aug augment in.h5ad out.h5ad --generator atlas.pt   # pretrained: no training

By default every rare type (under 2% of the cells, at least 3 cells) is raised to the
median type size. The output holds the original cells, unchanged, then the synthetic
ones, marked by obs["is_synthetic"]; uns["scld_aug"] records how they were made. With
--layer, the augmented counts are in that layer and X is empty (normalize again downstream)
or, with --normalize-x, log-normalized.
"""


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (the usage itself is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _file_state(path: str) -> tuple | None:
    """What identifies the file at ``path`` now (None if there is none)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _interrupted(command: str, outputs: dict[str, tuple | None]) -> int:
    """The message after Ctrl-C: which outputs were written before it came."""
    written = [path for path, before in outputs.items() if _file_state(path) not in (None, before)]
    if written:
        rest = [path for path in outputs if path not in written]
        print(
            f"scld-aug {command}: interrupted after writing {', '.join(written)}"
            + (f"; {', '.join(rest)} was not written." if rest else "."),
            file=sys.stderr,
        )
    else:
        print(
            f"scld-aug {command}: interrupted; no output was written (existing files are "
            "unchanged).",
            file=sys.stderr,
        )
    return 130


def _error(command: str, err: BaseException) -> None:
    # KeyError's str() adds quotes around the message.
    message = err.args[0] if isinstance(err, KeyError) and err.args else err
    print(f"scld-aug {command}: error: {message}", file=sys.stderr)


# Parameter options are stored apart from the command's own arguments (``output`` is both
# a parameter and the output file).
_DEST = "param:"


def _param_type(p):
    """Parse an option's text and check it against the parameter's constraints."""
    from sklearn.utils._param_validation import (
        Interval,
        InvalidParameterError,
        StrOptions,
        make_constraint,
        validate_parameter_constraints,
    )

    numeric = [c for c in p.constraints if isinstance(c, Interval)]
    words = set().union(*(c.options for c in p.constraints if isinstance(c, StrOptions)))

    def parse(text: str):
        if text.lower() == "none" and None in p.constraints:
            return None
        value = text
        if numeric and text not in words:
            try:
                value = float(text) if numeric[0].type is not Integral else int(text)
            except ValueError:
                kind = "whole number" if numeric[0].type is Integral else "number"
                kind += "".join(f" or {word!r}" for word in sorted(words))
                raise argparse.ArgumentTypeError(f"expected a {kind}, got {text!r}") from None
        try:
            validate_parameter_constraints({p.name: p.constraints}, {p.name: value}, "scld-aug")
        except InvalidParameterError:
            wanted = " or ".join(str(make_constraint(c)) for c in p.constraints)
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text}") from None
        return value

    parse.__name__ = p.name  # argparse names the type in its messages
    return parse


def _add_param_options(parser: argparse.ArgumentParser, command: str) -> None:
    """The options of ``command``: every parameter of :mod:`scld_aug.params` it takes, with
    the parameter's own default, constraint and help (given options override, others keep
    the default)."""
    from sklearn.utils._param_validation import StrOptions

    from scld_aug import params

    group = parser.add_argument_group("model and sampling parameters (see SCLDSampler)")
    for p in params.PARAMS:
        if command not in p.commands:
            continue
        default = f'"{p.default}"' if isinstance(p.default, str) else p.default
        help_text = f"{p.help} (default: {default})".replace("%", "%%")
        if p.py_type == "bool":
            group.add_argument(
                p.option, *p.aliases, dest=_DEST + p.name, action="store_true",
                default=argparse.SUPPRESS,
                help=help_text,
            )  # fmt: skip
            continue
        options = [c for c in p.constraints if isinstance(c, StrOptions)]
        # A number or a word ("auto") is not a closed list of choices.
        closed = options and p.py_type == "str"
        choices = p.choices or (sorted(options[0].options) if closed else None)
        group.add_argument(
            p.option, *p.aliases, dest=_DEST + p.name, type=_param_type(p), default=argparse.SUPPRESS,
            choices=choices, metavar=None if choices else p.name.split("_")[-1].upper(),
            help=help_text,
        )  # fmt: skip


def _given_params(args: argparse.Namespace, command: str) -> dict:
    """Parameters given on the command line (the others keep their defaults)."""
    from scld_aug import params

    return {
        p.name: getattr(args, _DEST + p.name)
        for p in params.PARAMS
        if command in p.commands and hasattr(args, _DEST + p.name)
    }


def _add_run_options(
    parser: argparse.ArgumentParser, command: str, saved: str, with_params: bool
) -> None:
    """Options shared by the commands that train: seed, --quick, the model and sampling
    parameters (only when ``with_params``: they import scikit-learn), and how outputs are
    written."""
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--quick", action="store_true", help="tiny model with few steps, for smoke tests"
    )
    if with_params:
        _add_param_options(parser, command)
    parser.add_argument(
        "--no-anchors",
        action="store_true",
        help=f"write the {saved} without per-cell data of the training cells (latent codes, "
        "library sizes); use before sharing it",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    _add_verbosity(parser)


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    """``-q/--quiet`` and ``-v/--verbose``, the same on every command."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars or tables, only errors"
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also the training losses along the way (the scld_aug logger's DEBUG messages)",
    )


def _add_renamed(parser: argparse.ArgumentParser, old: str, new: str, dest: str) -> None:
    """``old`` kept as a hidden alias of the option ``new`` (a warning names the new one)."""

    class Renamed(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"scld-aug: {old} is now {new}", file=sys.stderr)
            setattr(namespace, dest, values)

    parser.add_argument(old, dest=dest, action=Renamed, help=argparse.SUPPRESS)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    """Where the cell types and the counts are in the input file."""
    parser.add_argument(
        "--labels-key",
        default="cell_type",
        help="obs column with cell types (default: %(default)s)",
    )
    parser.add_argument("--layer", help="layer with raw counts, e.g. counts (default: X)")


def _add_tracking_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--tracking [URI]``: True for the default store, or the URI given."""
    parser.add_argument(
        "--tracking",
        nargs="?",
        const=True,
        default=False,
        metavar="URI",
        help=f"log {what} to MLflow (default URI: $MLFLOW_TRACKING_URI, else "
        "sqlite:///mlruns/mlflow.db)",
    )


def _add_augment_parser(sub, with_params: bool) -> None:
    aug = sub.add_parser(
        "augment",
        help="add synthetic cells of the rare cell types to an .h5ad file",
        description="Train SCLD on an .h5ad file (or load a pretrained generator with "
        "--generator) and write it back with synthetic cells of the rare (or the named) cell "
        "types.",
        epilog=AUGMENT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    aug.add_argument("input", help="input .h5ad file")
    aug.add_argument("output", help="output .h5ad file (must not exist, unless --overwrite)")
    _add_data_options(aug)
    aug.add_argument(
        "--normalize-x",
        action="store_true",
        help="with --layer: write X as the log-normalized augmented layer (log1p of counts "
        "per 10,000), ready for PCA and UMAP (default: X empty)",
    )
    aug.add_argument(
        "--types",
        nargs="+",
        metavar="TYPE",
        help="cell types to augment (default: the types with under 2%% of the cells and "
        "at least 3 cells)",
    )
    aug.add_argument(
        "--target",
        type=_positive_int,
        metavar="N",
        help="cells per augmented type afterwards (default: median type size)",
    )
    _add_run_options(aug, "augment", saved="--save-sampler's sampler", with_params=with_params)
    aug.add_argument("--save-sampler", metavar="PATH", help="also save the fitted sampler there")


def _augment(args: argparse.Namespace) -> int:
    from sklearn.utils._param_validation import InvalidParameterError

    from scld_aug.apps.augment import augment_h5ad
    from scld_aug.presets import QUICK

    options = {**(QUICK if args.quick else {}), **_given_params(args, "augment")}
    log = None if args.quiet else print
    start = time.perf_counter()
    outputs = {path: _file_state(path) for path in (args.output, args.save_sampler) if path}
    try:
        summary = augment_h5ad(
            args.input,
            args.output,
            labels_key=args.labels_key,
            layer=args.layer,
            cell_types=args.types,
            target=args.target,
            random_state=args.seed,
            overwrite=args.overwrite,
            save_sampler=args.save_sampler,
            include_anchors=not args.no_anchors,
            normalize_x=args.normalize_x,
            verbose=not args.quiet,
            **options,
        )
    except InvalidParameterError as err:
        _error("augment", err)
        return 2
    except (ValueError, KeyError, OSError) as err:  # AugmentError included
        _error("augment", err)
        return 1
    except KeyboardInterrupt:
        return _interrupted("augment", outputs)
    if log is not None:
        n_new = int(summary["synthetic"].sum())
        log(summary.to_string())
        log(
            f"Wrote {args.output}: {int(summary['after'].sum())} cells "
            f"({int(summary['before'].sum())} real + {n_new} synthetic, "
            f'marked by obs["is_synthetic"]) in {time.perf_counter() - start:.0f} s'
        )
        if args.layer and args.normalize_x:
            log(
                f"The augmented counts are in layers[{args.layer!r}]; X holds them "
                "log-normalized (log1p of counts per 10,000)."
            )
        elif args.layer:
            log(
                f"The augmented matrix is in layers[{args.layer!r}] and X is empty: normalize "
                "again downstream, or pass --normalize-x."
            )
        if args.save_sampler:
            log(f"Saved the fitted sampler to {args.save_sampler} (SCLDSampler.load)")
    return 0


TUNE_EPILOG = """\
examples:
  scld-aug tune pancreas.h5ad --labels-key cell_type --layer counts --n-trials 20
  scld-aug tune in.h5ad --n-trials 40 --storage sqlite:///study.db --study-name pancreas \\
      --tracking --output-dir tuning --save-sampler tuned.scld

Each cross-validation fold trains one generator; trials only resample from it, so 20
trials cost about as much as one. A trial over-samples the rare types (or --types, to
--target cells) in the training folds, fits a logistic regression on log-normalized
counts and scores it on the real held-out cells. Several processes can share a study
through --storage and --study-name.
"""


def _add_tune_parser(sub, with_params: bool) -> None:
    tune = sub.add_parser(
        "tune",
        help="tune guidance against a classifier on an .h5ad file (Optuna; MLflow optional)",
        description="Search the sampling parameters (guidance scale, reference, post-guidance, "
        "filter) for the best cross-validated score of a classifier trained on augmented "
        "folds of an .h5ad file.",
        epilog=TUNE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tune.add_argument("input", help="input .h5ad file")
    _add_data_options(tune)
    tune.add_argument(
        "--types", nargs="+", metavar="TYPE", help="cell types to over-sample (default: rare)"
    )
    tune.add_argument("--target", type=_positive_int, metavar="N", help="cells per type afterwards")
    tune.add_argument(
        "--n-trials", type=_positive_int, default=20, help="trials (default: %(default)s)"
    )
    tune.add_argument("--cv", type=_positive_int, default=3, help="folds (default: %(default)s)")
    tune.add_argument(
        "--scoring", default="f1_macro", help="scikit-learn scorer (default: %(default)s)"
    )
    tune.add_argument("--storage", help="Optuna storage, e.g. sqlite:///study.db")
    tune.add_argument("--study-name", help="study name (needed to share a study)")
    _add_tracking_option(tune, "the study")
    tune.add_argument(
        "--output-dir", dest="plots_dir", help="save the study's plots and trials.csv there"
    )
    _add_renamed(tune, "--plots-dir", "--output-dir", dest="plots_dir")
    tune.add_argument(
        "--save-sampler", metavar="PATH", help="refit the best sampler on all cells, save it"
    )
    _add_run_options(tune, "augment", saved="--save-sampler's sampler", with_params=with_params)


def _tune(args: argparse.Namespace) -> int:
    from sklearn.utils._param_validation import InvalidParameterError

    from scld_aug import SCLDSampler
    from scld_aug.apps.augment import AugmentError, checked_input, plan_augmentation
    from scld_aug.files import OutputPathError, check_output_path, same_file
    from scld_aug.presets import MIN_CELLS, QUICK
    from scld_aug.tuning import local_storage_file, tune_guidance

    options = {**(QUICK if args.quick else {}), **_given_params(args, "augment")}
    outputs = {args.save_sampler: _file_state(args.save_sampler)} if args.save_sampler else {}
    try:
        if not os.path.isfile(args.input):
            where = "is a directory" if os.path.isdir(args.input) else "does not exist"
            raise AugmentError(
                f"Input file {args.input!r} {where}; pass the path of an .h5ad file."
            )
        # Every file tune writes is checked before the study: none may be the input.
        try:
            if args.save_sampler:
                check_output_path(
                    args.save_sampler,
                    inputs=[args.input],
                    overwrite=args.overwrite,
                    what="--save-sampler",
                )
            study_file = local_storage_file(args.storage)
            if study_file is not None and same_file(study_file, args.input):
                raise OutputPathError(
                    f"The study storage {args.storage!r} is the input file; choose another "
                    "path so the input is kept."
                )
        except OutputPathError as err:
            raise AugmentError(str(err)) from None
        likelihood = options.get("likelihood", "auto")
        adata, X, y = checked_input(args.input, args.labels_key, args.layer, likelihood)
        min_cells = options.get("min_class_size", MIN_CELLS)
        strategy = plan_augmentation(y, args.types, args.target, min_cells)
        sampler = SCLDSampler(
            random_state=args.seed,
            sampling_strategy=strategy,
            verbose=not args.quiet,
            **options,
        )
        result = tune_guidance(
            X,
            y,
            sampler=sampler,
            cv=args.cv,
            scoring=args.scoring,
            n_trials=args.n_trials,
            storage=args.storage,
            study_name=args.study_name,
            plots_dir=args.plots_dir,
            overwrite=args.overwrite,
            tracking=args.tracking,
            refit=bool(args.save_sampler),
            random_state=args.seed,
            verbose=not args.quiet,
        )
    except InvalidParameterError as err:
        _error("tune", err)
        return 2
    except (ValueError, KeyError, OSError) as err:  # AugmentError included
        _error("tune", err)
        return 1
    except KeyboardInterrupt:
        return _interrupted("tune", outputs)
    # The study's result is printed before the sampler is saved: a failed save must not
    # hide what the study found.
    if not args.quiet:
        print(f"Best {args.scoring}: {result.best_score:.4f}" + _defaults_note(result))
        print("Best parameters: " + ", ".join(f"{k}={v}" for k, v in result.best_params.items()))
        print(
            f"{len(result.study.trials)} trials, {result.n_trainings} generator trainings, "
            f"{result.seconds:.0f} s" + (f"; MLflow run {result.run_id}" if result.run_id else "")
        )
    if args.save_sampler:
        try:
            # The path was checked before the study: a file that appeared since is kept.
            result.sampler._write(args.save_sampler, not args.no_anchors, args.overwrite)
        except (ValueError, OSError) as err:  # OutputConflictError included
            _error("tune", f"the tuned sampler was not saved: {err}")
            return 1
        except KeyboardInterrupt:
            return _interrupted("tune", outputs)
        if not args.quiet:
            print(f"Saved the tuned sampler to {args.save_sampler} (SCLDSampler.load)")
    return 0


def _defaults_note(result) -> str:
    return "" if result.default_score is None else f" (defaults: {result.default_score:.4f})"


BENCHMARK_EPILOG = """\
examples:
  scld-aug benchmark pancreas.h5ad --labels-key cell_type --layer counts
  scld-aug benchmark in.h5ad --protocols downsample --k 10 --types "CD14 Monocyte" B \\
      --classifiers logreg knn --seeds 5 --tracking
  scld-aug benchmark in.h5ad --methods none SMOTE SCLD "SCLD w=4" scVI --output-dir bench
  scld-aug benchmark in.h5ad --methods "SCLD w=3" --keep-other-methods --output-dir bench

Protocols (stratified 70/30 splits, one per seed; augmentation on the training part only,
classifiers scored on untouched real test cells):
  natural     types under 2% of the training cells raised to the median type size
  downsample  --types (default: the 3 largest after the majority) cut to --k training
              cells each and augmented back to their size
  fidelity    synthetic vs held-out real cells per type: MMD, two-sample AUC, gene
              statistics, novelty (memorization ratio) and conditional fidelity

Writes OUTPUT_DIR/: results_downstream.csv and results_fidelity.csv (every number),
meta.json, report.md (mean +- sd over seeds) and plots. Trained generators are cached in
OUTPUT_DIR/.generator_cache, so SCLD variants and reruns share them. The whole benchmark on
2,000 cells takes about an hour on 2 CPU cores; --quick is a smoke test.
"""


def _add_benchmark_parser(sub, with_params: bool) -> None:
    bench = sub.add_parser(
        "benchmark",
        help="compare augmentation methods on an .h5ad file (downstream F1 and fidelity)",
        description="Run the benchmark protocols of scld-aug's evaluation on your own data: "
        "does each augmentation method help a classifier on the rare types, and do its cells "
        "look like held-out real ones?",
        epilog=BENCHMARK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("input", help="input .h5ad file with raw counts (in X or --layer)")
    _add_data_options(bench)
    bench.add_argument(
        "--output-dir", dest="output", help="results folder (default: <input name>_benchmark)"
    )
    _add_renamed(bench, "--output", "--output-dir", dest="output")
    bench.add_argument("--name", help="dataset name in the report (default: input file name)")
    bench.add_argument(
        "--protocols",
        nargs="+",
        choices=["natural", "downsample", "fidelity"],
        default=["natural", "downsample", "fidelity"],
        help="protocols to run (default: all three)",
    )
    bench.add_argument(
        "--methods",
        nargs="+",
        metavar="METHOD",
        default=["none", "RandomOverSampler", "SMOTE", "ADASYN", "SCLD"],
        help="none, RandomOverSampler, SMOTE, ADASYN, SCLD, scVI (needs scvi-tools), or SCLD "
        "variants such as 'SCLD w=3' (default: all but scVI)",
    )
    bench.add_argument(
        "--classifiers",
        nargs="+",
        choices=["logreg", "knn", "random_forest"],
        default=["logreg", "knn", "random_forest"],
        help="downstream classifiers (default: all three)",
    )
    bench.add_argument(
        "--seeds", type=_positive_int, default=5, help="splits, seeds 0..N-1 (default: 5)"
    )
    bench.add_argument(
        "--fidelity-seeds",
        type=_positive_int,
        default=5,
        help="of them, how many the fidelity protocol uses (default: 5)",
    )
    bench.add_argument(
        "--k", type=_positive_int, nargs="+", default=[10, 25], help="training cells per "
        "downsampled type (default: 10 25)",
    )  # fmt: skip
    bench.add_argument("--types", nargs="+", metavar="TYPE", help="types to downsample")
    bench.add_argument("--cache", help="generator cache (default: OUTPUT_DIR/.generator_cache)")
    bench.add_argument(
        "--scvi-epochs", type=_positive_int, help="scVI epochs (default: scvi-tools' heuristic)"
    )
    _add_tracking_option(bench, "the results")
    bench.add_argument(
        "--keep-other-methods",
        action="store_true",
        help="keep the saved rows of methods not run now (same seeds and types)",
    )
    bench.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild report.md and the plots from OUTPUT_DIR's saved results (runs nothing)",
    )
    bench.add_argument(
        "--quick", action="store_true", help="tiny SCLD model and 2 seeds: a smoke test"
    )
    if with_params:
        _add_param_options(bench, "augment")
    bench.add_argument("--overwrite", action="store_true", help="replace results in OUTPUT_DIR")
    _add_verbosity(bench)


def _benchmark(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sklearn.utils._param_validation import InvalidParameterError

    from scld_aug.apps.augment import checked_input
    from scld_aug.benchmark import rebuild_report, run_benchmark
    from scld_aug.presets import QUICK

    stem = Path(args.input).stem
    out = Path(args.output or f"{stem}_benchmark")
    options = {**(QUICK if args.quick else {}), **_given_params(args, "augment")}
    files = ("results_downstream.csv", "results_fidelity.csv", "meta.json", "report.md")
    outputs = {str(out / name): _file_state(str(out / name)) for name in files}
    try:
        if args.report_only:
            rebuild_report(out, args.tracking)
            return 0
        # The benchmark's pipelines log-normalize: counts only, whatever the likelihood.
        likelihood = options.get("likelihood", "auto")
        _, X, y = checked_input(args.input, args.labels_key, args.layer, likelihood, True)
        command = "scld-aug " + " ".join(sys.argv[1:] if args.argv is None else args.argv)
        run_benchmark(
            X,
            y,
            out,
            name=args.name or stem,
            protocols_run=args.protocols,
            methods=args.methods,
            classifiers=args.classifiers,
            seeds=min(args.seeds, 2) if args.quick else args.seeds,
            fidelity_seeds=args.fidelity_seeds,
            ks=args.k,
            types=args.types,
            cache=args.cache,
            scld_params=options,
            scvi_epochs=args.scvi_epochs,
            overwrite=args.overwrite,
            keep_other_methods=args.keep_other_methods,
            tracking=args.tracking,
            command=command,
        )
    except InvalidParameterError as err:
        _error("benchmark", err)
        return 2
    except (ValueError, KeyError, OSError, ImportError) as err:  # BenchmarkError included
        _error("benchmark", err)
        return 1
    except KeyboardInterrupt:
        # Results are written once every protocol has finished; say what got written.
        return _interrupted("benchmark", outputs)
    if not args.quiet:
        print(f"Report: {out / 'report.md'}")
    return 0


TRAIN_EPILOG = """\
examples:
  scld-aug train atlas.h5ad atlas.pt --labels-key cell_type --layer counts
  scld-aug train atlas.h5ad atlas.pt --labels-key cell_type --backed
  torchrun --nproc_per_node 4 -m scld_aug train atlas.h5ad atlas.pt --labels-key cell_type

Then, without training again:
  SCLDSampler(generator="atlas.pt").fit_resample(X, y)

Under torchrun every process trains on its own minibatches (--batch-size cells each) and
PyTorch DDP averages the gradients: NCCL with one GPU per process, gloo on CPUs.
"""


def _add_train_parser(sub, with_params: bool) -> None:
    train = sub.add_parser(
        "train",
        help="pretrain a generator on an .h5ad file (single process or torchrun DDP)",
        description="Train an SCLD generator once and save it for SCLDSampler(generator=...).",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("input", help="input .h5ad file")
    train.add_argument("output", help="where to save the generator (.pt)")
    _add_data_options(train)
    train.add_argument(
        "--backed",
        action="store_true",
        help="stream the matrix from disk instead of loading it (memory flat in the cells)",
    )
    _add_run_options(train, "train", saved="generator file", with_params=with_params)


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sklearn.utils._param_validation import InvalidParameterError

    from scld_aug.distributed import launched_world
    from scld_aug.presets import QUICK
    from scld_aug.pretrain import TRAINING_OPTIONS, pretrain

    world = launched_world()
    out = Path(args.output)
    outputs = {args.output: _file_state(args.output)}
    quick = {k: v for k, v in QUICK.items() if k in TRAINING_OPTIONS} if args.quick else {}
    options = {**quick, **_given_params(args, "train")}
    device = options.pop("device", "auto")
    torch_compile = options.pop("torch_compile", False)
    n_jobs = options.pop("n_jobs", None)
    start = time.perf_counter()
    try:
        generator = pretrain(
            args.input,
            args.labels_key,
            layer=args.layer,
            backed=args.backed,
            out=out,
            overwrite=args.overwrite,
            include_anchors=not args.no_anchors,
            random_state=args.seed,
            device=device,
            n_jobs=n_jobs,
            verbose=not args.quiet,
            torch_compile=torch_compile,
            **options,
        )
    except InvalidParameterError as err:
        _error("train", err)
        return 2
    except (ValueError, KeyError, OSError) as err:
        _error("train", err)
        return 1
    except KeyboardInterrupt:
        return _interrupted("train", outputs)
    if world.is_main and not args.quiet:
        processes = f" with {world.size} DDP processes" if world.distributed else ""
        print(
            f"Trained{processes} in {time.perf_counter() - start:.0f} s: "
            f"{len(generator.classes)} cell types ({', '.join(map(str, generator.classes))}), "
            f"{generator.n_genes} genes ({len(generator.panel.genes)} modelled), likelihood "
            f"{generator.panel.likelihood}."
        )
        print(f'Saved {out}; use it with SCLDSampler(generator="{out}").')
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``scld-aug`` command line; returns the exit status."""
    from scld_aug import __version__

    parser = _Parser(prog="scld-aug", description="Single-cell latent diffusion augmentation.")
    parser.add_argument("--version", action="version", version=f"scld-aug {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="augment the shipped Baron pancreas data and compare with SMOTE",
        description="Augment the shipped Baron pancreas data (1,937 cells, 14 types): raise "
        "every rare type to the median type size, print the cell counts before and after, "
        "and compare a logistic regression's F1 with no augmentation, random duplication, "
        "SMOTE and SCLD in cross-validation. Writes the augmented .h5ad, tables and figures.",
    )
    demo.add_argument(
        "--output-dir",
        default="scld_demo_output",
        help="folder for the outputs (default: %(default)s)",
    )
    demo.add_argument(
        "--folds", type=_positive_int, default=3, help="cross-validation folds (default: 3)"
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--quick", action="store_true", help="tiny model, for a smoke test")
    demo.add_argument(
        "--overwrite", action="store_true", help="replace the files of an earlier run there"
    )
    _add_verbosity(demo)
    # The parameter options import scikit-learn: only the command being run gets them, so
    # that --version and the overview --help answer at once. The first word that is not an
    # option is the command (the top level has no options that take a value).
    words = sys.argv[1:] if argv is None else argv
    command = next((word for word in words if not word.startswith("-")), None)
    _add_augment_parser(sub, with_params=command == "augment")
    _add_train_parser(sub, with_params=command == "train")
    _add_tune_parser(sub, with_params=command == "tune")
    _add_benchmark_parser(sub, with_params=command == "benchmark")
    args = parser.parse_args(argv)
    args.argv = argv
    from scld_aug.logs import console

    with console(quiet=args.quiet, verbose=args.verbose):
        if args.command == "demo":
            from scld_aug.apps.demo import run_demo
            from scld_aug.files import OutputPathError

            try:
                run_demo(
                    args.output_dir,
                    n_folds=args.folds,
                    seed=args.seed,
                    quick=args.quick,
                    overwrite=args.overwrite,
                    progress=not args.quiet,
                )
            except OutputPathError as err:
                _error("demo", err)
                return 1
        elif args.command == "augment":
            return _augment(args)
        elif args.command == "train":
            return _train(args)
        elif args.command == "tune":
            return _tune(args)
        elif args.command == "benchmark":
            return _benchmark(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
