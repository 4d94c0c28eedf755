"""``modan-pacs proxy-study``: the paper's comparison on the real images of shared/data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def proxy_study(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="shared/data (pool_*, busi, ddti); default ../shared/data or $MODAN_PACS_SHARED/data."
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Study folder (re-running resumes).")] = Path("runs/proxy_study"),
    quick: Annotated[
        bool, typer.Option("--quick", help="Reduced budget (what CI runs): 1 epoch, 1 repeat, breast only.")
    ] = False,
    epochs: Annotated[int | None, typer.Option(help="Pretraining epochs (each method).")] = None,
    repeats: Annotated[int | None, typer.Option(help="Repeats of the 5-fold run.")] = None,
    bench_epochs: Annotated[int | None, typer.Option("--bench-epochs", help="Downstream epochs per fold.")] = None,
    size: Annotated[int | None, typer.Option(help="Image side in pixels.")] = None,
    stem: Annotated[str | None, typer.Option(help="Encoder stem: authors (fast) or paper.")] = None,
    imagenet_weights: Annotated[
        Path | None,
        typer.Option("--imagenet-weights", help="Local torchvision resnet18 weights: adds the ImageNet baseline."),
    ] = None,
    pretrain_seeds: Annotated[
        int | None,
        typer.Option(
            "--pretrain-seeds",
            min=1,
            help="Pretraining runs per method (default 1); the report adds statistics over them.",
        ),
    ] = None,
    unknown_anatomy: Annotated[
        str | None,
        typer.Option(
            "--unknown-anatomy", help="distinct (default), match or drop: images whose header names no anatomy."
        ),
    ] = None,
    no_anatomy_share: Annotated[
        float | None,
        typer.Option(
            "--no-anatomy-share",
            min=0.0,
            max=1.0,
            help="Share of pool images written with no anatomy in any header (default 0).",
        ),
    ] = None,
    methods: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            help=(
                "Pretraining method to run (repeatable; default all three): modan-mulsupcon, simclr, supervised. "
                "The first is the reference."
            ),
        ),
    ] = None,
    datasets: Annotated[
        list[str] | None, typer.Option("--dataset", help="Downstream dataset (repeatable; default breast and thyroid).")
    ] = None,
) -> None:
    """Pretrain ModAn-MulSupCon, SimCLR and supervised (modality x anatomy) encoders on the real pool with one
    recipe, --pretrain-seeds times each; benchmark breast and thyroid."""
    from modan_pacs.demo.proxy import RECIPES, ProxySettings, run_proxy_study
    from modan_pacs.errors import DataNotFoundError
    from modan_pacs.paths import shared_data_dir

    data_dir = data_dir or shared_data_dir()
    if data_dir is None:
        raise DataNotFoundError(
            "no shared/data folder found: pass --data-dir (it holds pool_*/, busi/ and ddti/ with metadata.csv)"
        )
    settings = ProxySettings.quick() if quick else ProxySettings()
    if unknown_anatomy is not None and unknown_anatomy not in ("distinct", "match", "drop"):
        raise typer.BadParameter(f"--unknown-anatomy must be distinct, match or drop; got {unknown_anatomy!r}")
    for method in methods or []:
        if method not in RECIPES:
            raise typer.BadParameter(f"--method must be one of {', '.join(RECIPES)}; got {method!r}")
    for dataset in datasets or []:
        if dataset not in ("breast", "thyroid"):
            raise typer.BadParameter(f"--dataset must be breast or thyroid; got {dataset!r}")
    if methods:
        settings.methods = tuple(dict.fromkeys(methods))
    if datasets:
        settings.datasets = tuple(dict.fromkeys(datasets))
    chosen = {
        "pretrain_epochs": epochs,
        "repeats": repeats,
        "bench_epochs": bench_epochs,
        "image_size": size,
        "stem": stem,
        "pretrain_seeds": pretrain_seeds,
        "unknown_anatomy": unknown_anatomy,
        "no_anatomy_share": no_anatomy_share,
    }
    for name, value in chosen.items():
        if value is not None:
            setattr(settings, name, value)
    settings.imagenet_weights = str(imagenet_weights) if imagenet_weights else None
    run_proxy_study(data_dir, out, settings=settings)


def register(app: typer.Typer) -> None:
    app.command("proxy-study")(proxy_study)
