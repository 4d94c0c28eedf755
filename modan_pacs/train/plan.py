"""What a pretraining run would do, without doing it (``modan-pacs pretrain --dry-run``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modan_pacs.errors import InputError

from .config import PretrainConfig, flatten_config, read_config_file, resolve_config, value_sources


@dataclass
class PretrainPlan:
    """The resolved run: config with the origin of each value, the data, the steps."""

    config: PretrainConfig
    config_file: Path
    sources: dict[str, str]
    """Dotted key -> ``default`` | ``file`` | ``override``."""
    values: dict[str, Any]
    """Dotted key -> resolved value."""
    data_dir: Path
    n_images: int
    image_side: int
    label_counts: dict[str, int]
    out_dir: Path
    world_size: int
    per_process_batch: int
    steps_per_epoch: int
    start_epoch: int
    notes: list[str] = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * max(0, self.config.train.epochs - self.start_epoch)


def plan_pretrain(
    config: str | Path | None,
    overrides: list[str] | None,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
) -> PretrainPlan:
    """Resolve the config and read the cache's shape, as :func:`modan_pacs.train.pretrain` would, and stop.

    Raises:
        ConfigError: bad config or override (blamed on the override when it set the value).
        DataNotFoundError: no cache at ``data_dir``.
        InputError: an empty cache, fewer images than one batch, or an existing run without ``resume``.
    """
    import numpy as np

    from modan_pacs.pixels import load_cache

    from .checkpoint import load_checkpoint

    out_dir, data_dir = Path(out_dir), Path(data_dir)
    if config is None and resume and (out_dir / "config.yaml").is_file():
        config = out_dir / "config.yaml"
    config_file, data = read_config_file(config)
    cfg = resolve_config(data, overrides, source=str(config_file))
    sources = value_sources(data, overrides, cfg)
    values = flatten_config(cfg.to_dict())
    ckpt_path = out_dir / "checkpoints" / "last.pt"
    notes: list[str] = []
    start_epoch = 0
    if resume:
        start_epoch = int(load_checkpoint(ckpt_path)["epoch"])
        notes.append(f"resuming {ckpt_path} at epoch {start_epoch}")
    elif ckpt_path.exists():
        raise InputError(
            f"{out_dir} already holds a run ({ckpt_path}); pass --resume to continue it or choose another --out"
        )
    cache = load_cache(data_dir)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if len(cache) == 0:
        raise InputError(f"cache {data_dir} holds no images: nothing to pretrain on")
    if len(cache) < cfg.train.batch_size:
        raise InputError(
            f"cache {data_dir} has {len(cache)} images, fewer than one batch (train.batch_size={cfg.train.batch_size})"
        )
    if cfg.train.batch_size % world:
        raise InputError(f"train.batch_size {cfg.train.batch_size} (global) is not divisible by the {world} processes")
    per_process = cfg.train.batch_size // world
    steps = (len(cache) // world) // per_process  # the loader drops the last incomplete batch
    counts = np.asarray(cache.labels).sum(axis=0).round().astype(int)
    return PretrainPlan(
        config=cfg,
        config_file=config_file,
        sources=sources,
        values=values,
        data_dir=data_dir,
        n_images=len(cache),
        image_side=int(cache.images.shape[-1]),
        label_counts={n: int(c) for n, c in zip(cache.vocabulary.label_names, counts) if c},
        out_dir=out_dir,
        world_size=world,
        per_process_batch=per_process,
        steps_per_epoch=steps,
        start_epoch=start_epoch,
        notes=notes,
    )
