"""Mean AUC per (dataset, regime, method) of two prediction trees over the same repeats.

Both trees are laid out as the benchmark writes them (``<dataset>/<regime>/<method>/repeat_NN/
fold_K.csv``, links followed); only the repeats given are used, so two runs with different repeat
counts are compared like for like (same folds, same repeat seeds). Statistics are the report's own
``compute_tables``.

    .venv/bin/python scripts/compare_prediction_trees.py RUN1/predictions RUN2/predictions --repeats 1 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import pandas as pd

from modan_pacs.report.stats import compute_tables


def subset(src: Path, dst: Path, repeats: set[str]) -> None:
    """Link the fold files of ``repeats`` from ``src`` into ``dst`` (same relative layout)."""
    for folder, _, names in os.walk(src, followlinks=True):
        for name in names:
            path = Path(folder) / name
            if name.startswith("fold_") and name.endswith(".csv") and path.parent.name in repeats:
                target = dst / path.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(path.resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--repeats", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--reference", default="modan-mulsupcon")
    args = parser.parse_args()
    repeats = {f"repeat_{r:02d}" for r in args.repeats}
    means = {}
    for label, tree in (("first", args.first), ("second", args.second)):
        with tempfile.TemporaryDirectory() as tmp:
            subset(tree, Path(tmp), repeats)
            rows = compute_tables(tmp, reference=args.reference).rows
        means[label] = rows.set_index(["dataset", "regime", "method"])["mean_auc"]
    frame = pd.DataFrame(means)
    frame["difference"] = frame["second"] - frame["first"]
    print(frame.round(4).to_string())


if __name__ == "__main__":
    main()
