"""`modan-pacs share`: what may leave the hospital, from a local index and its cache (PS3.15, Clean Descriptors)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("share")(share)


def share(
    index: Annotated[
        Path, typer.Option("--index", help="The working index (stays local: it may hold paths and descriptions).")
    ],
    cache: Annotated[Path, typer.Option("--cache", help="Its cache (`modan-pacs cache --index INDEX`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Share folder to write (outside INDEX and CACHE).")],
    salt_file: Annotated[
        Optional[Path],
        typer.Option(
            "--salt-file",
            help="Salt of the hashed UIDs (default $MODAN_PACS_SALT_FILE or ~/.config/modan-pacs/salt); never copied.",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty OUT.")] = False,
) -> None:
    """Write OUT: images, labels, a manifest with hashed UIDs and no path, date or free text, \
and a README of what was removed."""
    from rich.console import Console

    from modan_pacs.share import share_dataset

    report = share_dataset(index_dir=index, cache_dir=cache, out=out, salt_file=salt_file, overwrite=overwrite)
    Console().print(
        f"[green]share[/] {report.path}: {report.n_images} images, {report.n_patients} patients, "
        f"{report.n_studies} studies, {report.n_series} series (see {report.path / 'README.md'})"
    )
