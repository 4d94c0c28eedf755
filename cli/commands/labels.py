"""`modan-pacs labels`: re-label an existing index with another vocabulary (no DICOM file is read)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("labels")(labels)


def labels(
    index_dir: Annotated[Path, typer.Argument(help="Index folder written by `modan-pacs index`.")],
    vocab: Annotated[
        Optional[Path], typer.Option("--vocab", help="Vocabulary YAML to apply (default: the shipped one).")
    ] = None,
) -> None:
    """Recompute labels.npy, the label columns and the summaries from the stored raw header fields."""
    from rich.console import Console

    from modan_pacs.ingest import relabel
    from modan_pacs.labels import Vocabulary

    from .index import _print_summary

    tables = relabel(index_dir, Vocabulary.load(vocab))
    _print_summary(Console(), tables, index_dir, header=f"{index_dir} (relabelled)")
