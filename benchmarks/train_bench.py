"""Throughput of one pretraining step and where its time goes: data loading, forward/backward, loss.

A generated cache (``--images`` images of ``--cache-size`` px) is read through the real
``modan_pacs.data.build_pretrain_loader`` (two augmented views); the step is the trainer's
``batch_loss`` + backward + SGD step on a 1-channel ResNet-18. Runs on CUDA when present
(``--device auto``), with the trainer's AMP choice, else on CPU.

    .venv/bin/python benchmarks/train_bench.py [--batch 32] [--size 64] [--stem paper] [--steps 5]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def make_cache(directory: Path, n: int, size: int) -> Path:
    from modan_pacs.labels import Vocabulary

    vocab = Vocabulary.load()
    rng = np.random.default_rng(0)
    labels = np.zeros((n, len(vocab.label_names)), np.float32)
    labels[np.arange(n), rng.integers(0, 3, n)] = 1
    labels[np.arange(n), 8 + rng.integers(0, 9, n)] = 1
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "images.npy", rng.integers(0, 256, (n, size, size), dtype=np.uint8))
    np.save(directory / "labels.npy", labels)
    pd.DataFrame({"cache_row": np.arange(n), "source": [f"gen/{i}" for i in range(n)], "slice_index": 0,
                  "modality_label": None, "anatomy_label": None}).to_parquet(directory / "manifest.parquet")
    vocab.save(directory / "vocabulary.yaml")
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64, help="side of the augmented views")
    parser.add_argument("--cache-size", type=int, default=128, help="side of the cached images")
    parser.add_argument("--stem", default="paper", choices=["paper", "authors"])
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args()

    from modan_pacs.data import build_pretrain_loader, views_to_float
    from modan_pacs.losses import MultiLabelSupConLoss
    from modan_pacs.models import EncoderWithHead, build_encoder, build_head
    from modan_pacs.pixels import load_cache

    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    amp = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        cache = load_cache(make_cache(Path(tmp) / "cache", args.batch * (args.steps + 1), args.cache_size))
        loader = build_pretrain_loader(cache, batch_size=args.batch, size=args.size, workers=args.workers, seed=0, epoch_seed=0)
        model = EncoderWithHead(build_encoder(args.stem), build_head("none")).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        loss_fn = MultiLabelSupConLoss(0.07, 0.3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
        totals = {"data": 0.0, "forward": 0.0, "loss": 0.0, "backward+step": 0.0}
        batches = iter(loader)
        for step in range(args.steps + 1):
            t0 = time.perf_counter()
            batch = next(batches)
            images = views_to_float(torch.cat([batch["view1"], batch["view2"]]), device, channels_last=device.type == "cuda")
            labels = batch["labels"].to(device)
            sync()
            t1 = time.perf_counter()
            with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
                out = model(images).float()
            sync()
            t2 = time.perf_counter()
            b = labels.shape[0]
            loss = loss_fn(torch.stack([out[:b], out[b:]], dim=1), labels)
            sync()
            t3 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sync()
            t4 = time.perf_counter()
            if step > 0:  # the first step is warm-up
                for key, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    totals[key] += dt
    total = sum(totals.values())
    print(f"device {device}{' bf16' if amp else ''}, torch {torch.__version__}, {torch.get_num_threads()} threads, stem {args.stem}, "
          f"batch {args.batch} images (x2 views) at {args.size}px, {args.steps} timed steps, workers {args.workers}")
    print(f"step {total / args.steps * 1e3:.1f} ms, {args.batch * args.steps / total:.1f} images/s")
    for key, value in totals.items():
        print(f"  {key:<14} {value / args.steps * 1e3:9.1f} ms/step  {100 * value / total:5.1f} %")


if __name__ == "__main__":
    main()
