"""`modan-pacs pretrain`: an image cache -> a pretrained 1-channel ResNet-18 (``OUT/encoder.pt``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain)


def pretrain(
    overrides: Annotated[
        Optional[list[str]],
        typer.Argument(
            help="Config overrides KEY=VALUE, e.g. train.epochs=200 loss.threshold=0.5 (win over the YAML)."
        ),
    ] = None,
    config: Annotated[
        Optional[Path],
        typer.Option(
            "--config",
            "-c",
            help="Pretraining YAML or a shipped name (pretrain_tiny, pretrain_simclr, ...; "
            "default: pretrain_modan; with --resume: the run's own config.yaml).",
        ),
    ] = None,
    data: Annotated[Path, typer.Option("--data", "-d", help="Image cache folder (from `modan-pacs cache`).")] = Path(
        "cache"
    ),
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Run folder: encoder.pt, checkpoints/, metrics.csv, tb/, config.yaml, seeds.json."
        ),
    ] = Path("runs/modan"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in OUT from checkpoints/last.pt.")] = False,
    profile: Annotated[
        Optional[int],
        typer.Option(
            "--profile",
            help="Run N timed training steps (after one warm-up step), print images/s, the "
            "time shares and peak memory, and exit; writes nothing to OUT.",
        ),
    ] = None,
    progress: Annotated[
        bool,
        typer.Option(
            "--progress/--no-progress",
            help="Show a progress bar (on a terminal; otherwise one line per epoch with an ETA).",
        ),
    ] = True,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the resolved config (and where each value came from), the data and the steps, then stop.",
        ),
    ] = False,
) -> None:
    """Pretrain with MulSupCon (paper), SupCon, SimCLR (NT-Xent) or cross-entropy; multi-GPU under torchrun."""
    import contextlib
    import logging
    import os

    from rich.console import Console
    from rich.logging import RichHandler

    from modan_pacs.train import load_config
    from modan_pacs.train import pretrain as run_pretrain

    if dry_run:
        from modan_pacs.train.plan import plan_pretrain

        _print_plan(plan_pretrain(config, overrides, data, out, resume=resume), Console())
        return
    rank = int(os.environ.get("RANK", "0"))
    console = Console()
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=True)],
        force=True,
    )
    if profile is not None:
        from modan_pacs.errors import ConfigError
        from modan_pacs.train import profile_pretrain

        if resume:
            raise ConfigError("--profile measures a fresh model and writes nothing; leave out --resume")

        result = profile_pretrain(load_config(config, overrides), data, steps=profile)
        if rank == 0:
            print_profile(result, Console())
        return
    resolved = None
    if config is not None or overrides or not resume:
        if resume and config is None and (out / "config.yaml").is_file():
            config = out / "config.yaml"
        resolved = load_config(config, overrides)
    # a live bar on a terminal; elsewhere the library's one log line per epoch (with an ETA) is the progress
    view = PretrainView(console) if progress and rank == 0 and console.is_terminal else None
    with view.bar if view else contextlib.nullcontext():
        result = run_pretrain(resolved, data, out, resume=resume, progress=view.progress if view else None)
    if rank == 0:
        last = result.history[-1] if result.history else None
        summary = f"final loss {last['loss']:.4f}, " if last else "nothing to do (already at train.epochs), "
        console.print(f"[green]done[/]: {summary}encoder -> {result.encoder_path}")


class PretrainView:
    """Draws what ``pretrain`` reports (:data:`~modan_pacs.train.pretrain.TrainProgress`): one rich
    bar per epoch with its steps, the last logged loss and the time remaining; removed when the epoch ends."""

    def __init__(self, console) -> None:  # noqa: ANN001
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = None

    def progress(self, epoch: int, step: int, steps: int, loss: float | None) -> None:
        if self._task is None:
            self._task = self.bar.add_task("train", total=steps, epoch=epoch, loss="-")
        fields = {"loss": f"{loss:.4f}"} if loss is not None else {}
        self.bar.update(self._task, completed=step, **fields)
        if step >= steps:
            self.bar.remove_task(self._task)
            self._task = None


def print_profile(result, console) -> None:  # noqa: ANN001
    """A rich table of a :class:`~modan_pacs.train.ProfileResult`."""
    from rich.table import Table

    env = result.environment
    console.print(
        f"[bold]profile[/]: {result.steps} timed steps after {result.warmup_steps} warm-up ({result.warmup_s:.1f} s); "
        f"device {env['device']}{' (' + env['gpu_name'] + ')' if env.get('gpu_name') else ''}, "
        f"amp {env['amp_dtype'] or 'off'}, "
        f"channels_last {env['channels_last']}, compiled {env['compiled']}, augment_on {env['augment_on']}, "
        f"{env['world_size']} process(es), global batch {result.global_batch}",
        highlight=False,
        soft_wrap=True,
    )
    table = Table("phase", "ms / step", "share")
    for phase, seconds in result.phase_s.items():
        table.add_row(
            phase.replace("_", " + " if phase == "backward_step" else " "),
            f"{seconds * 1e3:.1f}",
            f"{100 * result.shares[phase]:.1f} %",
        )
    table.add_row("[bold]step[/]", f"[bold]{result.step_s * 1e3:.1f}[/]", "100.0 %")
    console.print(table)
    console.print(
        f"images/s {result.images_per_s:.1f}; "
        f"peak memory {result.peak_memory_bytes / 2**20:.0f} MiB ({result.peak_memory_kind}); "
        f"epoch of {result.n_images} images = {result.steps_per_epoch} steps ~ {result.epoch_s:.1f} s",
        highlight=False,
        soft_wrap=True,
    )


def _print_plan(plan, console) -> None:  # noqa: ANN001
    from rich.table import Table

    table = Table(title=f"config ({plan.config_file})", title_justify="left")
    for column in ("key", "value", "from"):
        table.add_column(column, overflow="fold")
    styles = {"default": "dim", "file": "", "override": "bold yellow"}
    for key, value in plan.values.items():
        source = plan.sources[key]
        table.add_row(key, str(value), source, style=styles[source])
    console.print(table)
    labels = ", ".join(f"{name} {count}" for name, count in plan.label_counts.items())
    cfg = plan.config
    console.print(
        f"data: {plan.data_dir}: {plan.n_images} images of {plan.image_side}x{plan.image_side} px; labels: {labels}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"steps: {plan.steps_per_epoch} per epoch ({plan.n_images} images // global batch {cfg.train.batch_size}, "
        f"{plan.world_size} process(es) x {plan.per_process_batch}); epochs {plan.start_epoch + 1}..{cfg.train.epochs} "
        f"= {plan.total_steps} steps",
        highlight=False,
        soft_wrap=True,
    )
    for note in plan.notes:
        console.print(note, highlight=False)
    console.print(f"out: {plan.out_dir} (nothing written: --dry-run)", highlight=False)
