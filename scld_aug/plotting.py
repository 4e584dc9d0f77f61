"""Figures: every plot scld-aug draws, in one place.

Real vs synthetic cells (one panel per cell type, zoomed, for one or several methods),
training-loss curves, grouped bars of scores, and the score of tuning trials against each
searched parameter. Callers compute the coordinates and numbers (an embedding, a study's
trials); this module only draws. matplotlib is imported when a figure is drawn
(``pip install "scld-aug[plots]"``); files are written with the non-interactive Agg
backend, atomically, and an existing file is replaced only with ``overwrite=True`` (every
function takes it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["grouped_bars", "loss_curves", "parameter_scores", "real_vs_synthetic"]


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend, or an ImportError that says what to install."""
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(
            "Plots need matplotlib: pip install 'scld-aug[plots]' (or pip install matplotlib)."
        ) from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike, overwrite: bool, dpi: int = 110, **kwargs) -> Path:
    """Write the figure atomically (``scld_aug.files.atomic_write``: an existing file is
    replaced only with ``overwrite``), in the format its suffix names (PNG by default)."""
    from scld_aug.files import atomic_write, check_output_path

    plt = pyplot()
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    try:
        check_output_path(path, overwrite=overwrite, what="figure")
        atomic_write(
            path,
            lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi, **kwargs),
            overwrite=overwrite,
            what="figure",
        )
    finally:
        plt.close(fig)
    return path


def bin_means(values: Sequence[float], every: int) -> tuple[np.ndarray, np.ndarray]:
    """Means of consecutive groups of ``every`` values, and the step each group ends at."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values) // every * every
    if n == 0:
        return values, np.arange(len(values))
    means = values[:n].reshape(-1, every).mean(1)
    return means, np.arange(len(means)) * every + every - 1


def loss_curves(
    history: Mapping[str, Sequence[float]], path: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Training-loss curves, one panel per network (per step, and smoothed).

    Examples
    --------
    >>> history = {"autoencoder": [3.1, 2.4, 2.2, 2.1], "denoiser": [1.0, 0.8, 0.7, 0.7]}
    >>> loss_curves(history, "losses.png").name
    'losses.png'
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(history), figsize=(4 * len(history), 3.2), squeeze=False)
    for ax, (name, values) in zip(axes[0], history.items(), strict=True):
        ax.plot(values, lw=0.5, alpha=0.35, color="tab:blue", label="per step")
        smooth, steps = bin_means(values, max(1, len(values) // 100))
        ax.plot(steps, smooth, color="tab:blue", label="smoothed")
        ax.set_title(name)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path, overwrite)


def _zoom(ax, points: np.ndarray, spread: np.ndarray) -> None:
    """Limits around ``points`` (at least a tenth of the whole embedding wide)."""
    lo, hi = points.min(0), points.max(0)
    pad = np.maximum(hi - lo, 0.1 * spread) * 0.6
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])


def real_vs_synthetic(
    real: np.ndarray,
    real_labels: Sequence,
    synthetic: Mapping[str, tuple[np.ndarray, Sequence]],
    types: Sequence,
    path: str | os.PathLike,
    *,
    title: str = "Real vs synthetic cells",
    held_out: tuple[np.ndarray, Sequence] | None = None,
    overview: bool = False,
    axis_label: str = "",
    overwrite: bool = False,
) -> Path:
    """Real and synthetic cells in 2-D coordinates, one panel per type and method.

    Every panel shows all real cells in grey; then, zoomed on one cell type, its real cells
    (blue rings), held-out real cells (black crosses, when given) and one method's
    synthetic cells (orange dots). One row per method, one column per type, and with
    ``overview`` a first column with every real and synthetic cell.

    Parameters
    ----------
    real : ndarray of shape (n_real, 2)
        Coordinates of the real (training) cells, e.g. PCs of the real cells or a t-SNE.
    real_labels : sequence of length n_real
    synthetic : dict
        ``{method: (coordinates (n, 2), labels)}``.
    types : sequence
        The cell types to show, one column each.
    path : str or path-like
        Where to write the figure (PNG).
    title : str
    held_out : (coordinates, labels) or None
        Real cells not used for training, drawn as crosses.
    overview : bool, default=False
        Add a column with all cells, unzoomed.
    axis_label : str
        What the axes are (e.g. "PC"), for the figure's caption.
    overwrite : bool, default=False
        Replace an existing file at ``path``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> real, labels = rng.normal(size=(60, 2)), np.array(["a"] * 50 + ["b"] * 10)
    >>> scld = (rng.normal(size=(20, 2)), np.array(["b"] * 20))
    >>> real_vs_synthetic(real, labels, {"SCLD": scld}, ["b"], "cells.png").name
    'cells.png'
    """
    plt = pyplot()
    real = np.asarray(real, dtype=float)
    real_labels = np.asarray(real_labels).astype(str)
    types = [str(t) for t in types]
    spread = np.ptp(real, axis=0) if len(real) else np.ones(2)
    n_cols = len(types) + int(overview)
    fig, axes = plt.subplots(
        len(synthetic), max(n_cols, 1), figsize=(3.2 * max(n_cols, 1), 3.1 * len(synthetic)),
        squeeze=False,
    )  # fmt: skip
    for row, (method, (points, labels)) in enumerate(synthetic.items()):
        points = np.asarray(points, dtype=float).reshape(-1, 2)
        labels = np.asarray(labels).astype(str)
        panels = list(axes[row])
        if overview:
            # Each type in its colour: synthetic cells as dots, its real cells as rings drawn
            # on top (hollow, so neither hides the other), named at the real cells' centre.
            ax = panels.pop(0)
            ax.scatter(*real.T, s=2, c="lightgrey")
            palette = plt.get_cmap("tab10")
            for k, cell_type in enumerate(types):
                color = palette(k % 10)
                ax.scatter(*points[labels == cell_type].T, s=4, color=color, alpha=0.5)
            for k, cell_type in enumerate(types):
                color = palette(k % 10)
                own = real[real_labels == cell_type]
                ax.scatter(*own.T, s=28, facecolors="none", edgecolors=color, linewidths=1.0)
                if len(own):
                    ax.annotate(
                        cell_type, own.mean(axis=0), fontsize=7, fontweight="bold", color=color,
                        xytext=(4, 4), textcoords="offset points",
                    )  # fmt: skip
            ax.set_title(f"all cells: {method} dots, real rings, by type", fontsize=8)
        for ax, cell_type in zip(panels, types, strict=True):
            ax.scatter(*real.T, s=3, c="lightgrey")
            mine = points[labels == cell_type]
            ax.scatter(*mine.T, s=9, c="tab:orange", alpha=0.6, label=method)
            own = real[real_labels == cell_type]
            ax.scatter(
                *own.T, s=40, facecolors="none", edgecolors="tab:blue", linewidths=1.3,
                label="real",
            )  # fmt: skip
            shown = [mine, own]
            if held_out is not None:
                held = np.asarray(held_out[0], dtype=float)[
                    np.asarray(held_out[1]).astype(str) == cell_type
                ]
                ax.scatter(*held.T, s=30, marker="x", c="k", label="real, held out")
                shown.append(held)
            both = np.vstack([s for s in shown if len(s)]) if any(len(s) for s in shown) else real
            _zoom(ax, both, spread)
            ax.set_title(f"{cell_type}: {len(own)} real, {len(mine)} {method}", fontsize=8)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
        if types:
            axes[row][int(overview)].legend(loc="best", fontsize=6)
    caption = f" ({axis_label} 1 and 2)" if axis_label else ""
    fig.suptitle(title + caption, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, overwrite, dpi=120)


def grouped_bars(
    values: pd.DataFrame,
    path: str | os.PathLike,
    *,
    ylabel: str,
    title: str,
    errors: pd.DataFrame | None = None,
    intervals: tuple[pd.DataFrame, pd.DataFrame] | None = None,
    ylim: tuple[float, float] = (0.0, 1.05),
    overwrite: bool = False,
) -> Path:
    """One group of bars per row of ``values``, one bar per column (e.g. F1 per cell type and
    method), with error bars when given: ``errors`` (e.g. sd, symmetric) or ``intervals``
    (lower and upper bounds, e.g. a bootstrap interval), shaped like ``values``.

    Examples
    --------
    >>> import pandas as pd
    >>> f1 = pd.DataFrame({"none": [0.5, 0.7], "SCLD": [0.8, 0.9]}, index=["mast", "schwann"])
    >>> grouped_bars(f1, "f1.png", ylabel="F1", title="Rare types").name
    'f1.png'
    """
    plt = pyplot()
    groups, series = list(values.index), list(values.columns)
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(1.8 * len(groups) + 2.5, 3.8))
    colors = plt.get_cmap("tab10")
    for j, name in enumerate(series):
        x = np.arange(len(groups)) + (j - (len(series) - 1) / 2) * width
        heights = values[name].to_numpy(dtype=float)
        err = None if errors is None else errors[name].to_numpy(dtype=float)
        if intervals is not None:
            low, high = (bound[name].to_numpy(dtype=float) for bound in intervals)
            err = np.vstack([heights - low, high - heights])
        ax.bar(
            x, heights, width, yerr=err, capsize=2 if err is not None
            else 0, label=str(name), color=colors(j % 10),
        )  # fmt: skip
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([str(g) for g in groups], rotation=20 if len(groups) > 3 else 0)
    ax.set_ylabel(ylabel)
    ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return _save(fig, path, overwrite, dpi=120)


def marker_dotplot(
    table: pd.DataFrame, path: str | os.PathLike, *, title: str, overwrite: bool = False
) -> Path:
    """Dot plot of each type's marker genes in its real and synthetic cells: one column per
    marker (grouped by type), a row of real and a row of synthetic cells per type; dot area
    is the fraction of cells expressing the gene, colour the mean expression (the table of
    :func:`scld_aug.metrics.marker_expression`).

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"cell_type": ["mast"] * 2, "gene": ["TPSAB1"] * 2,
    ...                       "source": ["real", "synthetic"], "mean": [3.1, 3.4],
    ...                       "fraction": [0.9, 0.95]})
    >>> marker_dotplot(table, "markers.png", title="Markers").name
    'markers.png'
    """
    plt = pyplot()
    types = list(dict.fromkeys(table["cell_type"]))
    columns = list(dict.fromkeys(zip(table["cell_type"], table["gene"], strict=True)))
    rows = [(t, source) for t in types for source in ("real", "synthetic")]
    x = {key: i for i, key in enumerate(columns)}
    y = {key: i for i, key in enumerate(rows)}
    fig, ax = plt.subplots(figsize=(0.45 * len(columns) + 3.5, 0.42 * len(rows) + 1.8))
    points = ax.scatter(
        [x[(t, g)] for t, g in zip(table["cell_type"], table["gene"], strict=True)],
        [y[(t, s)] for t, s in zip(table["cell_type"], table["source"], strict=True)],
        s=20 + 180 * table["fraction"].to_numpy(dtype=float),
        c=table["mean"].to_numpy(dtype=float),
        cmap="Reds",
        edgecolors="0.3",
        linewidths=0.4,
    )
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([g for _, g in columns], rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"{t} ({s})" for t, s in rows], fontsize=7)
    ax.invert_yaxis()
    # A line between types, so each type's markers and rows read as one block.
    for boundary in np.flatnonzero(np.diff([types.index(t) for t, _ in columns])):
        ax.axvline(boundary + 0.5, color="0.8", linewidth=0.8)
    for i in range(2, len(rows), 2):
        ax.axhline(i - 0.5, color="0.8", linewidth=0.8)
    fig.colorbar(points, ax=ax, label="mean log-normalized expression", shrink=0.8)
    for fraction in (0.25, 0.5, 1.0):
        ax.scatter(
            [], [], s=20 + 180 * fraction, c="white", edgecolors="0.3", label=f"{fraction:.0%}"
        )
    ax.legend(title="cells expressing", fontsize=6, title_fontsize=7, loc="upper left",
              bbox_to_anchor=(1.25, 1.0), frameon=False)  # fmt: skip
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, overwrite, dpi=120)


def parameter_scores(
    panels: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    *,
    ylabel: str = "cross-validated score",
    title: str = "Cross-validated score against each searched parameter",
    overwrite: bool = False,
) -> Path:
    """Score of every trial against each searched parameter, one panel per parameter.

    Each panel is a dict with ``name``, ``x`` (positions), ``score``, ``trial`` (numbers,
    for the colour), and optionally ``ticks`` (labels of categorical positions 0, 1, ...)
    and ``log`` (a log axis).

    Examples
    --------
    >>> panel = {"name": "guidance_scale", "x": [1.0, 2.0, 4.0], "score": [0.8, 0.9, 0.85],
    ...          "trial": [0, 1, 2]}
    >>> parameter_scores([panel], "scores.png").name
    'scores.png'
    """
    plt = pyplot()
    figure, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels) + 1.0, 4), sharey=True, squeeze=False
    )
    trials = np.concatenate([np.asarray(p["trial"], dtype=float) for p in panels])
    norm = plt.Normalize(trials.min(), max(trials.max(), trials.min() + 1))
    scatter = None
    for ax, panel in zip(axes[0], panels, strict=True):
        scatter = ax.scatter(
            panel["x"], panel["score"], c=panel["trial"], cmap="viridis", norm=norm,
            edgecolors="grey", linewidths=0.5,
        )  # fmt: skip
        ticks = panel.get("ticks")
        if ticks is not None:
            ax.set_xticks(range(len(ticks)))
            ax.set_xticklabels(ticks, rotation=30)
            ax.set_xlim(-0.5, len(ticks) - 0.5)
        elif panel.get("log") and np.min(panel["x"]) > 0:
            ax.set_xscale("log")
        ax.set_xlabel(panel["name"])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    figure.colorbar(scatter, ax=list(axes[0]), label="trial")
    figure.suptitle(title)
    return _save(figure, path, overwrite, bbox_inches="tight")


def optimization_history(
    trials: Sequence[int],
    scores: Sequence[float],
    path: str | os.PathLike,
    *,
    ylabel: str = "cross-validated score",
    highlight: Sequence[int] = (),
    overwrite: bool = False,
) -> Path:
    """Score of every trial in the order they ran, with the best so far (maximized).

    ``highlight`` marks trials of note (e.g. the defaults scored first).

    Examples
    --------
    >>> optimization_history([0, 1, 2], [0.8, 0.9, 0.85], "history.png").name
    'history.png'
    """
    plt = pyplot()
    order = np.argsort(np.asarray(trials))
    trials = np.asarray(trials)[order]
    scores = np.asarray(scores, dtype=float)[order]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.scatter(trials, scores, s=18, color="tab:blue", label="trial")
    ax.step(
        trials, np.maximum.accumulate(scores), where="post", color="tab:red", label="best so far"
    )
    marked = np.isin(trials, list(highlight))
    if marked.any():
        ax.scatter(
            trials[marked], scores[marked], s=70, facecolors="none", edgecolors="k",
            label="defaults",
        )  # fmt: skip
    ax.set_xlabel("trial")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Optimization history")
    fig.tight_layout()
    return _save(fig, path, overwrite)
