"""The pretraining loop: MulSupCon / SupCon / NT-Xent / cross-entropy on a 1-channel ResNet-18.

CPU by default when no GPU is present. The device switches apply on every device: mixed precision
(``train.amp``: bf16, or fp16 with a GradScaler), channels-last (``train.channels_last``) and
``torch.compile`` (``train.compile``); ``auto`` turns the first two on for CUDA only. Every run
writes ``environment.json`` with what was applied (read back from the model, not the config) and
the library / GPU versions. With ``data.augment_on=device`` the two views are made on the device
(:class:`~modan_pacs.data.BatchTwoViewAugment`). Under ``torchrun`` the model is wrapped in
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
from typing import Any, Callable, Optional

import numpy as np
import torch
import yaml
from torch import nn

from modan_pacs.errors import ConfigError, InputError
from modan_pacs.fileio import atomic_write
from modan_pacs.losses import CONTRASTIVE, build_loss
from modan_pacs.models import EncoderWithHead, build_encoder, build_head, encoder_state_dict
from modan_pacs.progress import format_eta

from .checkpoint import (
    FORMAT_VERSION,
    capture_rng,
    encoder_file,
    encoder_metadata,
    load_checkpoint,
    restore_rng,
    save_atomic,
)
from .config import PretrainConfig, load_config, resolve_config
from .distributed import DistEnv, all_gather_objects, barrier, gather_with_grad, init_distributed
from .schedule import build_optimizer, build_scheduler
from .targets import class_targets, drop_unknown_anatomy, wrap_loss_for_unknown

log = logging.getLogger(__name__)

#: config keys that may change between an interrupted run and its resumption
RESUMABLE_CHANGES = frozenset({"train.epochs", "train.log_every", "data.workers", "train.device"})
METRIC_COLUMNS = ["epoch", "step", "loss", "lr", "images_per_s", "epoch_s", "data_s"]

TrainProgress = Callable[[int, int, int, Optional[float]], None]
"""``progress(epoch, step, steps, loss)``: ``step`` of the ``steps`` of (1-based) ``epoch`` are done
(called with 0 when the epoch starts, then after each step); ``loss`` is the batch loss when one was
logged at that step (every ``train.log_every`` steps), else None. Called on rank 0 only."""


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


def _with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config with keys added to the schema since then at their defaults."""
    try:
        return resolve_config(saved).to_dict()
    except ConfigError:  # a key the schema no longer has: compared as saved (and reported as a difference)
        return saved


def _check_resumable(saved: dict[str, Any], cfg: PretrainConfig, path: Path) -> None:
    before, now = _flatten(_with_defaults(saved)), _flatten(cfg.to_dict())
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
    """The autocast dtype: ``bf16`` / ``fp16`` on every device; ``auto`` = bf16 (else fp16) on CUDA, none on CPU."""
    if cfg.train.amp == "off":
        return None
    if cfg.train.amp == "bf16":
        return torch.bfloat16
    if cfg.train.amp == "fp16":
        return torch.float16
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _channels_last(cfg: PretrainConfig, device: torch.device) -> bool:
    """``true`` / ``false`` on every device; ``auto`` = on CUDA only."""
    return device.type == "cuda" if cfg.train.channels_last == "auto" else bool(cfg.train.channels_last)


def model_outputs(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    *,
    device: torch.device,
    contrastive: bool,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """The forward pass of one batch: ``(2B, D)`` float32 (``view1`` rows, then ``view2``) when
    ``contrastive``, else ``(B, C)`` logits of ``view1``. Views may be uint8 (read as ``x / 255``) or float."""
    from modan_pacs.data.transforms import views_to_float  # (imports MONAI: kept out of this module's import)

    view1 = views_to_float(batch["view1"], device)  # uint8 views cross the bus, float32 on the device
    images = torch.cat([view1, views_to_float(batch["view2"], device)]) if contrastive else view1
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    with autocast:
        out = model(images)
    return out.float()


def outputs_loss(
    loss_fn: nn.Module,
    out: torch.Tensor,
    batch: dict[str, torch.Tensor],
    *,
    device: torch.device,
    contrastive: bool,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """The loss over the global batch of :func:`model_outputs` ``out`` (all ranks gathered with gradients).

    Contrastive: ``(2B, D)`` is stacked to ``(B, 2, D)``, gathered to ``(W*B, 2, D)`` with the labels
    ``(W*B, K)``. Supervised: logits and ``targets[index]`` are gathered.
    """
    if contrastive:
        b = out.shape[0] // 2
        features = gather_with_grad(torch.stack([out[:b], out[b:]], dim=1))  # (W*B, 2, D)
        labels = gather_with_grad(batch["labels"].to(device, non_blocking=True))
        return loss_fn(features, labels)
    if targets is None:
        raise ValueError("a supervised loss needs targets (one class per cache row)")
    batch_targets = targets[batch["index"]].to(device, non_blocking=True)
    return loss_fn(gather_with_grad(out), gather_with_grad(batch_targets))


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
    out = model_outputs(
        model, batch, device=device, contrastive=contrastive, amp_dtype=amp_dtype, channels_last=channels_last
    )
    return outputs_loss(loss_fn, out, batch, device=device, contrastive=contrastive, targets=targets)


@dataclass
class TrainSetup:
    """Everything one process trains with, built by :func:`build_training` from a config and a cache."""

    cfg: PretrainConfig
    env: DistEnv
    device: torch.device
    n_images: int
    model: nn.Module
    """The plain model (what checkpoints hold)."""
    train_model: nn.Module
    """``model`` wrapped in DDP and / or ``torch.compile`` as configured (what the loop calls)."""
    loss_fn: nn.Module
    loader: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    channels_last: bool
    contrastive: bool
    targets: torch.Tensor | None
    arch: dict[str, Any]
    augmenter: Any = None
    """:class:`~modan_pacs.data.BatchTwoViewAugment` with ``data.augment_on=device``, else None."""
    start_epoch: int = 0
    global_step: int = 0
    describe: dict[str, Any] = field(default_factory=dict)
    """What ``encoder.pt``'s metadata says of the data: label names and counts, number of images."""

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def on_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch with its views made on the device (``augment_on=device``), else as it is."""
        return self.augmenter(batch, self.device) if self.augmenter is not None else batch


def _seed_everything(seed: int) -> None:
    import random

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _supervised_targets(cfg: PretrainConfig, cache: Any, data_dir: Path) -> tuple[torch.Tensor, int]:
    column = cfg.supervised.column
    found = class_targets(
        cache.labels,
        list(cache.vocabulary.label_names),
        label_group=cfg.supervised.label_group,
        manifest_column=cache.manifest[column].to_numpy() if column and column in cache.manifest else None,
        column_name=column,
        where=f"cache {data_dir}",
        unknown_anatomy=cfg.labels.unknown_anatomy,
        anatomy_group=cfg.labels.anatomy_group,
    )
    return torch.from_numpy(found.targets), len(found.class_names)


def _load_cache(data_dir: Path, batch_size: int, world_size: int) -> Any:
    from modan_pacs.pixels import load_cache

    cache = load_cache(data_dir)
    if len(cache) == 0:
        raise InputError(f"cache {data_dir} holds no images: nothing to pretrain on")
    if len(cache) < batch_size:
        raise InputError(
            f"cache {data_dir} has {len(cache)} images, fewer than one batch (train.batch_size={batch_size}); "
            f"lower it, e.g. train.batch_size={max(2, len(cache) // 2 // world_size * world_size)}"
        )
    return cache


def build_training(cfg: PretrainConfig, data_dir: Path, env: DistEnv, *, start_epoch: int = 0) -> TrainSetup:
    """Model, loss, loader, optimiser, schedule and the device switches of one process.

    ``train.amp``, ``train.channels_last`` and ``train.compile`` apply on every device (``auto``:
    mixed precision and channels-last on CUDA only).

    Raises:
        ConfigError: a batch not divisible by the processes, SyncBatchNorm without CUDA.
        InputError: empty cache, fewer images than one batch, a one-class supervised target.
    """
    from modan_pacs.data import BatchTwoViewAugment, build_pretrain_loader

    device = _device(cfg, env)
    if cfg.train.batch_size % env.world_size:
        raise ConfigError(
            f"train.batch_size {cfg.train.batch_size} (global) is not divisible by the {env.world_size} processes"
        )
    if env.distributed and cfg.model.sync_batchnorm and device.type != "cuda":
        raise ConfigError(
            "model.sync_batchnorm needs CUDA (torch's SyncBatchNorm does not run on CPU tensors); "
            "set it false for a CPU run"
        )
    per_rank = cfg.train.batch_size // env.world_size
    _seed_everything(cfg.seed)
    cache = _load_cache(data_dir, cfg.train.batch_size, env.world_size)
    if cfg.labels.unknown_anatomy == "drop":
        cache = drop_unknown_anatomy(cache, cfg.labels.anatomy_group)
        if len(cache) < cfg.train.batch_size:
            raise InputError(
                f"cache {data_dir}: {len(cache)} images of known anatomy, fewer than one batch ({cfg.train.batch_size})"
            )
    contrastive = cfg.loss.name in CONTRASTIVE
    targets, n_classes = (None, None) if contrastive else _supervised_targets(cfg, cache, data_dir)

    head = build_head("classifier", out_dim=n_classes) if n_classes else build_head(cfg.model.head)
    model: nn.Module = EncoderWithHead(build_encoder(cfg.model.stem), head)
    if env.distributed and cfg.model.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    channels_last = _channels_last(cfg, device)
    model = model.to(device, memory_format=torch.channels_last) if channels_last else model.to(device)
    arch = {
        "stem": cfg.model.stem,
        "head": cfg.model.head,
        "loss": cfg.loss.name,
        "n_classes": n_classes,
        "n_labels": int(cache.labels.shape[1]),
    }

    loader = build_pretrain_loader(
        cache,
        batch_size=per_rank,
        size=cfg.data.size,
        workers=cfg.data.workers,
        seed=cfg.seed,
        epoch_seed=start_epoch,
        distributed=env.distributed,
        view_dtype=cfg.data.view_dtype,
        augment_on=cfg.data.augment_on,
    )
    if len(loader) == 0:
        raise InputError(f"cache {data_dir}: no full batch of {per_rank} images per process")
    optimizer = build_optimizer(model.parameters(), cfg.optimizer)
    amp_dtype = _amp_dtype(cfg, device)
    train_model: nn.Module = model
    if env.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.train.compile:
        train_model = torch.compile(train_model)
    return TrainSetup(
        cfg=cfg,
        env=env,
        device=device,
        n_images=len(cache),
        model=model,
        train_model=train_model,
        loss_fn=wrap_loss_for_unknown(
            build_loss(cfg.loss.name, **cfg.loss.params),
            cfg.labels.unknown_anatomy,
            list(cache.vocabulary.label_names),
            cfg.labels.anatomy_group,
            contrastive=contrastive,
        ).to(device),
        loader=loader,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg.schedule, len(loader), cfg.train.epochs),
        scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        amp_dtype=amp_dtype,
        channels_last=channels_last,
        contrastive=contrastive,
        targets=targets,
        arch=arch,
        augmenter=BatchTwoViewAugment(cfg.data.size, seed=cfg.seed) if cfg.data.augment_on == "device" else None,
        start_epoch=start_epoch,
        describe={
            "label_names": list(cache.vocabulary.label_names),
            "label_counts": np.asarray(cache.labels).sum(axis=0).round().astype(int).tolist(),
            "n_images": len(cache),
        },
    )


def _restore(setup: TrainSetup, ckpt: dict[str, Any], ckpt_path: Path) -> None:
    """Load model, optimiser, scheduler, scaler, step and this rank's RNG states from a checkpoint."""
    if ckpt.get("arch") != setup.arch:
        raise InputError(
            f"{ckpt_path}: checkpoint architecture {ckpt.get('arch')} differs from this run's {setup.arch}"
        )
    try:
        setup.model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        raise InputError(
            f"{ckpt_path}: weights do not fit this model ({lines[1].strip() if len(lines) > 1 else exc})"
        ) from None
    setup.optimizer.load_state_dict(ckpt["optimizer"])
    setup.scheduler.load_state_dict(ckpt["scheduler"])
    setup.scaler.load_state_dict(ckpt["scaler"])
    setup.global_step = int(ckpt["global_step"])
    rng = ckpt["rng"]
    restore_rng(rng[setup.env.rank] if len(rng) == setup.env.world_size else rng[0])


def _is_channels_last(model: nn.Module) -> bool:
    """Whether the model's spatial convolution weights (k > 1, C_in > 1) are stored channels-last."""
    weights = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1]
    return bool(weights) and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)


def _nccl_version() -> str:
    version = torch.cuda.nccl.version()  # a tuple (major, minor, patch); an int in older torch
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def run_environment(setup: TrainSetup) -> dict[str, Any]:
    """What a run actually applied and found: device, autocast dtype, memory format, compilation,
    processes, library versions, and the GPU (name, memory) when there is one.

    ``channels_last`` is read from the model's weights and ``compiled`` from the wrapper, not from the config.
    """
    import platform

    device = setup.device
    cuda = device.type == "cuda"
    env: dict[str, Any] = {
        "device": str(device),
        "amp_dtype": str(setup.amp_dtype).removeprefix("torch.") if setup.amp_dtype is not None else None,
        "grad_scaler": bool(setup.scaler.is_enabled()),
        "channels_last": _is_channels_last(setup.model),
        "compiled": hasattr(setup.train_model, "_orig_mod"),
        "sync_batchnorm": any(isinstance(m, nn.SyncBatchNorm) for m in setup.model.modules()),
        "augment_on": setup.cfg.data.augment_on,
        "world_size": setup.env.world_size,
        "distributed_backend": torch.distributed.get_backend() if setup.env.distributed else None,
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "nccl": _nccl_version() if cuda and setup.env.distributed else None,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "gpu_name": None,
        "gpu_memory_bytes": None,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    if cuda:
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu_name=props.name, gpu_memory_bytes=int(props.total_memory), gpu_capability=f"{props.major}.{props.minor}"
        )
    return env


def _write_run_files(setup: TrainSetup, out_dir: Path, resumed: bool) -> None:
    """Rank 0: ``config.yaml``, ``seeds.json`` and ``environment.json`` of the run."""
    cfg = setup.cfg
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    seeds_path = out_dir / "seeds.json"
    seeds = json.loads(seeds_path.read_text()) if resumed and seeds_path.is_file() else {}
    augmentation = (
        f"torch.Generator seeded with SeedSequence([{cfg.seed}, epoch, cache_row]) per sample (in the loader workers), "
        f"views made on {setup.device}"
        if cfg.data.augment_on == "device"
        else f"numpy SeedSequence([{cfg.seed}, epoch, cache_row]) per sample"
    )
    seeds.update(
        {
            "seed": cfg.seed,
            "model_init": f"torch.manual_seed({cfg.seed}) before building the model",
            "shuffle": f"DistributedSampler(seed={cfg.seed}).set_epoch(epoch)",
            "augmentation": augmentation,
            "world_size": setup.env.world_size,
        }
    )
    seeds.setdefault("resumed_at_epochs", [])
    if resumed:
        seeds["resumed_at_epochs"].append(setup.start_epoch)
    seeds_path.write_text(json.dumps(seeds, indent=2))
    (out_dir / "environment.json").write_text(json.dumps(run_environment(setup), indent=2))


def _write_metrics(path: Path, rows: list[dict[str, float]], keep_until_epoch: int | None) -> None:
    """Append ``rows``; on resume first drop rows of epochs after the checkpoint (they will be redone)."""
    existing: list[dict[str, str]] = []
    if keep_until_epoch is not None and path.is_file():
        with path.open() as fh:
            existing = [r for r in csv.DictReader(fh) if int(r["epoch"]) <= keep_until_epoch]

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows(existing)
            writer.writerows(rows)

    atomic_write(path, write)


def pretrain(
    config: PretrainConfig | dict | str | Path | None,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: TrainProgress | None = None,
) -> PretrainResult:
    """Pretrain an encoder on an image cache and export ``OUT/encoder.pt``.

    Args:
        config: a :class:`PretrainConfig`, a mapping, a YAML path, or ``None`` (shipped
            ``pretrain_modan.yaml``; with ``resume`` the run's own ``config.yaml``).
        data_dir: a cache folder (``modan_pacs.pixels.load_cache``).
        out_dir: the run folder: ``encoder.pt``, ``checkpoints/last.pt``, ``config.yaml``,
            ``metrics.csv``, ``tb/``, ``seeds.json``.
        resume: continue from ``OUT/checkpoints/last.pt``.
        progress: receives the step progress of each epoch (:data:`TrainProgress`; rank 0); the
            CLI draws it as a bar. Each finished epoch is also logged as one line with an ETA.

    Raises:
        ConfigError: invalid config, or a config that differs from the checkpoint's.
        InputError: empty cache, fewer images than one batch, fewer than two classes for the
            supervised target, an existing run without ``resume``, a foreign checkpoint.
        DataNotFoundError: the cache folder or its files are missing.
    """
    out_dir = Path(out_dir)
    cfg = _resolve(config, out_dir, resume)
    ckpt_path = out_dir / "checkpoints" / "last.pt"
    ckpt: dict[str, Any] | None = None
    if resume:
        ckpt = load_checkpoint(ckpt_path)
        _check_resumable(ckpt["config"], cfg, ckpt_path)
    elif ckpt_path.exists():
        raise InputError(
            f"{out_dir} already holds a run ({ckpt_path}); pass --resume to continue it or choose another --out"
        )

    created_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    env = init_distributed("cuda" if cfg.train.device != "cpu" and torch.cuda.is_available() else "cpu")
    created_group = created_group and env.distributed
    try:
        return _run(cfg, Path(data_dir), out_dir, env, ckpt, progress)
    finally:
        if created_group:
            torch.distributed.destroy_process_group()


def _run(
    cfg: PretrainConfig,
    data_dir: Path,
    out_dir: Path,
    env: DistEnv,
    ckpt: dict[str, Any] | None,
    progress: TrainProgress | None,
) -> PretrainResult:
    setup = build_training(cfg, data_dir, env, start_epoch=int(ckpt["epoch"]) if ckpt else 0)
    if ckpt is not None:
        _restore(setup, ckpt, out_dir / "checkpoints" / "last.pt")
    start_epoch, global_step = setup.start_epoch, setup.global_step
    model, optimizer, scheduler, scaler = setup.model, setup.optimizer, setup.scheduler, setup.scaler
    writer = None
    if env.is_main:
        _write_run_files(setup, out_dir, resumed=ckpt is not None)
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tb"), purge_step=global_step if ckpt else None)
        log.info(
            "pretraining %s on %d images (%s, %d process(es), batch %d, %d steps/epoch) -> %s",
            cfg.loss.name,
            setup.n_images,
            setup.device,
            env.world_size,
            cfg.train.batch_size,
            setup.steps_per_epoch,
            out_dir,
        )

    history: list[dict[str, float]] = []
    report = progress if env.is_main else None
    loop_start = time.perf_counter()
    for epoch in range(start_epoch, cfg.train.epochs):
        row = _train_epoch(setup, epoch, writer=writer, global_step=global_step, progress=report)
        global_step = int(row["step"])
        history.append(row)
        rng_states = all_gather_objects(capture_rng())
        if env.is_main:
            state = {
                "format": FORMAT_VERSION,
                "epoch": epoch + 1,
                "global_step": global_step,
                "arch": setup.arch,
                "config": cfg.to_dict(),
                "model": unwrap(model).state_dict(),
                "encoder": encoder_state_dict(unwrap(model).encoder),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rng_states,
                "meta": encoder_metadata(cfg.to_dict(), epochs_done=epoch + 1, **setup.describe),
            }
            save_atomic(state, out_dir / "checkpoints" / "last.pt")
            _write_metrics(out_dir / "metrics.csv", [row], keep_until_epoch=epoch if (ckpt or epoch > 0) else None)
            writer.add_scalar("epoch/loss", row["loss"], epoch + 1)
            writer.add_scalar("epoch/images_per_s", row["images_per_s"], epoch + 1)
            writer.flush()
            eta = (time.perf_counter() - loop_start) / len(history) * (cfg.train.epochs - epoch - 1)
            log.info(
                "epoch %d/%d loss %.4f lr %.4g %.1f images/s, ETA %s",
                epoch + 1,
                cfg.train.epochs,
                row["loss"],
                row["lr"],
                row["images_per_s"],
                format_eta(eta),
            )
        barrier()

    encoder_path = out_dir / "encoder.pt"
    if env.is_main:
        meta = encoder_metadata(cfg.to_dict(), epochs_done=start_epoch + len(history), **setup.describe)
        save_atomic(encoder_file(encoder_state_dict(unwrap(model).encoder), meta), encoder_path)
        if writer is not None:
            writer.close()
    barrier()
    return PretrainResult(
        out_dir=out_dir, encoder_path=encoder_path, start_epoch=start_epoch, epochs=cfg.train.epochs, history=history
    )


def train_step(setup: TrainSetup, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One optimiser step on one batch (views made on the device first when configured); returns the loss."""
    batch = setup.on_device(batch)
    loss = batch_loss(
        setup.train_model,
        setup.loss_fn,
        batch,
        device=setup.device,
        contrastive=setup.contrastive,
        targets=setup.targets,
        amp_dtype=setup.amp_dtype,
        channels_last=setup.channels_last,
    )
    backward_step(setup, loss)
    return loss


def backward_step(setup: TrainSetup, loss: torch.Tensor) -> None:
    """Backward pass, optional gradient clipping, optimiser, scaler and scheduler step."""
    setup.optimizer.zero_grad(set_to_none=True)
    setup.scaler.scale(loss).backward()
    if setup.cfg.train.grad_clip is not None:
        setup.scaler.unscale_(setup.optimizer)
        nn.utils.clip_grad_norm_(setup.model.parameters(), setup.cfg.train.grad_clip)
    setup.scaler.step(setup.optimizer)
    setup.scaler.update()
    setup.scheduler.step()


def _train_epoch(
    setup: TrainSetup,
    epoch: int,
    *,
    writer,
    global_step: int,
    progress: TrainProgress | None,  # noqa: ANN001
) -> dict[str, float]:
    setup.train_model.train()
    loader, optimizer = setup.loader, setup.optimizer
    loader.set_epoch(epoch)
    total = len(loader)
    if progress is not None:
        progress(epoch + 1, 0, total, None)
    loss_sum = torch.zeros((), device=setup.device)
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
        loss = train_step(setup, batch)
        if not torch.isfinite(loss):
            raise InputError(
                f"loss became {loss.item()} at epoch {epoch + 1} step {steps + 1}; lower optimizer.lr or use amp=off"
            )
        loss_sum += loss.detach()
        steps += 1
        global_step += 1
        logged = None
        if writer is not None and global_step % setup.cfg.train.log_every == 0:
            logged = loss.item()
            writer.add_scalar("train/loss", logged, global_step)
            writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], global_step)
        if progress is not None:
            progress(epoch + 1, steps, total, logged)
    elapsed = time.perf_counter() - start
    return {
        "epoch": epoch + 1,
        "step": global_step,
        "loss": float(loss_sum.item() / max(1, steps)),
        "lr": float(optimizer.param_groups[0]["lr"]),
        "images_per_s": steps * setup.cfg.train.batch_size / elapsed if elapsed > 0 else float("nan"),
        "epoch_s": elapsed,
        "data_s": data_s,
    }
