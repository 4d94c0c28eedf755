"""How much a partition leaks: AUC of a 1-nearest-neighbour classifier on 32-px z-scored thumbnails.

A classifier that can only memorise scenes scores high when near-identical images of one scene sit
in the training and the test folds. Compares the partition without near-duplicate grouping with
the default one, on the same images:

    .venv/bin/python scripts/leakage_1nn.py --dataset breast --data-dir ../shared/data/busi [--breast-normal drop]
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.metrics import roc_auc_score

from modan_pacs.bench.config import load_benchmark_config
from modan_pacs.bench.datasets import load_dataset, load_pixels
from modan_pacs.bench.near_duplicates import thumbnail
from modan_pacs.bench.splits import make_folds


def one_nn_auc(thumbs: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> float:
    """Mean over test folds of the AUC of 'label of the most correlated training image' scored by
    that correlation (positive neighbour: +corr, negative neighbour: -corr)."""
    aucs = []
    for k in np.unique(folds):
        test, train = folds == k, folds != k
        corr = thumbs[test] @ thumbs[train].T / thumbs.shape[1]
        nearest = corr.argmax(axis=1)
        score = np.where(labels[train][nearest] == 1, 1, -1) * corr[np.arange(len(nearest)), nearest]
        aucs.append(roc_auc_score(labels[test], score))
    return float(np.mean(aucs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="breast")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--breast-normal", default="negative")
    parser.add_argument("--seeds", type=int, default=5, help="partitions (seeds 0..N-1) averaged")
    args = parser.parse_args()
    rows = {}
    for near in (False, True):
        cfg = load_benchmark_config(near_duplicates=near, breast_normal=args.breast_normal)
        data = load_dataset(args.dataset, args.data_dir, cfg)
        thumbs = np.stack([thumbnail(load_pixels(r)) for r in data.records.to_dict(orient="records")])
        aucs = [
            one_nn_auc(thumbs, data.labels, make_folds(data, 5, seed)["fold"].to_numpy()) for seed in range(args.seeds)
        ]
        rows[near] = (np.mean(aucs), np.std(aucs), data.records["group"].nunique(), len(data))
    for near, (mean, sd, groups, n) in rows.items():
        label = "near-duplicates grouped" if near else "case + identical files only"
        print(
            f"{label:28s}: 1-NN AUC {mean:.3f} (SD {sd:.3f} over {args.seeds} partitions), {groups} groups, {n} images"
        )


if __name__ == "__main__":
    main()
