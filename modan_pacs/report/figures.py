"""Figures of the report: ROC curves per initialisation, repeat AUCs, UMAP of embeddings (PNG).

matplotlib runs with the non-interactive Agg backend, so figures are written without a display.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from modan_pacs.errors import InputError

if TYPE_CHECKING:
    from modan_pacs.models.features import CacheEmbeddings
from .stats import ProtocolTables, read_fold_predictions
from .tables import DATASET_TITLES, REGIME_TITLES


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


#: scatter markers paired with colours once there are more groups than colours
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
LINESTYLES = ["-", "--", ":", "-."]


def group_styles(n: int, kinds: list[str] | None = None) -> list[tuple[tuple[float, ...], str]]:
    """``n`` distinct (colour, marker-or-linestyle) pairs, for any ``n``.

    Up to 10 groups: tab10 colours; up to 20: tab20; beyond, tab20's colours each paired with a
    different marker (``kinds``: :data:`MARKERS` for scatter, :data:`LINESTYLES` for lines); when
    even those pairs run out, ``n`` evenly spaced hues (all colours different) with markers cycling.
    """
    import matplotlib

    kinds = kinds or MARKERS
    if n <= 10:
        return [(matplotlib.colormaps["tab10"](k), kinds[0]) for k in range(n)]
    if n <= 20 * len(kinds):
        tab20 = matplotlib.colormaps["tab20"]
        return [(tab20(k % 20), kinds[k // 20]) for k in range(n)]
    from matplotlib.colors import hsv_to_rgb

    return [
        (tuple(hsv_to_rgb((k / n, 0.95 - 0.35 * (k % 2), 0.9 - 0.3 * (k // 2 % 2)))), kinds[k % len(kinds)])
        for k in range(n)
    ]


def mean_roc(paths: list[str], grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertically averaged ROC over folds: each fold's TPR interpolated on ``grid`` (FPR), then
    mean and standard deviation over folds (curves of separately trained models are not pooled)."""
    from sklearn.metrics import roc_curve

    curves = []
    for path in paths:
        frame = read_fold_predictions(path)
        fpr, tpr, _ = roc_curve(frame["labels"], frame["preds"])
        curve = np.interp(grid, fpr, tpr)
        curve[0] = 0.0
        curves.append(curve)
    stack = np.stack(curves)
    mean = stack.mean(axis=0)
    mean[-1] = 1.0
    return mean, stack.std(axis=0)


def plot_roc_curves(tables: ProtocolTables, out_dir: Path) -> list[Path]:
    """One PNG per (dataset, regime), ``roc_<dataset>_<regime>.png``: a mean ROC curve per method."""
    plt = _pyplot()
    grid = np.linspace(0.0, 1.0, 201)
    written = []
    complete = tables.repeats[["dataset", "regime", "method", "repeat"]]
    folds = tables.folds.merge(complete, on=["dataset", "regime", "method", "repeat"])
    for (dataset, regime), block in folds.groupby(["dataset", "regime"], sort=True):
        fig, ax = plt.subplots(figsize=(5.2, 5.0))
        rows = tables.rows[(tables.rows["dataset"] == dataset) & (tables.rows["regime"] == regime)]
        styles = group_styles(len(rows), LINESTYLES)
        for method, (color, linestyle) in zip(rows["method"], styles):
            paths = block[block["method"] == method]["path"].tolist()
            mean, std = mean_roc(paths, grid)
            auc = float(rows[rows["method"] == method]["mean_auc"].iloc[0])
            width = 2.4 if method == tables.reference else 1.4
            (line,) = ax.plot(
                grid, mean, lw=width, color=color, ls=linestyle, label=f"{method} (AUC {auc:.3f}, {len(paths)} folds)"
            )
            ax.fill_between(
                grid, np.clip(mean - std, 0, 1), np.clip(mean + std, 0, 1), color=line.get_color(), alpha=0.08
            )
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
        ax.set(
            xlabel="false positive rate",
            ylabel="true positive rate",
            xlim=(0, 1),
            ylim=(0, 1.01),
            title=f"{DATASET_TITLES.get(dataset, dataset)}: {REGIME_TITLES.get(regime, regime).split(' (')[0]}",
        )
        ax.legend(loc="lower right", fontsize=7)
        fig.tight_layout()
        path = out_dir / f"roc_{_safe(dataset)}_{_safe(regime)}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def repeat_panels(tables: ProtocolTables) -> list[tuple[str, str]]:
    """The (regime, dataset) pairs that have results, regimes then datasets in sorted order."""
    present = set(zip(tables.rows["regime"], tables.rows["dataset"]))
    return [
        (r, d)
        for r in sorted(tables.rows["regime"].unique())
        for d in sorted(tables.rows["dataset"].unique())
        if (r, d) in present
    ]


def plot_repeat_aucs(tables: ProtocolTables, out_dir: Path) -> Path:
    """``repeat_auc.png``: per (regime, dataset) panel with results, every repeat's summary AUC per
    method, paired repeats joined by thin lines, the mean marked. Pairs without results get no panel."""
    plt = _pyplot()
    panels = repeat_panels(tables)
    n_cols = max(1, min(len(panels), tables.rows["dataset"].nunique()))
    n_rows = max(1, -(-len(panels) // n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.6 * n_cols, 3.4 * n_rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(panels) :]:
        ax.set_axis_off()  # (the grid is only incomplete in its last row)
    for ax, (regime, dataset) in zip(flat, panels):
        rows = tables.rows[(tables.rows["dataset"] == dataset) & (tables.rows["regime"] == regime)]
        methods = rows["method"].tolist()
        block = tables.repeats[(tables.repeats["dataset"] == dataset) & (tables.repeats["regime"] == regime)]
        wide = block.pivot(index="repeat", columns="method", values="auc").reindex(columns=methods)
        xs = np.arange(len(methods))
        for _, values in wide.iterrows():
            ax.plot(xs, values.to_numpy(), color="grey", lw=0.5, alpha=0.5)
        for x, method in zip(xs, methods):
            values = wide[method].dropna().to_numpy()
            ax.scatter(np.full(len(values), x), values, s=14, zorder=3)
            if len(values):
                ax.hlines(values.mean(), x - 0.3, x + 0.3, color="black", lw=1.5, zorder=4)
        ax.set_xticks(xs)
        ax.set_xticklabels(methods, rotation=35, ha="right", fontsize=7)
        ax.set_title(f"{DATASET_TITLES.get(dataset, dataset)} / {regime}", fontsize=9)
        ax.set_ylabel("repeat AUC (mean of folds)", fontsize=8)
    fig.tight_layout()
    path = out_dir / "repeat_auc.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_umap(
    features: np.ndarray, groups: list[str], *, title: str, path: Path, seed: int = 0, n_neighbors: int = 15
) -> Path:
    """UMAP (umap-learn) of ``features`` in 2-D, points coloured by ``groups`` (modality/anatomy).

    Raises:
        InputError: fewer than 4 points (UMAP needs neighbours).
    """
    if len(features) < 4:
        raise InputError(f"UMAP of {title!r} needs at least 4 images; the cache has {len(features)}")
    import umap

    reducer = umap.UMAP(n_neighbors=min(n_neighbors, len(features) - 1), random_state=seed, n_jobs=1)
    coords = reducer.fit_transform(features)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.0, 5.0))
    labels = pd.Series(groups)
    names = sorted(labels.unique())
    for group, (color, marker) in zip(names, group_styles(len(names))):
        mask = (labels == group).to_numpy()
        ax.scatter(coords[mask, 0], coords[mask, 1], s=6, color=color, marker=marker, label=f"{group} ({mask.sum()})")
    ax.set(title=title, xticks=[], yticks=[])
    ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=1 + len(names) // 25)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")  # the legend sits outside the axes
    plt.close(fig)
    return path


def plot_embeddings(embeddings: CacheEmbeddings, out_dir: Path, *, seed: int = 0) -> list[Path]:
    """``umap_<name>.png`` for each encoder of ``embeddings`` (:func:`modan_pacs.models.embed_cache`):
    UMAP of its features of the cache images, coloured by modality+anatomy."""
    n = len(embeddings.groups)
    return [
        plot_umap(
            features,
            embeddings.groups,
            title=f"{name}: {n} cache images",
            path=out_dir / f"umap_{_safe(name)}.png",
            seed=seed,
        )
        for name, features in embeddings.features.items()
    ]
