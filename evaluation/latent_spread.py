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
* ``--codes sample-jitter=S``: training as usual; each sampled code gets Gaussian noise of
  ``S`` times the codes' standard deviation just before decoding (the spread added at
  sampling time, which needs no retraining).

Methods are written ``SCLD <codes> [<training>] [<sampling>]``; compare them with the
plain variants of ``evaluation.ablation`` on the same seeds. With ``means`` and ``jitter``
generators are not saved (the change is in training, and a saved file would not record it);
with ``sample-jitter``, ``--generators DIR`` reuses the ablation's saved generators.
"""

from __future__ import annotations

import argparse
from unittest import mock

import numpy as np
import pandas as pd

from evaluation import ablation
from scld_aug import train
from scld_aug.generator import SCLDGenerator


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


def decode_patch(scale: float):
    """A replacement of :meth:`SCLDGenerator.decode` that adds Gaussian noise of ``scale``
    to the standardized codes (unit spread per dimension), seeded by the block's seed."""
    decode = SCLDGenerator.decode

    def decode_jittered(self, latents, code, output, seed):
        noise = np.random.default_rng([int(seed), 15]).standard_normal(latents.shape)
        return decode(self, latents + scale * noise.astype(latents.dtype), code, output, seed)

    return decode_jittered


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.latent_spread", description=__doc__.splitlines()[0]
    )
    ablation.add_protocol_arguments(parser)
    parser.add_argument("--codes", required=True, help="'means', 'jitter=S' or 'sample-jitter=S'")
    parser.add_argument("--training", nargs="+", default=["default"])
    parser.add_argument("--sampling", nargs="+", default=["default"])
    parser.add_argument("--generators", default=None, help="saved generators (sample-jitter)")
    parser.add_argument("--output", required=True, help="CSV of every number")
    args = parser.parse_args(argv)
    if args.codes.startswith("sample-jitter="):
        scale = float(args.codes.split("=", 1)[1])
        patched = mock.patch.object(SCLDGenerator, "decode", decode_patch(scale))
    else:
        args.generators = None
        patched = mock.patch.object(train, "encode_cells", codes_patch(args.codes))
    # Only the SCLD rows are relabelled; the baselines are the ablation's own.
    with patched:
        results = ablation.run(args)
    results["method"] = results.method.str.replace("SCLD [", f"SCLD {args.codes} [", regex=False)
    results.to_csv(args.output, index=False)
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(ablation.summary(results).to_string())
        print(ablation.per_type_summary(results).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
