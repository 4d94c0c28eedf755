"""The pretraining loop: MulSupCon / SupCon / NT-Xent / cross-entropy on a 1-channel ResNet-18.

CPU by default when no GPU is present; on CUDA mixed precision (bf16, or fp16 with a GradScaler),
channels-last and optional ``torch.compile``. Under ``torchrun`` the model is wrapped in
DistributedDataParallel and the loss is computed over the GLOBAL batch: every rank gathers all
ranks' embeddings (with gradients) and labels, so W processes with ``batch_size / W`` images each
train exactly like one process with ``batch_size`` images (up to BatchNorm statistics, which are
per rank unless ``model.sync_batchnorm``).

A checkpoint is written atomically after every epoch; ``resume=True`` restores model, optimiser,
scheduler, scaler and every RNG, and the data loader is a function of ``(seed, epoch)``, so on CPU
a resumed run follows the uninterrupted run's loss trajectory exactly.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from modan_pacs.errors import ConfigError, InputError
from modan_pacs.losses import CONTRASTIVE, build_loss
from modan_pacs.models import EncoderWithHead, build_encoder, build_head, encoder_state_dict
from modan_pacs.progress import format_eta

from .checkpoint import FORMAT_VERSION, capture_rng, encoder_file, encoder_metadata, load_checkpoint, restore_rng, save_atomic
from .config import PretrainConfig, load_config, resolve_config
from .distributed import DistEnv, all_gather_objects, barrier, gather_with_grad, init_distributed
from .schedule import build_optimizer, build_scheduler
from .targets import class_targets

log = logging.getLogger(__name__)

#: config keys that may change between an interrupted run and its resumption
RESUMABLE_CHANGES = frozenset({"train.epochs", "train.log_every", "data.workers", "train.device"})
METRIC_COLUMNS = ["epoch", "step", "loss", "lr", "images_per_s", "epoch_s", "data_s"]


@dataclass
class PretrainResult:
    """What a call to :func:`pretrain` did."""

    out_dir: Path
    encoder_path: Path
    start_epoch: int
    epochs: int
    history: list[dict[str, float]] = field(default_factory=list)
    """One row per epoch run by this call (the columns of ``metrics.csv``)."""


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside ``torch.compile`` and DDP wrappers."""
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _resolve(config: PretrainConfig | dict | str | Path | None, out_dir: Path, resume: bool) -> PretrainConfig:
    if isinstance(config, PretrainConfig):
        return config
    if isinstance(config, dict):
        return resolve_config(config)
    if config is None and resume and (out_dir / "config.yaml").is_file():
        return load_config(out_dir / "config.yaml")
    return load_config(config)


def _check_resumable(saved: dict[str, Any], cfg: PretrainConfig, path: Path) -> None:
    before, now = _flatten(saved), _flatten(cfg.to_dict())
    for key in sorted(set(before) | set(now)):
        if key in RESUMABLE_CHANGES:
            continue
        if before.get(key) != now.get(key):
            raise ConfigError(
                f"{path}: the checkpoint was trained with {key}={before.get(key)!r} but the config now says "
                f"{now.get(key)!r}; resume with the run's own config.yaml (only {sorted(RESUMABLE_CHANGES)} may change)"
            )


def _device(cfg: PretrainConfig, env: DistEnv) -> torch.device:
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available (use train.device=cpu or auto)")
    if cfg.train.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    torch.cuda.set_device(env.local_rank)
    return torch.device("cuda", env.local_rank)


def _amp_dtype(cfg: PretrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or cfg.train.amp == "off":
        return None
    if cfg.train.amp == "fp16":
        return torch.float16
    if cfg.train.amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def batch_loss(
    model: nn.Module,
    loss_fn: nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    device: torch.device,
    contrastive: bool,
    targets: torch.Tensor | None = None,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """The loss of one batch over the global batch (all ranks' embeddings gathered with gradients).

    Contrastive: both views go through ``model`` in one forward pass (``(2B, 1, s, s) -> (2B, D)``),
    are stacked to ``(B, 2, D)``, gathered to ``(W*B, 2, D)`` with the labels ``(W*B, K)``.
    Supervised: ``view1`` only; logits and ``targets[index]`` are gathered.
    """
    from modan_pacs.data.transforms import views_to_float  # (imports MONAI: kept out of this module's import)

    view1 = views_to_float(batch["view1"], device)  # uint8 views cross the bus, float32 on the device
    images = torch.cat([view1, views_to_float(batch["view2"], device)]) if contrastive else view1
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    with autocast:
        out = model(images)
    out = out.float()
    if contrastive:
        b = view1.shape[0]
        features = gather_with_grad(torch.stack([out[:b], out[b:]], dim=1))  # (W*B, 2, D)
        labels = gather_with_grad(batch["labels"].to(device, non_blocking=True))
        return loss_fn(features, labels)
    if targets is None:
        raise ValueError("a supervised loss needs targets (one class per cache row)")
    batch_targets = targets[batch["index"]].to(device, non_blocking=True)
    return loss_fn(gather_with_grad(out), gather_with_grad(batch_targets))


def _write_metrics(path: Path, rows: list[dict[str, float]], keep_until_epoch: int | None) -> None:
    """Append ``rows``; on resume first drop rows of epochs after the checkpoint (they will be redone)."""
    existing: list[dict[str, str]] = []
    if keep_until_epoch is not None and path.is_file():
        with path.open() as fh:
            existing = [r for r in csv.DictReader(fh) if int(r["epoch"]) <= keep_until_epoch]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(existing)
        writer.writerows(rows)
    tmp.replace(path)


def pretrain(
    config: PretrainConfig | dict | str | Path | None,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
) -> PretrainResult:
    """Pretrain an encoder on an image cache and export ``OUT/encoder.pt``.

    Args:
        config: a :class:`PretrainConfig`, a mapping, a YAML path, or ``None`` (shipped
            ``pretrain_modan.yaml``; with ``resume`` the run's own ``config.yaml``).
        data_dir: a cache folder (``modan_pacs.pixels.load_cache``).
        out_dir: the run folder: ``encoder.pt``, ``checkpoints/last.pt``, ``config.yaml``,
            ``metrics.csv``, ``tb/``, ``seeds.json``.
        resume: continue from ``OUT/checkpoints/last.pt``.
        progress: show a rich progress bar (rank 0).

    Raises:
        ConfigError: invalid config, or a config that differs from the checkpoint's.
        InputError: empty cache, fewer images than one batch, fewer than two classes for the
            supervised target, an existing run without ``resume``, a foreign checkpoint.
        DataNotFoundError: the cache folder or its files are missing.
    """
    from modan_pacs.data import build_pretrain_loader
    from modan_pacs.pixels import load_cache

    out_dir = Path(out_dir)
    cfg = _resolve(config, out_dir, resume)
    ckpt_path = out_dir / "checkpoints" / "last.pt"
    ckpt: dict[str, Any] | None = None
    if resume:
        ckpt = load_checkpoint(ckpt_path)
        _check_resumable(ckpt["config"], cfg, ckpt_path)
    elif ckpt_path.exists():
        raise InputError(f"{out_dir} already holds a run ({ckpt_path}); pass --resume to continue it or choose another --out")

    created_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    env = init_distributed("cuda" if cfg.train.device != "cpu" and torch.cuda.is_available() else "cpu")
    created_group = created_group and env.distributed
    try:
        return _run(cfg, Path(data_dir), out_dir, env, ckpt, progress, load_cache, build_pretrain_loader)
    finally:
        if created_group:
            torch.distributed.destroy_process_group()


def _run(cfg, data_dir, out_dir, env, ckpt, progress, load_cache, build_pretrain_loader) -> PretrainResult:  # noqa: ANN001
    device = _device(cfg, env)
    if cfg.train.batch_size % env.world_size:
        raise ConfigError(f"train.batch_size {cfg.train.batch_size} (global) is not divisible by the {env.world_size} processes")
    per_rank = cfg.train.batch_size // env.world_size
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    import random

    random.seed(cfg.seed)

    cache = load_cache(data_dir)
    if len(cache) == 0:
        raise InputError(f"cache {data_dir} holds no images: nothing to pretrain on")
    if len(cache) < cfg.train.batch_size:
        raise InputError(
            f"cache {data_dir} has {len(cache)} images, fewer than one batch (train.batch_size={cfg.train.batch_size}); "
            f"lower it, e.g. train.batch_size={max(2, len(cache) // 2 // env.world_size * env.world_size)}"
        )
    contrastive = cfg.loss.name in CONTRASTIVE
    targets: torch.Tensor | None = None
    n_classes: int | None = None
    if not contrastive:
        column = cfg.supervised.column
        found = class_targets(
            cache.labels,
            list(cache.vocabulary.label_names),
            label_group=cfg.supervised.label_group,
            manifest_column=cache.manifest[column].to_numpy() if column and column in cache.manifest else None,
            column_name=column,
            where=f"cache {data_dir}",
        )
        targets = torch.from_numpy(found.targets)
        n_classes = len(found.class_names)

    head = build_head("classifier", out_dim=n_classes) if n_classes else build_head(cfg.model.head)
    model: nn.Module = EncoderWithHead(build_encoder(cfg.model.stem), head)
    if env.distributed and cfg.model.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    channels_last = device.type == "cuda" and cfg.train.channels_last
    model = model.to(device, memory_format=torch.channels_last) if channels_last else model.to(device)
    arch = {"stem": cfg.model.stem, "head": cfg.model.head, "loss": cfg.loss.name, "n_classes": n_classes, "n_labels": int(cache.labels.shape[1])}
    describe = {"label_names": list(cache.vocabulary.label_names), "label_counts": np.asarray(cache.labels).sum(axis=0).round().astype(int).tolist(),
                "n_images": len(cache)}  # fmt: skip

    loss_fn = build_loss(cfg.loss.name, **cfg.loss.params).to(device)
    start_epoch = int(ckpt["epoch"]) if ckpt else 0
    loader = build_pretrain_loader(
        cache, batch_size=per_rank, size=cfg.data.size, workers=cfg.data.workers, seed=cfg.seed,
        epoch_seed=start_epoch, distributed=env.distributed, view_dtype=cfg.data.view_dtype,
    )
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise InputError(f"cache {data_dir}: no full batch of {per_rank} images per process")
    optimizer = build_optimizer(model.parameters(), cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.schedule, steps_per_epoch, cfg.train.epochs)
    amp_dtype = _amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    global_step = 0
    if ckpt is not None:
        if ckpt.get("arch") != arch:
            raise InputError(f"{out_dir / 'checkpoints' / 'last.pt'}: checkpoint architecture {ckpt.get('arch')} differs from this run's {arch}")
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise InputError(f"{out_dir / 'checkpoints' / 'last.pt'}: weights do not fit this model ({str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else exc})") from None
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        global_step = int(ckpt["global_step"])
        rng = ckpt["rng"]
        restore_rng(rng[env.rank] if len(rng) == env.world_size else rng[0])

    train_model: nn.Module = model
    if env.distributed:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile:
        train_model = torch.compile(train_model)

    writer = None
    if env.is_main:
        (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        seeds_path = out_dir / "seeds.json"
        seeds = json.loads(seeds_path.read_text()) if ckpt and seeds_path.is_file() else {}
        seeds.update({
            "seed": cfg.seed,
            "model_init": f"torch.manual_seed({cfg.seed}) before building the model",
            "shuffle": f"DistributedSampler(seed={cfg.seed}).set_epoch(epoch)",
            "augmentation": f"numpy SeedSequence([{cfg.seed}, epoch, cache_row]) per sample",
            "world_size": env.world_size,
        })
        seeds.setdefault("resumed_at_epochs", [])
        if ckpt:
            seeds["resumed_at_epochs"].append(start_epoch)
        seeds_path.write_text(json.dumps(seeds, indent=2))
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tb"), purge_step=global_step if ckpt else None)
        log.info(
            "pretraining %s on %d images (%s, %d process(es), batch %d, %d steps/epoch) -> %s",
            cfg.loss.name, len(cache), device, env.world_size, cfg.train.batch_size, steps_per_epoch, out_dir,
        )

    history: list[dict[str, float]] = []
    bar = _progress(progress and env.is_main)
    loop_start = time.perf_counter()
    with bar:
        for epoch in range(start_epoch, cfg.train.epochs):
            row = _train_epoch(
                train_model, loss_fn, loader, optimizer, scheduler, scaler, epoch, device=device, contrastive=contrastive,
                targets=targets, amp_dtype=amp_dtype, channels_last=channels_last, grad_clip=cfg.train.grad_clip,
                writer=writer, log_every=cfg.train.log_every, global_step=global_step, global_batch=cfg.train.batch_size, bar=bar,
            )
            global_step = int(row["step"])
            history.append(row)
            rng_states = all_gather_objects(capture_rng())
            if env.is_main:
                state = {
                    "format": FORMAT_VERSION, "epoch": epoch + 1, "global_step": global_step, "arch": arch,
                    "config": cfg.to_dict(), "model": unwrap(model).state_dict(),
                    "encoder": encoder_state_dict(unwrap(model).encoder), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng_states,
                    "meta": encoder_metadata(cfg.to_dict(), epochs_done=epoch + 1, **describe),
                }
                save_atomic(state, out_dir / "checkpoints" / "last.pt")
                _write_metrics(out_dir / "metrics.csv", [row], keep_until_epoch=epoch if (ckpt or epoch > 0) else None)
                writer.add_scalar("epoch/loss", row["loss"], epoch + 1)
                writer.add_scalar("epoch/images_per_s", row["images_per_s"], epoch + 1)
                writer.flush()
                eta = (time.perf_counter() - loop_start) / len(history) * (cfg.train.epochs - epoch - 1)
                log.info("epoch %d/%d loss %.4f lr %.4g %.1f images/s, ETA %s", epoch + 1, cfg.train.epochs, row["loss"], row["lr"],
                         row["images_per_s"], format_eta(eta))
            barrier()

    encoder_path = out_dir / "encoder.pt"
    if env.is_main:
        meta = encoder_metadata(cfg.to_dict(), epochs_done=start_epoch + len(history), **describe)
        save_atomic(encoder_file(encoder_state_dict(unwrap(model).encoder), meta), encoder_path)
        if writer is not None:
            writer.close()
    barrier()
    return PretrainResult(out_dir=out_dir, encoder_path=encoder_path, start_epoch=start_epoch, epochs=cfg.train.epochs, history=history)


def _progress(enabled: bool):  # noqa: ANN202
    from rich.console import Console

    if not enabled or not Console().is_terminal:  # off a terminal: the per-epoch log line (with ETA) instead
        return _NoProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), transient=False,
    )


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: object, **kwargs: object) -> int:
        return 0

    def update(self, *args: object, **kwargs: object) -> None:
        return None

    def remove_task(self, *args: object) -> None:
        return None


def _train_epoch(
    model, loss_fn, loader, optimizer, scheduler, scaler, epoch, *, device, contrastive, targets, amp_dtype,  # noqa: ANN001
    channels_last, grad_clip, writer, log_every, global_step, global_batch, bar,  # noqa: ANN001
) -> dict[str, float]:
    model.train()
    loader.set_epoch(epoch)
    task = bar.add_task("train", total=len(loader), epoch=epoch + 1, loss="-")
    loss_sum = torch.zeros((), device=device)
    data_s = 0.0
    start = time.perf_counter()
    steps = 0
    batches = iter(loader)
    while True:
        t0 = time.perf_counter()
        batch = next(batches, None)
        data_s += time.perf_counter() - t0
        if batch is None:
            break
        loss = batch_loss(model, loss_fn, batch, device=device, contrastive=contrastive, targets=targets,
                          amp_dtype=amp_dtype, channels_last=channels_last)
        if not torch.isfinite(loss):
            raise InputError(f"loss became {loss.item()} at epoch {epoch + 1} step {steps + 1}; lower optimizer.lr or use amp=off")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        loss_sum += loss.detach()
        steps += 1
        global_step += 1
        if writer is not None and global_step % log_every == 0:
            value = loss.item()
            writer.add_scalar("train/loss", value, global_step)
            writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], global_step)
            bar.update(task, loss=f"{value:.4f}")
        bar.update(task, advance=1)
    elapsed = time.perf_counter() - start
    bar.remove_task(task)
    return {
        "epoch": epoch + 1,
        "step": global_step,
        "loss": float(loss_sum.item() / max(1, steps)),
        "lr": float(optimizer.param_groups[0]["lr"]),
        "images_per_s": steps * global_batch / elapsed if elapsed > 0 else float("nan"),
        "epoch_s": elapsed,
        "data_s": data_s,
    }
