"""`modan-pacs minirin`: the paper's miniRIN subset of RadImageNet, cached with modality+anatomy labels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("minirin")(minirin)


def minirin(
    radimagenet_dir: Annotated[
        Path, typer.Argument(help="RadImageNet root laid out <modality>/<anatomy>/<class>/*.png.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Cache folder to write (also minirin.csv and classes.txt).")],
    per_class: Annotated[
        int, typer.Option("--per-class", help="Images per class (all where a class has fewer). Paper: 100.")
    ] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the per-class draw.")] = 0,
    size: Annotated[int, typer.Option("--size", help="Side of the square cached images (pixels).")] = 224,
    workers: Annotated[
        Optional[int], typer.Option("--workers", "-w", help="Decoding processes (default: CPU count).")
    ] = None,
    vocab: Annotated[
        Optional[Path], typer.Option("--vocab", help="Vocabulary YAML (default: the shipped one).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Discard an existing cache or unfinished build in OUT.")
    ] = False,
) -> None:
    """Sample up to --per-class images per RadImageNet class with --seed and cache them (labels from folder names)."""
    from modan_pacs.cli.bars import counting_bar
    from rich.console import Console

    from modan_pacs.data.sources import build_minirin
    from modan_pacs.pixels.build import default_workers

    bar, update = counting_bar("miniRIN")
    with bar:
        result, selection = build_minirin(
            radimagenet_dir,
            out,
            per_class=per_class,
            seed=seed,
            size=size,
            workers=workers or default_workers(),
            vocabulary_path=vocab,
            overwrite=overwrite,
            progress=update,
        )
    Console().print(
        f"[green]miniRIN[/] {result.path}: {result.n_rows} images, "
        f"{selection['class_name'].nunique()} classes, {result.n_errors} errors"
    )
