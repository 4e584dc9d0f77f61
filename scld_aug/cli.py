"""Command line: ``scld-aug demo``."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scld-aug", description="Single-cell latent diffusion augmentation."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="augment the shipped Baron pancreas data and compare with SMOTE"
    )
    demo.add_argument("--output-dir", default="scld_demo_output")
    demo.add_argument("--folds", type=int, default=3)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quick", action="store_true", help="tiny model, for a smoke test")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from scld_aug.demo import run_demo

        run_demo(args.output_dir, n_folds=args.folds, seed=args.seed, quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
