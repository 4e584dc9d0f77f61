"""Command line: ``scld-aug demo``, ``scld-aug augment IN.h5ad OUT.h5ad`` and
``scld-aug train IN.h5ad OUT.pt`` (also under ``torchrun``)."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

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


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
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


def _add_augment_parser(sub) -> None:
    import inspect

    from scld_aug.sampler import SCLDSampler

    # Help shows the sampler's own defaults, so it cannot drift from them.
    defaults = {name: p.default for name, p in inspect.signature(SCLDSampler).parameters.items()}
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
    aug.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    aug.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto: a GPU when there is one, else the CPU (default: %(default)s)",
    )
    aug.add_argument(
        "--likelihood",
        choices=["auto", "nb", "gaussian"],
        default="auto",
        help="decoder likelihood; 'gaussian' models non-count (normalized) data as it is",
    )
    aug.add_argument(
        "--guidance-scale",
        type=_non_negative_float,
        metavar="W",
        help=f"classifier-free guidance strength (default: {defaults['guidance_scale']})",
    )
    aug.add_argument(
        "--quick", action="store_true", help="tiny model with few steps, for smoke tests"
    )
    for option, param, what in (
        ("autoencoder-steps", "autoencoder_steps", "autoencoder training steps"),
        ("diffusion-steps", "diffusion_steps", "diffusion training steps"),
        ("classifier-steps", "classifier_steps", "latent classifier training steps"),
        ("sampling-steps", "n_sampling_steps", "DDIM steps per synthetic cell"),
    ):
        aug.add_argument(
            f"--{option}",
            type=_positive_int,
            metavar="N",
            help=f"{what} (default: {defaults[param]})",
        )
    aug.add_argument("--save-sampler", metavar="PATH", help="also save the fitted sampler there")
    aug.add_argument(
        "--no-anchors",
        action="store_true",
        help="save the sampler without per-cell data of the training cells (latent codes, "
        "library sizes); use before sharing it",
    )
    aug.add_argument("--overwrite", action="store_true", help="replace existing output files")
    aug.add_argument("--quiet", action="store_true", help="no progress bars or tables, only errors")


def _augment(args: argparse.Namespace) -> int:
    from sklearn.utils._param_validation import InvalidParameterError

    from scld_aug.augment import augment_h5ad
    from scld_aug.demo import QUICK

    params = dict(QUICK) if args.quick else {}
    overrides = {
        "guidance_scale": args.guidance_scale,
        "autoencoder_steps": args.autoencoder_steps,
        "diffusion_steps": args.diffusion_steps,
        "classifier_steps": args.classifier_steps,
        "n_sampling_steps": args.sampling_steps,
    }
    params.update({k: v for k, v in overrides.items() if v is not None})
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
            device=args.device,
            likelihood=args.likelihood,
            **params,
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
    from scld_aug.train import TrainingConfig

    defaults = TrainingConfig()
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
    train.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    train.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    train.add_argument("--likelihood", choices=["auto", "nb", "gaussian"], default="auto")
    train.add_argument("--quick", action="store_true", help="tiny model, for smoke tests")
    for option, param in (
        ("n-top-genes", "n_top_genes"),
        ("autoencoder-steps", "autoencoder_steps"),
        ("diffusion-steps", "diffusion_steps"),
        ("classifier-steps", "classifier_steps"),
        ("batch-size", "batch_size"),
    ):
        train.add_argument(
            f"--{option}",
            type=_positive_int,
            metavar="N",
            help=f"(default: {getattr(defaults, param)})",
        )
    train.add_argument(
        "--amp", action="store_true", help="bfloat16 autocast for the forward passes (GPUs)"
    )
    train.add_argument("--compile", action="store_true", help="train through torch.compile")
    train.add_argument(
        "--no-anchors",
        action="store_true",
        help="save without per-cell data of the training cells (latent codes, library "
        "sizes); use before sharing the file",
    )
    train.add_argument("--overwrite", action="store_true", help="replace an existing output")
    train.add_argument("--quiet", action="store_true", help="no progress bars, only errors")


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sklearn.utils._param_validation import InvalidParameterError

    from scld_aug.demo import QUICK
    from scld_aug.distributed import launched_world
    from scld_aug.pretrain import TRAINING_OPTIONS, pretrain

    world = launched_world()
    out = Path(args.output)
    outputs = {args.output: _file_state(args.output)}
    options = {k: v for k, v in QUICK.items() if k in TRAINING_OPTIONS} if args.quick else {}
    options["likelihood"] = args.likelihood
    for name in (
        "n_top_genes",
        "autoencoder_steps",
        "diffusion_steps",
        "classifier_steps",
        "batch_size",
    ):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.amp:
        options["mixed_precision"] = True
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
            device=args.device,
            verbose=not args.quiet,
            torch_compile=args.compile,
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
        from scld_aug.demo import run_demo

        run_demo(args.output_dir, n_folds=args.folds, seed=args.seed, quick=args.quick)
    elif args.command == "augment":
        return _augment(args)
    elif args.command == "train":
        return _train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
