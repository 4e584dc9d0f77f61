"""Command line: ``scld-aug demo``, ``scld-aug augment IN.h5ad OUT.h5ad`` and
``scld-aug train IN.h5ad OUT.pt`` (also under ``torchrun``)."""

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

By default every rare type (under 2% of the cells, at least 3 cells) is raised to the
median type size. The output holds the original cells, unchanged, then the synthetic
ones, marked by obs["is_synthetic"]. With --layer, the augmented counts are in that
layer and X is empty: normalize again downstream.
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


def _add_run_options(parser: argparse.ArgumentParser, command: str, saved: str) -> None:
    """Options shared by the commands that train: seed, --quick, the model and sampling
    parameters, and how outputs are written."""
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--quick", action="store_true", help="tiny model with few steps, for smoke tests"
    )
    _add_param_options(parser, command)
    parser.add_argument(
        "--no-anchors",
        action="store_true",
        help=f"write the {saved} without per-cell data of the training cells (latent codes, "
        "library sizes); use before sharing it",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bars or tables, only errors"
    )


def _add_augment_parser(sub) -> None:
    aug = sub.add_parser(
        "augment",
        help="add synthetic cells of the rare cell types to an .h5ad file",
        description="Train SCLD on an .h5ad file and write it back with synthetic cells "
        "of the rare (or the named) cell types.",
        epilog=AUGMENT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    aug.add_argument("input", help="input .h5ad file")
    aug.add_argument("output", help="output .h5ad file (must not exist, unless --overwrite)")
    aug.add_argument(
        "--labels-key",
        default="cell_type",
        help="obs column with cell types (default: %(default)s)",
    )
    aug.add_argument("--layer", help="layer with raw counts, e.g. counts (default: X)")
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
    _add_run_options(aug, "augment", saved="--save-sampler's sampler")
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
            verbose=not args.quiet,
            log=log,
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
        if args.layer:
            log(
                f"The augmented matrix is in layers[{args.layer!r}] and X is empty: normalize "
                "again downstream."
            )
        if args.save_sampler:
            log(f"Saved the fitted sampler to {args.save_sampler} (SCLDSampler.load)")
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


def _add_train_parser(sub) -> None:
    train = sub.add_parser(
        "train",
        help="pretrain a generator on an .h5ad file (single process or torchrun DDP)",
        description="Train an SCLD generator once and save it for SCLDSampler(generator=...).",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("input", help="input .h5ad file")
    train.add_argument("output", help="where to save the generator (.pt)")
    train.add_argument("--labels-key", default="cell_type", help="obs column with cell types")
    train.add_argument("--layer", help="layer with raw counts, e.g. counts (default: X)")
    train.add_argument(
        "--backed",
        action="store_true",
        help="stream the matrix from disk instead of loading it (memory flat in the cells)",
    )
    _add_run_options(train, "train", saved="generator file")


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
    parser = _Parser(prog="scld-aug", description="Single-cell latent diffusion augmentation.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="augment the shipped Baron pancreas data and compare with SMOTE"
    )
    demo.add_argument("--output-dir", default="scld_demo_output")
    demo.add_argument("--folds", type=int, default=3)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quick", action="store_true", help="tiny model, for a smoke test")
    _add_augment_parser(sub)
    _add_train_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from scld_aug.apps.demo import run_demo

        run_demo(args.output_dir, n_folds=args.folds, seed=args.seed, quick=args.quick)
    elif args.command == "augment":
        return _augment(args)
    elif args.command == "train":
        return _train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
