"""Can a sampler choose a training variant (e.g. ``kl_weight``) from its own training cells?

``python -m evaluation.inner_choice --dataset pbmc --variants default "kl=1" --output x.csv``

For each seed of the downsampling protocol (types cut to ``k`` training cells), the
training cells are split in two stratified halves, A and B. Each variant trains a generator
on A alone, raises the cut types of A in the same proportion as the protocol raises them
in the whole training set, and a classifier fitted on the result is scored on the real
cells of B (rare-type F1 of the cut types). B's cells were never seen by the generator, so
copies of training cells earn nothing, unlike proxies computed on cells the generator was
trained on (``evaluation.ablation``'s ``proxy_*``). The variant that wins here is the one a
fit-time choice would pick; compare it, seed by seed, with the winner of the protocol's
real test cells (``evaluation.ablation`` on the same seeds).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections import Counter

import pandas as pd

from evaluation.__main__ import load
from evaluation.ablation import add_protocol_arguments, parse
from scld_aug.benchmark.methods import make_pipeline
from scld_aug.benchmark.protocols import default_downsample_types, downsampled, split
from scld_aug.metrics import downstream_scores


def inner_rows(X, y, seed, k, types, variants, classifiers, threads) -> list[dict]:
    from scld_aug import SCLDSampler

    _, train_k, _, targets = downsampled(y, seed, k, types)
    part_a, part_b = split(y[train_k], seed, test_size=0.5)
    a, b = train_k[part_a], train_k[part_b]
    in_k, in_a = Counter(y[train_k].tolist()), Counter(y[a].tolist())
    # The cut types of A raised in the proportion the protocol raises them.
    inner_targets = {
        t: int(round(n * in_a[t] / in_k[t])) for t, n in targets.items() if in_a.get(t, 0) >= 3
    }
    rows = []
    for variant in variants:
        start = time.perf_counter()
        sampler = SCLDSampler(
            sampling_strategy=inner_targets, random_state=seed, n_jobs=threads, **parse(variant)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            X_res, y_res = sampler.fit_resample(X[a], y[a])
        seconds = time.perf_counter() - start
        for clf in classifiers:
            pipe = make_pipeline(None, clf, seed).fit(X_res, y_res)
            scores = downstream_scores(y[b], pipe.predict(X[b]), rare_classes=list(inner_targets))
            rows.append(
                {"seed": seed, "variant": variant, "classifier": clf, "seconds": seconds,
                 "metric": "inner_rare_f1", "value": scores["rare_macro_f1"]}
            )  # fmt: skip
        print(f"seed {seed} [{variant}]: {seconds:.0f} s", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.inner_choice", description=__doc__.splitlines()[0]
    )
    add_protocol_arguments(parser)
    parser.add_argument("--variants", nargs="+", default=["default", "kl=1"])
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    X, y = load(args.dataset, args.labels_key)
    types = args.types or default_downsample_types(y)
    rows = []
    for seed in args.seeds:
        rows += inner_rows(X, y, seed, args.k, types, args.variants, args.classifiers, args.threads)
        pd.DataFrame(rows).to_csv(args.output, index=False)
    table = pd.DataFrame(rows).pivot_table(
        index="seed", columns=["classifier", "variant"], values="value"
    )
    print(table.round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
