"""``modan-pacs demo``: index -> cache -> pretrain -> benchmark -> report on the embedded default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for every stage's output (re-running resumes).")] = Path(
        "demo_out"
    ),
    epochs: Annotated[int, typer.Option(help="Pretraining epochs.")] = 10,
    size: Annotated[int, typer.Option(help="Image side in pixels (small keeps the CPU demo fast).")] = 64,
    stem: Annotated[
        str, typer.Option(help="Encoder stem: 'authors' (7x7 stride 2, fast on a CPU) or 'paper' (3x3 stride 1).")
    ] = "authors",
    workers: Annotated[int, typer.Option(help="Worker processes for indexing and caching.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
) -> None:
    """Run the whole journey on data the project generates or installs itself (CPU, minutes)."""
    from modan_pacs.demo.pipeline import DemoSettings, run_demo

    run_demo(out, settings=DemoSettings(pretrain_epochs=epochs, image_size=size, stem=stem, workers=workers, seed=seed))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
