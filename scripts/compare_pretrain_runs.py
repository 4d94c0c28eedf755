"""One table of several proxy-study runs: each run's mean AUC over its pretraining runs, per dataset,
regime and method (the runs' own ``report/pretrain_seeds.csv``, written by ``modan-pacs proxy-study``).

    .venv/bin/python scripts/compare_pretrain_runs.py distinct=runs/unknown_distinct match=runs/unknown_match \
        drop=runs/unknown_drop
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=STUDY_FOLDER (a proxy-study --out folder)")
    args = parser.parse_args()
    frames = []
    for item in args.runs:
        label, _, folder = item.partition("=")
        table = pd.read_csv(Path(folder) / "report" / "pretrain_seeds.csv")
        frames.append(table.assign(run=label))
    rows = pd.concat(frames, ignore_index=True)
    rows["cell"] = [
        f"{m:.3f}" + (f" ± {sd:.3f} (n={n})" if n > 1 else " (n=1)")
        for m, sd, n in zip(rows["mean_auc"], rows["sd_over_pretraining"], rows["n_pretrain_runs"])
    ]
    wide = rows.pivot_table(index=["dataset", "regime", "method"], columns="run", values="cell", aggfunc="first")
    labels = [item.partition("=")[0] for item in args.runs]
    print("| dataset | regime | method | " + " | ".join(labels) + " |")
    print("|---|---|---|" + "---|" * len(labels))
    for (dataset, regime, method), row in wide[labels].iterrows():
        cells = ["" if pd.isna(row[label]) else row[label] for label in labels]
        print(f"| {dataset} | {regime} | {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
