"""Tables (CSV + Markdown) and plots from benchmark results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scld_aug.benchmark.protocols import REAL_HELD_OUT
from scld_aug.files import atomic_write


def _mean_sd(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "failed"
    return f"{values.mean():.3f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.3f}"


def _parse_mean_sd(value: str) -> tuple[float, float]:
    """Inverse of ``_mean_sd``: "failed" (or a missing cell) gives (nan, 0)."""
    if not isinstance(value, str) or value == "failed":
        return np.nan, 0.0
    mean, sd = value.split(" ± ")
    return float(mean), float(sd)


def downstream_table(
    df: pd.DataFrame, metrics=("rare_macro_f1", "macro_f1", "balanced_accuracy")
) -> pd.DataFrame:
    """Mean ± sd over seeds, one row per (protocol, k, classifier, method)."""
    df = df[df["metric"].isin(metrics)].copy()
    df["k"] = df["k"].fillna(-1)
    out = (
        df.groupby(["protocol", "k", "classifier", "method", "metric"], sort=False)["value"]
        .apply(_mean_sd)
        .unstack("metric")
        .reindex(columns=list(metrics))
        .fillna("failed")
        .reset_index()
    )
    out["k"] = out["k"].map(lambda k: "-" if k < 0 else int(k))
    return out


def headline_table(table: pd.DataFrame, metric: str = "rare_macro_f1") -> pd.DataFrame:
    """One row per (protocol, k, classifier), one column per method; best mean in bold."""
    wide = table.pivot_table(
        index=["protocol", "k", "classifier"],
        columns="method",
        values=metric,
        aggfunc="first",
        sort=False,
    )
    wide = wide[list(dict.fromkeys(table["method"]))]

    def bold_best(row: pd.Series) -> pd.Series:
        means = pd.Series([_parse_mean_sd(v)[0] for v in row], index=row.index)
        if means.notna().any():
            best = means.max()
            row = row.where(means != best, "**" + row + "**")
        return row

    wide = wide.apply(bold_best, axis=1)
    wide.index = [
        f"{protocol}" + (f" k={k}" if k != "-" else "") + f", {classifier}"
        for protocol, k, classifier in wide.index
    ]
    wide.index.name = "protocol, classifier"
    wide.columns.name = None
    return wide


def fidelity_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean over types and seeds of each fidelity metric, one row per method (the held-out
    real cells, which have recognition only, after the real training cells)."""
    table = df.groupby(["method", "metric"], sort=False)["value"].mean().unstack("metric")
    methods = [m for m in table.index if m != REAL_HELD_OUT]
    if REAL_HELD_OUT in table.index:
        methods.insert(1 if "real (train)" in methods[:1] else 0, REAL_HELD_OUT)
    metrics = list(dict.fromkeys(df.loc[df["method"] != REAL_HELD_OUT, "metric"]))
    metrics += [m for m in table.columns if m not in metrics]
    return table.loc[methods, metrics].round(3)


NOVELTY_METRICS = ("memorization_ratio", "copies", "precision", "recall", "density", "coverage")


def novelty_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per method: how new and how diverse its cells are (median ratio, mean of the rest)."""
    sub = df[df["metric"].isin(NOVELTY_METRICS)]
    if sub.empty:
        return pd.DataFrame()
    grouped = sub.groupby(["method", "metric"], sort=False)["value"]
    table = grouped.mean().unstack("metric")
    table["memorization_ratio"] = grouped.median().unstack("metric")["memorization_ratio"]
    return table.reindex(columns=[m for m in NOVELTY_METRICS if m in table.columns]).round(3)


def conditional_fidelity_table(df: pd.DataFrame, methods) -> pd.DataFrame:
    """Per type: share of each method's synthetic cells that a classifier of real cells calls
    that type (mean over seeds) and, when below 0.9, the type most taken instead."""
    recognised = df[df["method"].isin(methods) & (df["metric"] == "recognised")]
    if recognised.empty:
        return pd.DataFrame()
    confusion = df[df["method"].isin(methods) & (df["metric"] == "confusion")]
    means = recognised.groupby(["cell_type", "n_train", "method"], sort=False)["value"].mean()
    target = confusion[confusion["detail"].fillna("") != ""]
    other = target.groupby(["cell_type", "method"])["detail"].agg(
        lambda v: v.value_counts().index[0]
    )
    cells = {}
    for (cell_type, n_train, method), value in means.items():
        text = f"{value:.2f}"
        if value < 0.9 and (cell_type, method) in other.index:
            text += f" (→ {other.loc[(cell_type, method)]})"
        cells.setdefault(f"{cell_type} ({n_train})", {})[method] = text
    table = pd.DataFrame.from_dict(cells, orient="index")
    table = table[[m for m in methods if m in table.columns]]
    table.index.name = "type (training cells)"
    return table


def fidelity_by_type(df: pd.DataFrame, methods, metrics=("mmd", "two_sample_auc")) -> pd.DataFrame:
    """Per type (with its number of training cells): each metric for each method."""
    sub = df[df["method"].isin(methods) & df["metric"].isin(metrics)]
    table = (
        sub.groupby(["cell_type", "n_train", "metric", "method"], sort=False)["value"]
        .mean()
        .unstack(["metric", "method"])
        .round(3)
        .sort_index(level="n_train")
    )
    table.columns = [f"{metric}: {method}" for metric, method in table.columns]
    table.index = [f"{cell_type} ({n})" for cell_type, n in table.index]
    table.index.name = "type (training cells)"
    return table


def plot_rare_f1(table: pd.DataFrame, path: Path, title: str) -> None:
    """Grouped bars: rare-type F1 (mean ± sd) per classifier, one bar per method."""
    from scld_aug import plotting

    classifiers = list(dict.fromkeys(table["classifier"]))
    methods = list(dict.fromkeys(table["method"]))
    stats = {
        (c, m): _parse_mean_sd(v)
        for c, m, v in zip(
            table["classifier"], table["method"], table["rare_macro_f1"], strict=True
        )
    }
    means = pd.DataFrame(
        {m: [stats.get((c, m), (np.nan, 0.0))[0] for c in classifiers] for m in methods},
        index=classifiers,
    )
    sds = pd.DataFrame(
        {m: [stats.get((c, m), (np.nan, 0.0))[1] for c in classifiers] for m in methods},
        index=classifiers,
    )
    plotting.grouped_bars(
        means,
        path,
        ylabel="rare-type F1 (mean ± sd over seeds)",
        title=title,
        errors=sds,
        overwrite=True,  # rebuilt from the results each time (see write_report)
    )


def plot_guidance_sweep(fidelity: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = {
        "SCLD no guidance (w=0)": 0.0,
        "SCLD w=1": 1.0,
        "SCLD pre (w=2, default)": 2.0,
        "SCLD w=3": 3.0,
        "SCLD w=5": 5.0,
    }
    sub = fidelity[fidelity["method"].isin(sweep)].copy()
    sub["w"] = sub["method"].map(sweep)
    # Each metric's reference: real training cells compared with held-out ones, and for
    # recognition the held-out real cells themselves.
    metrics = {
        "mmd": "real (train)",
        "two_sample_auc": "real (train)",
        "marker_overlap": "real (train)",
        "mean_pearson": "real (train)",
        "recognised": REAL_HELD_OUT,
    }
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2))
    for ax, (metric, reference) in zip(axes, metrics.items(), strict=True):
        curve = sub[sub["metric"] == metric].groupby("w")["value"].mean()
        ax.plot(curve.index, curve.values, "o-", label="SCLD")
        ref = fidelity[(fidelity["method"] == reference) & (fidelity["metric"] == metric)]
        if len(ref):
            ax.axhline(ref["value"].mean(), color="grey", ls="--", label=f"{reference} cells")
            ax.legend(fontsize=7)
        ax.set_xlabel("guidance scale w")
        ax.set_title(metric)
    fig.suptitle("Guidance scale vs fidelity to held-out real cells (mean over types)", fontsize=10)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120), overwrite=True)
    finally:
        plt.close(fig)


def plot_embedding(
    embedding, X_train, y_train, X_test, y_test, synthetic: dict, types, path: Path
) -> None:
    """First two PCs of the reference embedding: real cells and each method's synthetic cells."""
    from scld_aug import plotting

    def xy(X):
        return embedding.transform(X)[:, :2]

    plotting.real_vs_synthetic(
        xy(X_train),
        y_train,
        {
            method: (
                np.vstack([xy(by_type[t]) for t in types]),
                np.concatenate([[t] * by_type[t].shape[0] for t in types]),
            )
            for method, by_type in synthetic.items()
        },
        types,
        path,
        title="Real training and test cells vs synthetic cells, zoomed per type",
        held_out=(xy(X_test), y_test),
        axis_label="PC",
        overwrite=True,
    )


def write_report(
    out: Path,
    dataset: str,
    downstream: pd.DataFrame | None,
    fidelity: pd.DataFrame | None,
    meta: dict,
) -> Path:
    """``report.md``, its summary tables and figures in ``out``, rebuilt from the results.

    They are derived from the results files, whose folder the run checked before any work
    (replacing results needs ``overwrite``), so they are replaced on every rebuild.
    """
    from scld_aug.benchmark.methods import METHOD_SPACE

    lines = [f"# Benchmark: {dataset}", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines.append("")
    methods = set()
    for frame in (downstream, fidelity):
        if frame is not None and not frame.empty:
            methods |= set(frame["method"])
    spaces = [
        (name, space)
        for name, space in METHOD_SPACE.items()
        if any(m == name or m.startswith(name + " ") for m in methods)
    ]
    if spaces:
        lines += [
            "Every method receives raw counts and returns count-space rows; normalization "
            "happens after augmentation, inside the pipeline. Where synthetic cells live:",
            "",
            "| method | synthetic cells |",
            "|:--|:--|",
            *[f"| {name} | {space} |" for name, space in spaces],
            "",
        ]
    if downstream is not None and not downstream.empty:
        table = downstream_table(downstream)
        _write_csv(table, out / "downstream_summary.csv", index=False)
        lines += [
            "## Rare-type F1 at a glance (mean ± sd over seeds; best mean in bold)",
            "",
            headline_table(table).to_markdown(),
            "",
            "Macro-F1 over all types (augmentation must not hurt the other types):",
            "",
            headline_table(table, "macro_f1").to_markdown(),
            "",
            "## Downstream classification (mean ± sd over seeds)",
            "",
            "`rare_macro_f1`: mean F1 over the augmented types (natural: types under 2% of the "
            "training cells; downsample: the chosen types cut to k training cells), on untouched "
            "real test cells. `macro_f1`: all types.",
            "",
            table.to_markdown(index=False),
            "",
        ]
        for (protocol, k), part in table.groupby(["protocol", "k"], sort=False):
            name = f"rare_f1_{protocol}" + (f"_k{k}" if k != "-" else "") + ".png"
            plot_rare_f1(
                part, out / name, f"{dataset}: {protocol}" + (f", k={k}" if k != "-" else "")
            )
            lines.append(f"![{name}]({name})")
        lines.append("")
    if fidelity is not None and not fidelity.empty:
        summary = fidelity_table(fidelity)
        _write_csv(summary, out / "fidelity_summary.csv")
        headline = [
            m
            for m in ("real (train)", "SMOTE", "scVI", "SCLD pre (w=2, default)")
            if m in set(fidelity["method"])
        ]
        lines += [
            "## Fidelity of synthetic cells to held-out real cells",
            "",
            "Embedding: log-normalized counts, 2,000 most variable genes, 50 PCs fitted on real "
            "training cells. `mmd` (RBF, median bandwidth) and `sliced_wasserstein`: lower is "
            "closer; `two_sample_auc` (kNN, cross-validated): 0.5 = indistinguishable; gene "
            "correlations and `marker_overlap` (top-50 markers vs other types): higher is better. "
            "`real (train)` compares held-out cells with real training cells of the same type: "
            "the level an ideal generator would reach.",
            "",
            "### Mean over types",
            "",
            summary.astype(object).where(summary.notna(), "").to_markdown(),
            "",
            "### Per type (MMD and two-sample AUC)",
            "",
            fidelity_by_type(fidelity, headline).to_markdown(),
            "",
        ]
        novelty = novelty_table(fidelity)
        if not novelty.empty:
            lines += [
                "### New cells or copies? (novelty and diversity)",
                "",
                "`memorization_ratio` (median over types and seeds): median distance from a "
                "synthetic cell to its nearest real training cell of the type, divided by the "
                "same for held-out real cells; 1 = as new as unseen real cells, 0 = copies "
                "(`copies`: share at distance 0). `precision` / `recall` (Kynkäänniemi et al. "
                "2019), `density` / `coverage` (Naeem et al. 2020) against held-out cells of "
                "the type, k = 5: precision and density say the cells lie where real cells "
                "lie, recall and coverage that they reach the whole type. `real (train)` are "
                "the training cells themselves (ratio 0 by construction).",
                "",
                novelty.to_markdown(),
                "",
            ]
        conditional = conditional_fidelity_table(
            fidelity,
            [REAL_HELD_OUT, *(m for m in headline if m != "real (train)"), "RandomOverSampler"],
        )
        if not conditional.empty:
            lines += [
                "### Conditional fidelity per type",
                "",
                "Share of a type's synthetic cells that a logistic regression trained on real "
                "training cells (all types, same embedding) calls that type, mean over seeds; "
                "below 0.9, the type most taken instead follows the arrow. "
                f"`{REAL_HELD_OUT}`: the same classifier on the held-out real cells of the "
                "type, the share a generator that reproduces the type faithfully would reach; "
                "where real cells of look-alike types are confused with each other, a higher "
                "share means cells more typical of the type than real ones.",
                "",
                conditional.to_markdown(),
                "",
            ]
        plot_guidance_sweep(fidelity, out / "guidance_sweep.png")
        lines.append("![guidance sweep](guidance_sweep.png)")
        if (out / "embedding.png").exists():
            lines.append("![embedding](embedding.png)")
    text = "\n".join(lines) + "\n"
    return atomic_write(out / "report.md", lambda tmp: tmp.write_text(text), overwrite=True)


def _write_csv(frame: pd.DataFrame, path: Path, **options) -> Path:
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, **options), overwrite=True)
