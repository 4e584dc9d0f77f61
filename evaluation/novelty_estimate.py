"""Does the fit-time novelty of ``latent_noise="auto"`` track the memorization ratio on
held-out cells?

``python -m evaluation.novelty_estimate --dataset pbmc --generators DIR --output x.csv``

For each seed of the downsampling protocol (``evaluation.ablation``'s splits and saved
generators) and each fixed ``latent_noise`` level, it generates the cut types' cells and
records, per type, in the embedding of the training cells:

* ``memorization_ratio``: :func:`scld_aug.metrics.memorization` against the type's held-out
  test cells (what the reports show; not available at fit time);
* ``novelty``: :func:`scld_aug.noise_choice.novelty` against the type's training cells
  alone (their leave-one-out spread in place of held-out cells: what ``"auto"`` uses).

With ``--encoder-choice`` it records instead what ``kl_weight="auto"`` measures on each
seed's generator: :func:`scld_aug.encoder_choice.median_novelty` (every type, default
sampling, no latent noise; the seed training derives), and the weight it would choose
(``--variant`` names the saved generators to read, e.g. ``kl=0``).
"""

from __future__ import annotations

import argparse

import pandas as pd

from evaluation import ablation
from evaluation.__main__ import load
from scld_aug import SCLDGenerator
from scld_aug.benchmark.protocols import default_downsample_types, downsampled
from scld_aug.metrics import ReferenceEmbedding, memorization
from scld_aug.noise_choice import novelty


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.novelty_estimate", description=__doc__.splitlines()[0]
    )
    ablation.add_protocol_arguments(parser)
    parser.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.3, 0.6])
    parser.add_argument("--generators", required=True, help="the ablation's saved generators")
    parser.add_argument("--output", required=True, help="CSV of every number")
    parser.add_argument(
        "--encoder-choice",
        action="store_true",
        help="record kl_weight='auto''s measurement on each seed's generator instead",
    )
    parser.add_argument("--variant", default="default", help="saved generators' variant")
    args = parser.parse_args(argv)
    X, y = load(args.dataset, args.labels_key)
    types = args.types or default_downsample_types(y)
    if args.encoder_choice:
        return _encoder_choice(args, X, y, types)
    rows = []
    for seed in args.seeds:
        train, train_k, test, targets = downsampled(y, seed, args.k, types)
        Xk, yk = X[train_k], y[train_k]
        path = ablation.saved_generator(args.generators, args.dataset, args.k, seed, "default")
        generator = SCLDGenerator.load(path)
        embedding = ReferenceEmbedding().fit(Xk)
        for level in args.levels:
            _, X_res, y_res = ablation.resample(
                generator, targets, seed, args.threads, Xk, yk, latent_noise=level
            )
            synthetic, labels = X_res[len(yk) :], y_res[len(yk) :]
            for t in types:
                real = embedding.transform(Xk[yk == t])
                cells = embedding.transform(synthetic[labels == t])
                held_out = embedding.transform(X[test[y[test] == t]])
                rows.append(
                    {
                        "seed": seed,
                        "latent_noise": level,
                        "cell_type": t,
                        "memorization_ratio": memorization(real, cells, held_out)["ratio"],
                        "novelty": novelty(real, cells),
                    }
                )
        pd.DataFrame(rows).to_csv(args.output, index=False)
        print(f"seed {seed} done", flush=True)
    table = pd.DataFrame(rows).pivot_table(
        index=["latent_noise", "cell_type"],
        values=["memorization_ratio", "novelty"],
        aggfunc=["min", "median", "max"],
    )
    with pd.option_context("display.width", 200):
        print(table.round(2).to_string())
    return 0


def _encoder_choice(args, X, y, types) -> int:
    import scipy.sparse as sp

    from scld_aug import encoder_choice
    from scld_aug._random import derive_seeds

    rows = []
    for seed in args.seeds:
        _, train_k, _, _ = downsampled(y, seed, args.k, types)
        generator = SCLDGenerator.load(
            ablation.saved_generator(args.generators, args.dataset, args.k, seed, args.variant)
        )
        # The seed train_generator measures with.
        training_seed = derive_seeds(seed, 2)[0]
        value = encoder_choice.median_novelty(
            generator, sp.csr_matrix(X[train_k]), y[train_k], training_seed
        )
        chosen = (
            encoder_choice.VARIATIONAL
            if encoder_choice.needs_variational(value)
            else encoder_choice.DETERMINISTIC
        )
        rows.append({"seed": seed, "median_novelty": value, "kl_weight_chosen": chosen})
        print(f"seed {seed}: median novelty {value:.3f} -> kl_weight {chosen}", flush=True)
    pd.DataFrame(rows).to_csv(args.output, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
