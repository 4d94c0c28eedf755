"""`modan-pacs export`: a run's encoder as a Hugging Face style folder others load in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    run: Annotated[
        Path, typer.Argument(help="Run folder of `modan-pacs pretrain` (its encoder.pt) or an encoder.pt file.")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Export folder (created; files of the same names are replaced).")
    ],
    report: Annotated[
        Optional[Path],
        typer.Option("--report", help="Benchmark report folder (tables.csv) whose results go into the model card."),
    ] = None,
    program: Annotated[
        bool, typer.Option("--program/--no-program", help="Also write encoder.pt2 (torch.export).")
    ] = True,
    monai_bundle: Annotated[
        bool,
        typer.Option(
            "--monai-bundle",
            help="Also write OUT/monai_bundle/ (configs/metadata.json, inference.json, models/model.pt).",
        ),
    ] = False,
) -> None:
    """Write model.safetensors, config.json, a model card README.md, encoder.pt2 (torch.export) and,
    for the authors' stem, torchvision weights; load any of them with modan_pacs.load_encoder(OUT)."""
    from rich.console import Console

    from modan_pacs.export import export_encoder

    result = export_encoder(run, out, report=report, program=program, monai_bundle=monai_bundle)
    console = Console()
    for path in result.files:
        console.print(f"  {path}  ({path.stat().st_size / 1e6:.1f} MB)", highlight=False)
    console.print(f"[green]exported[/] {result.meta.get('stem')}-stem encoder to {result.out_dir}")
