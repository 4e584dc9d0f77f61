"""Real scRNA-seq data shipped with scld-aug (no download needed)."""

from __future__ import annotations

from importlib import resources

__all__ = ["baron_pancreas"]


def baron_pancreas():
    """Human pancreas, donor 1 of Baron et al. (2016): 1,937 cells x 20,125 genes.

    Raw inDrop UMI counts (CSR, float32) with the authors' 14 cell types in
    ``obs["cell_type"]``, from ``beta`` (872 cells) down to ``t_cell`` (2 cells).
    GEO GSE84133; please cite Baron et al., Cell Systems 3(4):346-360 (2016).

    Returns
    -------
    adata : anndata.AnnData

    Examples
    --------
    >>> from scld_aug.datasets import baron_pancreas
    >>> adata = baron_pancreas()
    >>> adata.shape
    (1937, 20125)
    >>> int(adata.obs["cell_type"].value_counts()["mast"])
    8
    """
    import anndata

    with resources.as_file(resources.files(__name__) / "baron_human1.h5ad") as path:
        return anndata.read_h5ad(path)
