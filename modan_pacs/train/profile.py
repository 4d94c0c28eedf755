"""Throughput of the pretraining step and where its time goes (``modan-pacs pretrain ... --profile N``).

:func:`profile_pretrain` builds exactly what :func:`~modan_pacs.train.pretrain` trains with (same
config, cache, device switches, loader, DDP under ``torchrun``), runs warm-up steps (which include
``torch.compile``'s compilation) and then ``N`` timed optimiser steps, and splits each step into

- ``data``: waiting for the DataLoader (the main process's ``next(loader)``; with workers that keep
  up this is near zero);
- ``to_device``: moving the batch to the device, and there making the views (``augment_on=device``)
  or turning the uint8 views into float32 (``augment_on=cpu``);
- ``forward``, ``loss`` (with the global-batch gather under DDP), ``backward_step`` (backward,
  clipping, optimiser, scaler, scheduler).

On CUDA each phase ends with ``torch.cuda.synchronize()`` so the times are the device's; the
synchronisation removes the overlap a real run has, so the sum is an upper bound of a step. Peak
memory is ``torch.cuda.max_memory_allocated`` over the timed steps on CUDA, and the process's peak
resident set (since it started; DataLoader workers not included) on the CPU. Nothing is written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modan_pacs.errors import InputError

from .config import PretrainConfig
from .distributed import init_distributed
from .pretrain import TrainSetup, _resolve, backward_step, build_training, model_outputs, outputs_loss, run_environment

PHASES = ("data", "to_device", "forward", "loss", "backward_step")


@dataclass
class ProfileResult:
    """Timings of :func:`profile_pretrain` (seconds are means per timed step, on rank 0)."""

    steps: int
    warmup_steps: int
    warmup_s: float
    """Wall time of the warm-up steps (compilation included)."""
    global_batch: int
    step_s: float
    """Mean wall time of a timed step (the sum of the phases)."""
    phase_s: dict[str, float]
    """Mean seconds per step of each phase in :data:`PHASES`."""
    peak_memory_bytes: int
    peak_memory_kind: str
    """``cuda max_memory_allocated`` or ``process peak RSS``."""
    n_images: int
    steps_per_epoch: int
    environment: dict[str, Any] = field(default_factory=dict)
    """What the run applied and found (as ``environment.json``)."""

    @property
    def images_per_s(self) -> float:
        return self.global_batch / self.step_s if self.step_s > 0 else float("nan")

    @property
    def shares(self) -> dict[str, float]:
        """Each phase's fraction of the step."""
        return {k: (v / self.step_s if self.step_s > 0 else float("nan")) for k, v in self.phase_s.items()}

    @property
    def epoch_s(self) -> float:
        """The epoch time these steps imply for the cache at hand (``steps_per_epoch x step_s``)."""
        return self.steps_per_epoch * self.step_s


def _peak_rss_bytes() -> int:
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB
    except ImportError:  # (no `resource` module on Windows)
        import psutil

        return int(psutil.Process().memory_info().rss)


class _Batches:
    """Endless batches of the loader, moving to the next epoch when one ends."""

    def __init__(self, loader: Any, epoch: int) -> None:
        self.loader, self.epoch = loader, epoch
        loader.set_epoch(epoch)
        self.it = iter(loader)

    def next(self) -> dict[str, torch.Tensor]:
        batch = next(self.it, None)
        if batch is None:
            self.epoch += 1
            self.loader.set_epoch(self.epoch)
            self.it = iter(self.loader)
            batch = next(self.it)
        return batch


def _timed_step(setup: TrainSetup, batches: _Batches, sync: Any) -> tuple[list[float], torch.Tensor]:
    from modan_pacs.data.transforms import views_to_float

    t = [time.perf_counter()]
    batch = batches.next()
    t.append(time.perf_counter())
    batch = setup.on_device(batch)
    batch = {
        **batch,
        "view1": views_to_float(batch["view1"], setup.device),
        "view2": views_to_float(batch["view2"], setup.device),
    }
    sync()
    t.append(time.perf_counter())
    out = model_outputs(
        setup.train_model,
        batch,
        device=setup.device,
        contrastive=setup.contrastive,
        amp_dtype=setup.amp_dtype,
        channels_last=setup.channels_last,
    )
    sync()
    t.append(time.perf_counter())
    loss = outputs_loss(
        setup.loss_fn, out, batch, device=setup.device, contrastive=setup.contrastive, targets=setup.targets
    )
    sync()
    t.append(time.perf_counter())
    backward_step(setup, loss)
    sync()
    t.append(time.perf_counter())
    return [b - a for a, b in zip(t, t[1:])], loss.detach()


def profile_pretrain(
    config: PretrainConfig | dict | str | Path | None,
    data_dir: str | Path,
    *,
    steps: int,
    warmup: int = 1,
) -> ProfileResult:
    """Run ``warmup`` + ``steps`` training steps of ``config`` on the cache ``data_dir`` and time them.

    Args:
        config: as :func:`~modan_pacs.train.pretrain` (``None`` = shipped ``pretrain_modan.yaml``).
        data_dir: a cache folder.
        steps: timed steps (>= 1); the loader moves on to the next epoch when one ends.
        warmup: untimed steps first (``torch.compile`` compiles in the first).

    Raises:
        InputError: ``steps`` < 1 or ``warmup`` < 0, a non-finite loss, and the errors of :func:`pretrain`.
        ConfigError: an invalid config.
    """
    if steps < 1 or warmup < 0:
        raise InputError(f"--profile needs at least 1 timed step and warm-up >= 0; got steps={steps}, warmup={warmup}")
    cfg = _resolve(config, Path("."), False)
    created_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    env = init_distributed("cuda" if cfg.train.device != "cpu" and torch.cuda.is_available() else "cpu")
    created_group = created_group and env.distributed
    try:
        return _profile(build_training(cfg, Path(data_dir), env), steps, warmup)
    finally:
        if created_group:
            torch.distributed.destroy_process_group()


def _profile(setup: TrainSetup, steps: int, warmup: int) -> ProfileResult:
    cuda = setup.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    setup.train_model.train()
    batches = _Batches(setup.loader, 0)
    start = time.perf_counter()
    for _ in range(warmup):
        _timed_step(setup, batches, sync)
    warmup_s = time.perf_counter() - start
    if cuda:
        torch.cuda.reset_peak_memory_stats(setup.device)
    totals = dict.fromkeys(PHASES, 0.0)
    for step in range(steps):
        times, loss = _timed_step(setup, batches, sync)
        if not torch.isfinite(loss):
            raise InputError(
                f"--profile: loss became {loss.item()} at timed step {step + 1}; lower optimizer.lr or use amp=off"
            )
        for phase, dt in zip(PHASES, times):
            totals[phase] += dt
    peak = int(torch.cuda.max_memory_allocated(setup.device)) if cuda else _peak_rss_bytes()
    phase_s = {k: v / steps for k, v in totals.items()}
    return ProfileResult(
        steps=steps,
        warmup_steps=warmup,
        warmup_s=warmup_s,
        global_batch=setup.cfg.train.batch_size,
        step_s=sum(phase_s.values()),
        phase_s=phase_s,
        peak_memory_bytes=peak,
        peak_memory_kind="cuda max_memory_allocated" if cuda else "process peak RSS",
        n_images=setup.n_images,
        steps_per_epoch=setup.steps_per_epoch,
        environment=run_environment(setup),
    )
