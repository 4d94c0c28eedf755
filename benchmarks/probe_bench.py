"""Linear probing: features computed once per fold (fast path) vs a frozen forward pass every epoch.

Both paths train the same 512->2 head from the same seed on the same batches; with the encoder
frozen in eval mode they must give the same predictions (and AUC). Run:

    .venv/bin/python benchmarks/probe_bench.py --images 200 --size 64 --epochs 10 --stem paper
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from modan_pacs.bench.train import FitSettings, linear_probe_epochwise, linear_probe_on_features
from modan_pacs.models import build_encoder, frozen_features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--stem", default="paper", choices=["paper", "authors"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    g = torch.Generator().manual_seed(0)
    n = args.images
    y = torch.tensor([i % 2 for i in range(n)])
    x = torch.rand(n, 1, args.size, args.size, generator=g) * 0.8
    x[y == 1, :, args.size // 4 : args.size // 2, args.size // 4 : args.size // 2] += 0.2  # a learnable signal
    idx = np.arange(n)
    test, val = idx % 5 == 0, idx % 5 == 1
    train = ~test & ~val
    torch.manual_seed(0)
    encoder = build_encoder(args.stem)
    settings = FitSettings(lr=1e-3, epochs=args.epochs, batch_size=args.batch_size)

    start = time.perf_counter()
    features = frozen_features(encoder, x, device)
    torch.manual_seed(1)
    fast, _ = linear_probe_on_features(
        features,
        train=train,
        val=val,
        test=test,
        labels=y,
        settings=settings,
        generator=torch.Generator().manual_seed(2),
        device=device,
    )
    t_fast = time.perf_counter() - start

    start = time.perf_counter()
    torch.manual_seed(1)
    slow, _ = linear_probe_epochwise(
        encoder,
        x_train=x[train],
        y_train=y[train],
        x_val=x[val],
        y_val=y[val],
        x_test=x[test],
        settings=settings,
        generator=torch.Generator().manual_seed(2),
        device=device,
    )
    t_slow = time.perf_counter() - start

    labels = y[test].numpy()
    print(f"device {device}, threads {args.threads}, {n} images {args.size}px, stem {args.stem}, {args.epochs} epochs")
    print(f"features once : {t_fast:8.2f} s  AUC {roc_auc_score(labels, fast):.6f}")
    print(f"epochwise     : {t_slow:8.2f} s  AUC {roc_auc_score(labels, slow):.6f}")
    print(f"speed-up {t_slow / t_fast:.1f}x, max |pred difference| {np.abs(fast - slow).max():.2e}")


if __name__ == "__main__":
    main()
