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
    reference: Annotated[
        str, typer.Option("--reference", "-r", help="Method compared with every other (e.g. modan-mulsupcon).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for tables.csv/md/json and the PNG figures.")] = Path(
        "report"
    ),
    embed_cache: Annotated[
        Optional[Path],
        typer.Option("--embed-cache", help="Image cache (modan-pacs cache) embedded for the UMAP figures."),
    ] = None,
    encoder: Annotated[
        Optional[list[str]],
        typer.Option("--encoder", help="NAME=PATH of an encoder.pt to embed (repeatable; with --embed-cache)."),
    ] = None,
    no_figures: Annotated[bool, typer.Option("--no-figures", help="Write the tables only.")] = False,
    umap_max_images: Annotated[
        int, typer.Option("--umap-max-images", help="Cache images embedded at most (sampled).")
    ] = 2000,
) -> None:
    """Fold AUCs, mean per repeat, mean over repeats and exact Wilcoxon tests (one- and two-sided)
    of REFERENCE against every other method; tables.csv, tables.md, tables.json, ROC/repeat/UMAP PNGs."""
    from rich.console import Console

    from modan_pacs.errors import InputError
    from modan_pacs.report import build_report

    encoders = {}
    for item in encoder or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--encoder {item!r}: expected NAME=PATH to an encoder.pt")
        encoders[name] = Path(path)
    if (embed_cache is None) != (not encoders):
        raise InputError(
            "UMAP needs both an image cache (--embed-cache) and at least one encoder (--encoder NAME=PATH)"
        )
    console = Console()
    embeddings = None
    if embed_cache is not None and not no_figures:
        from modan_pacs.models import embed_cache as embed_cache_images

        with console.status(f"embedding up to {umap_max_images} cache images with {len(encoders)} encoder(s)"):
            embeddings = embed_cache_images(embed_cache, encoders, max_images=umap_max_images)
    with console.status("computing fold AUCs and tests"):
        out_dir = build_report(tree, reference=reference, out_dir=out, embeddings=embeddings, figures=not no_figures)
    import pandas as pd

    console.print(results_table(pd.read_csv(out_dir / "tables.csv"), reference))
    console.print(f"[green]report[/] in {out_dir}: tables.csv, tables.md, tables.json and PNG figures")


def results_table(rows, reference: str):  # noqa: ANN001, ANN201  (pandas/rich types imported lazily)
    """A rich table of ``tables.csv`` rows whose cells wrap (never cut with an ellipsis) at any width."""
    import math

    from rich.table import Table

    from modan_pacs.report.tables import p_value_text

    def number(value: float, digits: int = 4) -> str:
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"

    table = Table(title=f"reference: {reference}", title_justify="left")
    # text columns wrap (fold) at any width; number columns keep their digits whole
    for name, justify, width in (
        ("dataset", "left", None),
        ("regime", "left", None),
        ("method", "left", None),
        ("mean AUC", "right", 6),
        ("95% CI", "right", 11),
        ("std", "right", 6),
        ("repeats", "right", 3),
        ("p (vs reference)", "left", None),
    ):
        table.add_column(name, justify=justify, overflow="fold", min_width=width, no_wrap=width is not None)
    for row in rows.to_dict(orient="records"):
        ci = f"{number(row['ci_low'], 3)}-{number(row['ci_high'], 3)}" if number(row["ci_low"]) else ""
        p_text = "" if row["method"] == reference else p_value_text(row, markdown=False)
        table.add_row(
            str(row["dataset"]),
            str(row["regime"]),
            str(row["method"]),
            number(row["mean_auc"]),
            ci,
            number(row["std_auc"]),
            str(row["n_repeats"]),
            p_text,
        )
    return table
