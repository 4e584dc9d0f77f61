"""Where does the variational encoder's gain come from: the spread the diffusion model
learns, or the encoder and decoder themselves?

``python -m evaluation.latent_spread --dataset pbmc --codes means --training "kl=1"
--output x.csv``

With ``kl_weight > 0`` two things change at once: the autoencoder is trained on draws of
each cell's posterior (a smoother decoder, a latent space shaped by the KL term), and the
diffusion model learns those draws rather than one code per cell (a wider distribution
per type). This script runs ``evaluation.ablation`` with the second one changed:

* ``--codes means``: the diffusion model and the latent classifier learn the posterior
  means only (variational autoencoder, no spread);
* ``--codes jitter=S``: they learn each cell's code plus Gaussian noise of ``S`` times the
  code's standard deviation in each latent dimension (the spread without a variational
  autoencoder; with ``kl_weight=0``);

Methods are written ``SCLD <codes> [<training>] [<sampling>]``; compare them with the
plain variants of ``evaluation.ablation`` on the same seeds. Generators are not saved (the
change is in training, and a saved file would not record it).
"""

from __future__ import annotations

import argparse
from unittest import mock

import numpy as np
import pandas as pd

from evaluation import ablation
from scld_aug import train


def codes_patch(codes: str):
    """A replacement of :func:`scld_aug.train.encode_cells` for ``--codes``."""
    encode = train.encode_cells

    if codes == "means":

        def encode_means(*args, **kwargs):
            latents, _ = encode(*args, **kwargs)
            return latents, None

        return encode_means
    if codes.startswith("jitter="):
        scale = float(codes.split("=", 1)[1])

        def encode_jittered(*args, **kwargs):
            latents, scales = encode(*args, **kwargs)
            if scales is not None:
                raise ValueError("--codes jitter is for a deterministic encoder (kl_weight=0)")
            return latents, np.broadcast_to(scale * latents.std(0), latents.shape).copy()

        return encode_jittered
    raise ValueError(f"--codes must be 'means' or 'jitter=S', got {codes!r}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.latent_spread", description=__doc__.splitlines()[0]
    )
    ablation.add_protocol_arguments(parser)
    parser.add_argument("--codes", required=True, help="'means' or 'jitter=S'")
    parser.add_argument("--training", nargs="+", default=["default"])
    parser.add_argument("--sampling", nargs="+", default=["default"])
    parser.add_argument("--output", required=True, help="CSV of every number")
    args = parser.parse_args(argv)
    args.generators = None
    # Only the SCLD rows are relabelled; the baselines are the ablation's own.
    with mock.patch.object(train, "encode_cells", codes_patch(args.codes)):
        results = ablation.run(args)
    results["method"] = results.method.str.replace("SCLD [", f"SCLD {args.codes} [", regex=False)
    results.to_csv(args.output, index=False)
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(ablation.summary(results).to_string())
        print(ablation.per_type_summary(results).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
