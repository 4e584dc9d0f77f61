"""The project's benchmark runs: ``python -m evaluation [natural|downsample|fidelity|all]
--dataset baron|pbmc|FILE [options of scld-aug benchmark]``.

The same code as ``scld-aug benchmark`` (:mod:`scld_aug.benchmark`); this entry adds the
shipped datasets by name, writes to ``evaluation/results/<dataset>`` (replacing the
results there, which git keeps), logs to MLflow with ``--mlflow [URI]`` and includes scVI
in the default methods.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PBMC = Path(__file__).parent / "data" / "pbmc68k_subset.h5ad"
DATASETS = ("baron", "pbmc")
METHODS = ["none", "RandomOverSampler", "SMOTE", "ADASYN", "scVI", "SCLD"]


def dataset_path(dataset: str) -> Path:
    """The ``.h5ad`` file of a shipped dataset's name, or ``dataset`` itself."""
    if dataset == "baron":
        import scld_aug.datasets

        return Path(scld_aug.datasets.__file__).parent / "baron_human1.h5ad"
    return PBMC if dataset == "pbmc" else Path(dataset)


def load(dataset: str, labels_key: str = "cell_type"):
    """Raw-count CSR matrix and string labels of a shipped dataset or any ``.h5ad``."""
    import anndata
    import scipy.sparse as sp

    adata = anndata.read_h5ad(dataset_path(dataset))
    return sp.csr_matrix(adata.X), adata.obs[labels_key].astype(str).to_numpy()


def _shown(path: Path) -> str:
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def main(argv: list[str] | None = None) -> int:
    from scld_aug.apps import cli

    parser = argparse.ArgumentParser(
        prog="python -m evaluation",
        description=__doc__.splitlines()[0],
        epilog="Every other option is scld-aug benchmark's (scld-aug benchmark --help).",
    )
    parser.add_argument("protocol", choices=["natural", "downsample", "fidelity", "all"])
    parser.add_argument(
        "--dataset", default="baron", help="'baron', 'pbmc' or a path to an .h5ad with raw counts"
    )
    parser.add_argument(
        "--mlflow",
        nargs="?",
        const="",
        default=None,
        metavar="URI",
        help="log the results to MLflow (default URI: $MLFLOW_TRACKING_URI, else "
        "sqlite:///mlruns/mlflow.db in the working directory)",
    )
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    name = args.dataset if args.dataset in DATASETS else Path(args.dataset).stem
    # Paths relative to the working directory where they lie under it: the command recorded
    # in meta.json then reads the same on every checkout.
    forwarded = ["benchmark", _shown(dataset_path(args.dataset)), "--name", name]
    if "--output" not in rest:
        forwarded += ["--output", _shown(Path(__file__).parent / "results" / name)]
    if args.protocol != "all":
        forwarded += ["--protocols", args.protocol]
    if "--methods" not in rest:
        forwarded += ["--methods", *METHODS]
    if args.mlflow is not None:
        forwarded += ["--tracking", *([args.mlflow] if args.mlflow else [])]
    if "--keep-other-methods" not in rest and "--report-only" not in rest:
        forwarded.append("--overwrite")
    return cli.main(forwarded + rest)


if __name__ == "__main__":
    raise SystemExit(main())
