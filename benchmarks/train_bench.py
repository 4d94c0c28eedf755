"""Augmentation in the loader workers (``data.augment_on=cpu``) against augmentation on the training
device (``data.augment_on=device``), in one run: per-sample CPU cost of the loader for both paths,
the device's cost of the batched augmentation, the training step, and how many loader workers
each path needs to keep the device busy.

A generated cache (``--cache-size`` px) is read through the real ``build_pretrain_loader``;
the training step is :func:`modan_pacs.train.profile_pretrain` (the trainer's own setup: AMP and
channels-last as ``auto`` chooses, i.e. on CUDA only). Runs on CUDA when present (``--device auto``).

Figures:
- loader CPU cost: main-process time per sample to pull batches from a ``workers=0`` loader
  (with workers, each worker pays this per sample it makes); interleaved rounds, median and
  minimum (on a loaded machine the minimum is the better estimate of the work itself);
- main-process parameters: on the device path the workers draw each sample's random numbers
  (part of its loader cost) and the main process turns the batch's numbers into crop boxes and
  jitter factors (``params_from_uniforms``, vectorised), per sample;
- device augmentation: the batched crop / flip / jitter on the device, per sample (synchronised);
- step: ``profile_pretrain`` phases; "compute rate" = images/s of the step without the data wait,
  the rate the loader must sustain;
- workers needed = ceil(loader CPU cost per sample x compute rate).

    .venv/bin/python benchmarks/train_bench.py [--batch 32] [--size 64] [--cache-size 128] [--stem authors] [--steps 3]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def make_cache(directory: Path, n: int, size: int) -> Path:
    """``n`` smooth random images (low-frequency noise, so crops differ) with random modality/anatomy labels."""
    from modan_pacs.labels import Vocabulary

    vocab = Vocabulary.load()
    rng = np.random.default_rng(0)
    labels = np.zeros((n, len(vocab.label_names)), np.float32)
    labels[np.arange(n), rng.integers(0, 3, n)] = 1
    labels[np.arange(n), 8 + rng.integers(0, 9, n)] = 1
    coarse = torch.from_numpy(rng.random((n, 1, 8, 8), dtype=np.float32))
    images = (
        (torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear") * 255)
        .round()
        .to(torch.uint8)[:, 0]
        .numpy()
    )
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "images.npy", images)
    np.save(directory / "labels.npy", labels)
    pd.DataFrame(
        {
            "cache_row": np.arange(n),
            "source": [f"gen/{i}" for i in range(n)],
            "slice_index": 0,
            "modality_label": None,
            "anatomy_label": None,
        }
    ).to_parquet(directory / "manifest.parquet")
    vocab.save(directory / "vocabulary.yaml")
    pd.DataFrame({"path": pd.Series(dtype="string"), "reason": pd.Series(dtype="string")}).to_parquet(
        directory / "errors.parquet"
    )
    return directory


def loader_seconds_per_sample(cache, batch: int, size: int, augment_on: str, batches: int) -> float:  # noqa: ANN001
    from modan_pacs.data import build_pretrain_loader

    loader = build_pretrain_loader(
        cache, batch_size=batch, size=size, workers=0, seed=0, augment_on=augment_on, pin_memory=False
    )
    it = iter(loader)
    next(it)  # warm-up
    start = time.perf_counter()
    n = 0
    for _ in range(batches):
        b = next(it, None)
        if b is None:
            loader.set_epoch(loader.epoch + 1)
            it = iter(loader)
            b = next(it)
        n += b["index"].shape[0]
    return (time.perf_counter() - start) / n


def device_augment_seconds_per_sample(
    cache, batch: int, size: int, device: torch.device, repeats: int
) -> tuple[float, float]:  # noqa: ANN001
    """(main-process parameters from the workers' uniforms, batched crop/flip/jitter on ``device``)
    seconds per sample."""
    from modan_pacs.data import apply_view_params, params_from_uniforms, sample_seed, view_uniforms

    images = torch.from_numpy(np.array(cache.images[:batch]))[:, None].to(
        device
    )  # (a copy: the cache is a read-only memory map)
    spatial = tuple(images.shape[-2:])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    uniforms = [
        torch.stack([view_uniforms(sample_seed(0, epoch, row)) for row in range(batch)]) for epoch in range(repeats + 1)
    ]
    apply_view_params(images, params_from_uniforms(uniforms[0], spatial).to(device), size)  # warm-up
    draw_s = apply_s = 0.0
    for r in range(repeats):
        t0 = time.perf_counter()
        params = params_from_uniforms(uniforms[r + 1], spatial)
        t1 = time.perf_counter()
        sync()
        t2 = time.perf_counter()
        apply_view_params(images, params.to(device), size)
        sync()
        t3 = time.perf_counter()
        draw_s += t1 - t0
        apply_s += t3 - t2
    return draw_s / (repeats * batch), apply_s / (repeats * batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64, help="side of the augmented views")
    parser.add_argument("--cache-size", type=int, default=128, help="side of the cached images")
    parser.add_argument("--stem", default="authors", choices=["paper", "authors"])
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per path (after one warm-up step)")
    parser.add_argument("--loader-batches", type=int, default=8, help="batches timed per loader round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved loader rounds (median and minimum reported)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--no-step",
        action="store_true",
        help="loader and augmentation figures only (no training step, no workers needed)",
    )
    args = parser.parse_args()

    from modan_pacs.paths import config_path
    from modan_pacs.pixels import load_cache
    from modan_pacs.train import load_config, profile_pretrain

    device = torch.device(
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    paths = ("cpu", "device")
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = make_cache(Path(tmp) / "cache", args.batch * 8, args.cache_size)
        cache = load_cache(cache_dir)
        loader_s: dict[str, list[float]] = {p: [] for p in paths}
        for _ in range(args.rounds):  # interleaved, so load on the machine hits both paths alike
            for p in paths:
                loader_s[p].append(loader_seconds_per_sample(cache, args.batch, args.size, p, args.loader_batches))
        draw_s, apply_s = device_augment_seconds_per_sample(
            cache, args.batch, args.size, device, repeats=args.loader_batches
        )
        profiles = {}
        for p in paths if not args.no_step else ():
            cfg = load_config(
                config_path("pretrain_modan.yaml"),
                [
                    f"model.stem={args.stem}",
                    f"data.size={args.size}",
                    "data.workers=0",
                    f"data.augment_on={p}",
                    f"train.batch_size={args.batch}",
                    f"train.device={device.type}",
                    "schedule.warmup_epochs=0",
                ],
            )
            profiles[p] = profile_pretrain(cfg, cache_dir, steps=args.steps)

    report(args, device, loader_s, draw_s, apply_s, profiles)


def report(
    args: argparse.Namespace, device: torch.device, loader_s: dict, draw_s: float, apply_s: float, profiles: dict
) -> None:
    """Print the comparison table (markdown)."""
    paths = ("cpu", "device")
    env = (
        profiles["cpu"].environment
        if profiles
        else {
            "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "amp_dtype": None,
            "channels_last": None,
        }
    )
    print(
        f"device {device}{' (' + env['gpu_name'] + ')' if env['gpu_name'] else ''}, amp {env['amp_dtype'] or 'off'}, "
        f"channels_last {env['channels_last']}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"stem {args.stem}, "
        f"batch {args.batch} (x2 views) at {args.size} px from {args.cache_size} px cached images"
        f"{'; no training step (--no-step)' if args.no_step else ''}"
    )
    print(
        "| path | loader CPU ms/sample, median (min; rounds) | main-process parameters ms/sample | "
        "device augment ms/sample | step ms (data / to device / forward / loss / backward+step) | "
        "compute images/s | one worker sustains images/s | workers needed |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for p in paths:
        per_sample = statistics.median(loader_s[p])
        rounds = f"{min(loader_s[p]) * 1e3:.3f}; " + ", ".join(f"{v * 1e3:.3f}" for v in loader_s[p])
        device_cols = f"{draw_s * 1e3:.3f} | {apply_s * 1e3:.3f}" if p == "device" else "- | -"
        step_cols = "- | -"
        workers = "-"
        if p in profiles:
            prof = profiles[p]
            compute_rate = args.batch / (prof.step_s - prof.phase_s["data"])
            phases = " / ".join(f"{prof.phase_s[k] * 1e3:.1f}" for k in prof.phase_s)
            step_cols = f"{prof.step_s * 1e3:.1f} ({phases}) | {compute_rate:.1f}"
            workers = str(max(1, math.ceil(per_sample * compute_rate)))
        print(
            f"| {p} | {per_sample * 1e3:.3f} ({rounds}) | {device_cols} | {step_cols} | "
            f"{1 / per_sample:.0f} | {workers} |"
        )
    ratio = statistics.median(loader_s["cpu"]) / statistics.median(loader_s["device"])
    ratio_min = min(loader_s["cpu"]) / min(loader_s["device"])
    print(f"loader CPU cost per sample, cpu path / device path: {ratio:.1f}x (medians), {ratio_min:.1f}x (minima)")


if __name__ == "__main__":
    main()
