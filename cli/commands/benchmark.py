"""`modan-pacs benchmark`: the paper's downstream protocol (Tables 4 and 5) for any initialisations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("benchmark")(benchmark)


def benchmark(
    dataset: Annotated[
        str, typer.Option("--dataset", "-d", help="thyroid (DDTI), breast (BUSI), acl (MRNet layout) or csv.")
    ],
    init: Annotated[
        list[str],
        typer.Option(
            "--init", "-i", help="Initialisation, repeatable: NAME=PATH (encoder.pt), imagenet[=WEIGHTS], scratch."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (created; an existing one is resumed).")] = Path(
        "bench"
    ),
    data_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--data-dir", help="Dataset folder (a CSV file for csv). Default: $MODAN_PACS_DATA/<ddti|busi|mrnet>."
        ),
    ] = None,
    imagenet_weights: Annotated[
        Optional[Path],
        typer.Option("--imagenet-weights", help="Local torchvision ResNet-18 weights file for 'imagenet'."),
    ] = None,
    config: Annotated[
        Optional[Path],
        typer.Option("--config", help="Benchmark YAML (or a shipped name: benchmark_authors.yaml); CLI options win."),
    ] = None,
    repeats: Annotated[
        Optional[int], typer.Option("--repeats", help="Repeats of the whole k-fold run (default 10).")
    ] = None,
    folds: Annotated[Optional[int], typer.Option("--folds", help="Folds of the fixed partition (default 5).")] = None,
    regime: Annotated[
        Optional[list[str]], typer.Option("--regime", help="finetune and/or linear, repeatable (default both).")
    ] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Epochs per fold (default 10).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Batch size (default 32).")] = None,
    image_size: Annotated[
        Optional[int], typer.Option("--image-size", help="Input side after resizing (default 224).")
    ] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Adam learning rate (default 1e-4).")] = None,
    linear_lr: Annotated[
        Optional[float],
        typer.Option("--linear-lr", help="Learning rate of linear probing (default = --lr; authors 1e-3)."),
    ] = None,
    head: Annotated[
        Optional[str], typer.Option("--head", help="Fine-tuning head: linear (default) or identity (authors' bug 1).")
    ] = None,
    best_epoch: Annotated[
        Optional[str], typer.Option("--best-epoch", help="deep-copy (best val loss, default) or last (authors' bug 2).")
    ] = None,
    probe_bn: Annotated[
        Optional[str],
        typer.Option("--probe-bn", help="Frozen encoder BatchNorm: eval (default) or train (authors' bug 3)."),
    ] = None,
    probe_path: Annotated[
        Optional[str],
        typer.Option(
            "--probe-path", help="features (computed once, default) or epochwise (frozen forward every epoch)."
        ),
    ] = None,
    imagenet_conv1: Annotated[
        Optional[str],
        typer.Option("--imagenet-conv1", help="sum (RGB kernels summed, default) or random (authors' bug 4)."),
    ] = None,
    scratch_stem: Annotated[
        Optional[str], typer.Option("--scratch-stem", help="Stem of 'scratch': paper (3x3, default) or authors (7x7).")
    ] = None,
    val_fraction: Annotated[
        Optional[float],
        typer.Option("--val-fraction", help="Inner validation share of each training part (default 0.2)."),
    ] = None,
    tirads_cutoff: Annotated[
        Optional[str],
        typer.Option("--tirads-cutoff", help="thyroid: TI-RADS at or above which a nodule is malignant (default 4a)."),
    ] = None,
    ddti_crop: Annotated[
        Optional[bool],
        typer.Option("--ddti-crop/--no-ddti-crop", help="thyroid, original layout: crop to the nodule outline."),
    ] = None,
    plane: Annotated[Optional[str], typer.Option("--plane", help="acl: axial, coronal or sagittal (default).")] = None,
    slice_policy: Annotated[
        Optional[str],
        typer.Option(
            "--slice-policy",
            help=(
                "acl: middle (default), center:K (K central slices), even:N (N spread slices) "
                "or all slices of each exam."
            ),
        ),
    ] = None,
    name: Annotated[
        Optional[str], typer.Option("--name", help="csv: the dataset's name in folders and tables (default: csv).")
    ] = None,
    positive_label: Annotated[
        Optional[str], typer.Option("--positive-label", help="csv: label value of class 1 when labels are not 0/1.")
    ] = None,
    subsample: Annotated[
        Optional[int], typer.Option("--subsample", help="Use a stratified random subset of N images (quick trials).")
    ] = None,
    seed: Annotated[
        Optional[int], typer.Option("--seed", help="Seed of the partition and the training (default 0).")
    ] = None,
    device: Annotated[
        Optional[str], typer.Option("--device", help="cpu, cuda or cuda:N (default: CUDA when available).")
    ] = None,
    reference: Annotated[
        Optional[str],
        typer.Option("--reference", help="Initialisation compared with the others (default: first checkpoint)."),
    ] = None,
    embed_cache: Annotated[
        Optional[Path],
        typer.Option("--embed-cache", help="Image cache whose UMAP per pretrained encoder goes in the report."),
    ] = None,
    near_duplicate_threshold: Annotated[
        Optional[float],
        typer.Option(
            "--near-duplicate-threshold",
            help="Thumbnail correlation joining near-duplicates in one group (default 0.93).",
        ),
    ] = None,
    near_duplicates: Annotated[
        Optional[bool],
        typer.Option(
            "--near-duplicates/--no-near-duplicates", help="Join near-duplicate images in one group (default on)."
        ),
    ] = None,
    discordant_duplicates: Annotated[
        Optional[str],
        typer.Option(
            "--discordant-duplicates", help="Duplicates with different labels: keep (default, reported) or drop both."
        ),
    ] = None,
    breast_normal: Annotated[
        Optional[str],
        typer.Option("--breast-normal", help="breast: normal images as negative (default, paper) or drop."),
    ] = None,
    imagenet_norm: Annotated[
        Optional[str],
        typer.Option("--imagenet-norm", help="imagenet: ImageNet mean/std folded into conv1: fold (default) or none."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Write folds.csv and print the plan (groups, duplicates, folds, trainings); train nothing.",
        ),
    ] = False,
) -> None:
    """Fine-tune and linear-probe every initialisation on a fixed k-fold partition, R times; write
    OUT/<dataset>/<regime>/<init>/repeat_NN/fold_K.csv and the report in OUT/report."""
    from rich.console import Console

    from modan_pacs.bench import run_benchmark
    from modan_pacs.bench.config import load_benchmark_config

    options = {
        "lr": lr,
        "linear_lr": linear_lr,
        "head": head,
        "best_epoch": best_epoch,
        "probe_bn": probe_bn,
        "probe_path": probe_path,
        "imagenet_conv1": imagenet_conv1,
        "scratch_stem": scratch_stem,
        "val_fraction": val_fraction,
        "tirads_cutoff": tirads_cutoff,
        "ddti_crop": ddti_crop,
        "plane": plane,
        "slice_policy": slice_policy,
        "positive_label": positive_label,
        "subsample": subsample,
        "near_duplicate_threshold": near_duplicate_threshold,
        "discordant_duplicates": discordant_duplicates,
        "breast_normal": breast_normal,
        "imagenet_norm": imagenet_norm,
        "near_duplicates": near_duplicates,
    }
    settings = load_benchmark_config(
        config,
        repeats=repeats,
        folds=folds,
        regimes=list(regime) if regime else None,
        epochs=epochs,
        batch_size=batch_size,
        image_size=image_size,
        seed=seed,
        **options,
    )
    console = Console()
    if dry_run:
        from modan_pacs.bench import plan_benchmark

        plan = plan_benchmark(
            dataset=dataset,
            data_dir=data_dir,
            inits=list(init),
            out_dir=out,
            config=settings,
            imagenet_weights=imagenet_weights,
        )
        render_plan(plan, console)
        return
    view = BenchmarkView(console)
    with view.bar:
        run = run_benchmark(
            dataset=dataset,
            data_dir=data_dir,
            inits=list(init),
            out_dir=out,
            config=settings,
            device=device,
            imagenet_weights=imagenet_weights,
            reference=reference,
            embed_cache=embed_cache,
            name=name,
            notify=view.notify,
            progress=view.progress,
        )
    console.print(f"[green]done[/]: predictions in {run}, report in {run / 'report'}")


class BenchmarkView:
    """Draws what ``run_benchmark`` reports: its lines on ``console`` (notes dim), its progress as
    rich bars (one per stage; the image-loading bar is removed when loading is done)."""

    def __init__(self, console) -> None:  # noqa: ANN001

        from modan_pacs.cli.bars import progress_bar

        from modan_pacs.progress import make_progress

        self.console = console
        # a live bar on a terminal, else one line per fold with an ETA
        self.bar = make_progress(console, lambda: progress_bar(console))
        self._tasks: dict = {}

    def notify(self, kind: str, text: str) -> None:
        from rich.markup import escape

        self.console.print(f"[dim]{escape(text)}[/]" if kind == "note" else escape(text))

    def progress(self, stage: str, done: int, total: int, description: str) -> None:
        task = self._tasks.get(stage)
        if task is None:
            task = self._tasks[stage] = self.bar.add_task(description, total=total)
        self.bar.update(task, completed=done, total=total, description=description)
        if stage == "load" and done >= total:
            self.bar.remove_task(self._tasks.pop(stage))


def render_plan(plan, console) -> None:  # noqa: ANN001
    """Print a :class:`~modan_pacs.bench.runner.BenchmarkPlan`: totals, discordant pairs, folds."""
    from rich.table import Table

    counts = plan.class_counts
    console.print(
        f"[bold]{plan.dataset}[/]: {plan.n_images} images ({counts.get(0, 0)} class 0 / {counts.get(1, 0)} class 1)"
    )
    for note in plan.notes:
        console.print(f"  [dim]{note}[/]")
    console.print(
        f"groups: {plan.n_groups} (largest {plan.largest_group} images); near-duplicates merged: "
        f"{plan.near_duplicate_pairs} pairs over {plan.images_in_near_duplicates} images; "
        f"identical files: {plan.identical_pairs} pairs"
    )
    if plan.discordant_pairs:
        table = Table(title=f"{len(plan.discordant_pairs)} label-discordant duplicate pair(s)")
        for column in ("item_a", "label_a", "item_b", "label_b", "correlation", "kind"):
            table.add_column(column, overflow="fold")
        for pair in plan.discordant_pairs:
            table.add_row(*(str(pair[c]) for c in ("item_a", "label_a", "item_b", "label_b", "correlation", "kind")))
        console.print(table)
    else:
        console.print("label-discordant duplicate pairs: none")
    table = Table(title="class balance per test fold")
    for column in ("fold", "images", "class 0", "class 1", "positive share", "groups"):
        table.add_column(column, justify="right")
    for f in plan.folds:
        table.add_row(*(str(f[c]) for c in ("fold", "images", "class_0", "class_1", "positive_share", "groups")))
    console.print(table)
    console.print(
        f"trainings planned: {plan.trainings} ({len(plan.inits)} init(s) {', '.join(plan.inits)} "
        f"x {len(plan.regimes)} regime(s) "
        f"x {plan.repeats} repeat(s) x {len(plan.folds)} folds), {plan.trainings_done} already done"
    )
    console.print(
        f"written: {plan.out_dir}/folds.csv, inner_val.csv, {plan.dataset}/duplicates.csv, {plan.dataset}/plan.json"
    )
