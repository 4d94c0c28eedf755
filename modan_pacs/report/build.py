"""``build_report``: tables and figures of a prediction tree (what ``modan-pacs report`` runs)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .figures import plot_embeddings, plot_repeat_aucs, plot_roc_curves
from .stats import compute_tables
from .tables import write_tables_csv, write_tables_json, write_tables_markdown

if TYPE_CHECKING:
    from modan_pacs.models.features import CacheEmbeddings


def build_report(
    tree: str | Path,
    *,
    reference: str,
    out_dir: str | Path,
    embeddings: CacheEmbeddings | None = None,
    order: list[str] | None = None,
    figures: bool = True,
    seed: int = 0,
) -> Path:
    """Write the protocol's tables and figures for the predictions under ``tree``.

    Outputs in ``out_dir``: ``tables.csv`` (``dataset,regime,method,mean_auc,std_auc,n_repeats,
    p_one_sided,p_two_sided``; p empty for the reference row), ``tables.md`` (the paper's layout),
    ``tables.json`` (rows, repeat and fold AUCs, notes), ``roc_<dataset>_<regime>.png``,
    ``repeat_auc.png`` and, when ``embeddings`` are given, ``umap_<name>.png``.

    Args:
        tree: folder of ``<dataset>/<regime>/<method>/repeat_NN/fold_K.csv`` prediction files.
        reference: the method compared with every other one (Wilcoxon, paired by repeat).
        out_dir: where to write (created).
        embeddings: encoders' features of cache images (:func:`modan_pacs.models.embed_cache`), one
            UMAP figure per encoder; the report draws them and computes no features itself.
        order: preferred order of methods after the reference.
        figures: also draw the PNG figures (tables only when False).

    Returns:
        ``out_dir``.

    Raises:
        InputError: no prediction files, a malformed file, or the reference missing somewhere.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = compute_tables(tree, reference=reference, order=order)
    write_tables_csv(tables, out / "tables.csv")
    write_tables_markdown(tables, out / "tables.md")
    write_tables_json(tables, out / "tables.json")
    if figures:
        plot_roc_curves(tables, out)
        plot_repeat_aucs(tables, out)
        if embeddings is not None:
            plot_embeddings(embeddings, out, seed=seed)
    return out
