"""Vectorised MulSupCon (Eq. 3) versus a per-pair Python loop, in one run.

The slow reference follows the authors' research code: the B x B Jaccard matrix by a Python double
loop over image pairs (B^2 calls), and the loss assembled anchor by anchor with a Python loop over
each anchor's positives. Both run on CPU, float32, 2 views, 12-dim two-hot labels (3 modalities +
9 anatomies, as RadImageNet), 1000-dim features (the authors' 512 -> 1000 ``fc`` output).

    .venv/bin/python benchmarks/loss_bench.py [--batches 32 64 128 256] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from modan_pacs.losses import multilabel_supcon_loss


def jaccard_pair(a: torch.Tensor, b: torch.Tensor) -> float:
    union = ((a + b) > 0).sum().item()
    return (a * b).sum().item() / union if union else 0.0


def slow_mulsupcon(features: torch.Tensor, labels: torch.Tensor, temperature: float, threshold: float) -> float:
    n, v, _ = features.shape
    jac = [[jaccard_pair(labels[i], labels[j]) for j in range(n)] for i in range(n)]  # B^2 Python calls
    z = F.normalize(features.reshape(n * v, -1), dim=1)
    logits = z @ z.T / temperature
    total, counted = 0.0, 0
    for a in range(n * v):
        row = torch.cat([logits[a, :a], logits[a, a + 1 :]])
        log_den = torch.logsumexp(row, dim=0).item()
        terms = []
        for p in range(n * v):
            if p == a:
                continue
            w = 1.0 if p // v == a // v else jac[a // v][p // v]
            if w >= threshold:
                terms.append(w * (logits[a, p].item() - log_den))
        if terms:
            total -= sum(terms) / len(terms)
            counted += 1
    return total / counted


def two_hot(n: int, g: torch.Generator) -> torch.Tensor:
    labels = torch.zeros(n, 12)
    labels[torch.arange(n), torch.randint(0, 3, (n,), generator=g)] = 1
    labels[torch.arange(n), 3 + torch.randint(0, 9, (n,), generator=g)] = 1
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of the vectorised loss (the fastest is reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both versions")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU float32, 2 views, 12-dim two-hot labels, 1000-dim features")
    print(f"{'batch':>6} {'vectorised ms':>14} {'loop s':>9} {'speed-up':>9} {'|diff|':>9}")
    for batch in args.batches:
        g = torch.Generator().manual_seed(batch)
        features = torch.randn(batch, 2, 1000, generator=g)
        labels = two_hot(batch, g)
        multilabel_supcon_loss(features, labels)  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fast = multilabel_supcon_loss(features, labels, 0.07, 0.3).item()
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        slow = slow_mulsupcon(features, labels, 0.07, 0.3)
        slow_s = time.perf_counter() - t0
        fast_s = min(times)
        print(f"{batch:>6} {fast_s * 1e3:>14.2f} {slow_s:>9.2f} {slow_s / fast_s:>8.0f}x {abs(fast - slow):>9.1e}", flush=True)


if __name__ == "__main__":
    main()
