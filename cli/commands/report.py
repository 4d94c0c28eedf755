"""`modan-pacs report`: the protocol's tables and figures from saved fold predictions alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("report")(report)


def report(
    tree: Annotated[
        Path, typer.Argument(help="Folder of <dataset>/<regime>/<method>/repeat_NN/fold_K.csv prediction files.")
    ],
    reference: Annotated[str, typer.Option("--reference", "-r", help="Method compared with every other (e.g. modan-mulsupcon).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for tables.csv/md/json and the PNG figures.")] = Path("report"),
    embed_cache: Annotated[
        Optional[Path], typer.Option("--embed-cache", help="Image cache (modan-pacs cache) embedded for the UMAP figures.")
    ] = None,
    encoder: Annotated[
        Optional[list[str]], typer.Option("--encoder", help="NAME=PATH of an encoder.pt to embed (repeatable; with --embed-cache).")
    ] = None,
    no_figures: Annotated[bool, typer.Option("--no-figures", help="Write the tables only.")] = False,
    umap_max_images: Annotated[int, typer.Option("--umap-max-images", help="Cache images embedded at most (sampled).")] = 2000,
) -> None:
    """Fold AUCs, mean per repeat, mean over repeats and exact Wilcoxon tests (one- and two-sided)
    of REFERENCE against every other method; tables.csv, tables.md, tables.json, ROC/repeat/UMAP PNGs."""
    from rich.console import Console
    from rich.table import Table

    from modan_pacs.errors import InputError
    from modan_pacs.report import build_report
    from modan_pacs.report.stats import TABLE_COLUMNS

    encoders = {}
    for item in encoder or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--encoder {item!r}: expected NAME=PATH to an encoder.pt")
        encoders[name] = Path(path)
    console = Console()
    with console.status("computing fold AUCs and tests"):
        out_dir = build_report(
            tree, reference=reference, out_dir=out, embed_cache=embed_cache, encoders=encoders or None,
            figures=not no_figures, umap_max_images=umap_max_images,
        )  # fmt: skip
    import pandas as pd

    rows = pd.read_csv(out_dir / "tables.csv")
    table = Table(*TABLE_COLUMNS)
    for row in rows.itertuples(index=False):
        table.add_row(*("" if isinstance(v, float) and v != v else f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)
    console.print(f"[green]report[/] in {out_dir}: tables.csv, tables.md, tables.json and PNG figures")
