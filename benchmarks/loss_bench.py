"""Vectorised MulSupCon (Eq. 3) versus a per-pair Python loop written from the formula, in one run.

The reference is Eq. 3 computed pair by pair, as in the authors' research code: the B x B Jaccard
matrix by a Python double loop over image pairs (B^2 calls), then for every anchor view ``a`` the
similarity ``z_a . z_k / T`` of every other view ``k`` by its own dot product (M^2 dot products,
M = 2B views), the log-sum-exp denominator and the weighted sum over ``a``'s positives, in Python.
For comparison the table also times the "hybrid" loop this benchmark used before: the same Python
loops, but all similarities from ONE (M, M) matrix product, i.e. the vectorised loss's main cost
already vectorised; the speed-up against it is what the vectorisation of the remaining per-pair
logic is worth.

Both run on CPU, float32, 2 views, 12-dim two-hot labels (3 modalities + 9 anatomies, as
RadImageNet), 1000-dim features (the authors' 512 -> 1000 ``fc`` output). Every measurement is
repeated for each torch thread count given (default: 1 and torch's default, i.e. every core); the
per-pair loop is timed again under each, so the speed-up of a row compares like with like.

    .venv/bin/python benchmarks/loss_bench.py [--batches 32 64 128 256] [--repeats 20] [--threads 1 2] [--no-hybrid]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F

from modan_pacs.losses import multilabel_supcon_loss


def jaccard_pair(a: torch.Tensor, b: torch.Tensor) -> float:
    union = ((a + b) > 0).sum().item()
    return (a * b).sum().item() / union if union else 0.0


def _loss_from_pairs(n: int, v: int, jac: list[list[float]], similarity, threshold: float) -> float:
    """Eq. 3 anchor by anchor; ``similarity(a)`` returns the list of ``z_a . z_k / T`` for every view ``k``."""
    total, counted = 0.0, 0
    for a in range(n * v):
        sims = similarity(a)
        others = [s for k, s in enumerate(sims) if k != a]
        top = max(others)
        log_den = top + math.log(sum(math.exp(s - top) for s in others))  # stable log-sum-exp over k != a
        terms = []
        for p in range(n * v):
            if p == a:
                continue
            w = 1.0 if p // v == a // v else jac[a // v][p // v]
            if w >= threshold:
                terms.append(w * (sims[p] - log_den))
        if terms:
            total -= sum(terms) / len(terms)
            counted += 1
    return total / counted


def per_pair_mulsupcon(features: torch.Tensor, labels: torch.Tensor, temperature: float, threshold: float) -> float:
    """Eq. 3 with every pair's Jaccard weight and every pair's similarity computed on its own."""
    n, v, _ = features.shape
    jac = [[jaccard_pair(labels[i], labels[j]) for j in range(n)] for i in range(n)]  # B^2 Python calls
    z = [F.normalize(features[i, u], dim=0) for i in range(n) for u in range(v)]  # view r = (image r // v, view r % v)
    return _loss_from_pairs(n, v, jac, lambda a: [torch.dot(z[a], zk).item() / temperature for zk in z], threshold)


def hybrid_mulsupcon(features: torch.Tensor, labels: torch.Tensor, temperature: float, threshold: float) -> float:
    """The same loops, but all similarities from one (M, M) matrix product (the previous baseline)."""
    n, v, _ = features.shape
    jac = [[jaccard_pair(labels[i], labels[j]) for j in range(n)] for i in range(n)]
    z = F.normalize(features.reshape(n * v, -1), dim=1)
    logits = (z @ z.T / temperature).tolist()
    return _loss_from_pairs(n, v, jac, lambda a: logits[a], threshold)


def two_hot(n: int, g: torch.Generator) -> torch.Tensor:
    labels = torch.zeros(n, 12)
    labels[torch.arange(n), torch.randint(0, 3, (n,), generator=g)] = 1
    labels[torch.arange(n), 3 + torch.randint(0, 9, (n,), generator=g)] = 1
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument(
        "--repeats", type=int, default=20, help="timed runs of the vectorised loss (fastest and median reported)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="torch thread counts to measure under (default: 1 and torch's default, every core)",
    )
    parser.add_argument("--no-hybrid", action="store_true", help="skip the one-matmul hybrid loop")
    args = parser.parse_args()
    threads = args.threads or sorted({1, torch.get_num_threads()})
    print(
        f"torch {torch.__version__}, CPU float32, 2 views, 12-dim two-hot labels, 1000-dim features, "
        f"{os.cpu_count()} cores"
    )
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"{'threads':>7} {'batch':>6} {'vec. ms min':>12} {'median':>7} {'per-pair s':>11} {'speed-up':>9} "
        f"{'(median)':>9} {'|diff|':>9} {'hybrid s':>9} {'vs hybrid':>10}"
    )
    for n_threads, batch in ((t, b) for t in threads for b in args.batches):
        torch.set_num_threads(n_threads)
        g = torch.Generator().manual_seed(batch)
        features = torch.randn(batch, 2, 1000, generator=g)
        labels = two_hot(batch, g)
        multilabel_supcon_loss(features, labels)  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fast = multilabel_supcon_loss(features, labels, 0.07, 0.3).item()
            times.append(time.perf_counter() - t0)
        fast_s, median_s = min(times), statistics.median(times)
        t0 = time.perf_counter()
        slow = per_pair_mulsupcon(features, labels, 0.07, 0.3)
        slow_s = time.perf_counter() - t0
        hybrid_cols = ""
        if not args.no_hybrid:
            t0 = time.perf_counter()
            hybrid = hybrid_mulsupcon(features, labels, 0.07, 0.3)
            hybrid_s = time.perf_counter() - t0
            if abs(hybrid - slow) > 1e-5:
                raise SystemExit(f"hybrid loop disagrees with the per-pair loop at batch {batch}: {hybrid} vs {slow}")
            hybrid_cols = f" {hybrid_s:>9.2f} {hybrid_s / fast_s:>9.0f}x"
        diff = abs(fast - slow)
        print(
            f"{n_threads:>7} {batch:>6} {fast_s * 1e3:>12.2f} {median_s * 1e3:>7.2f} {slow_s:>11.2f} "
            f"{slow_s / fast_s:>8.0f}x {slow_s / median_s:>8.0f}x {diff:>9.1e}{hybrid_cols}",
            flush=True,
        )
        if diff > 1e-5:
            raise SystemExit(f"vectorised and per-pair values differ by {diff:.1e} > 1e-5 at batch {batch}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
