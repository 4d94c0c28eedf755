"""Writers of the protocol tables: ``tables.csv``, ``tables.md`` (the paper's layout), ``tables.json``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from modan_pacs.fileio import is_missing

from .stats import MIN_PAIRED_REPEATS, TABLE_COLUMNS, ProtocolTables, smallest_attainable_p

REGIME_TITLES = {"finetune": "Fine-tuning (Table 4)", "linear": "Linear probing (Table 5)"}
DATASET_TITLES = {"acl": "ACL", "breast": "Breast", "thyroid": "Thyroid"}
SIGNIFICANCE = 0.05


def write_tables_csv(tables: ProtocolTables, path: Path) -> Path:
    """``tables.csv``: exactly :data:`TABLE_COLUMNS`; p-values empty for the reference row."""
    tables.rows[TABLE_COLUMNS].to_csv(path, index=False, float_format="%.6g", na_rep="")
    return path


def _number(value: float) -> float | None:
    return None if is_missing(value) else value


def write_tables_json(tables: ProtocolTables, path: Path) -> Path:
    """``tables.json``: the rows, the repeat summaries and the fold AUCs (NaN written as null)."""
    payload = {
        "reference": tables.reference,
        "rows": [{k: _number(v) for k, v in row.items()} for row in tables.rows.to_dict(orient="records")],
        "repeat_auc": [
            {k: _number(v) for k, v in row.items()}
            for row in tables.repeats[["dataset", "regime", "method", "repeat", "auc", "n_folds"]].to_dict(
                orient="records"
            )
        ],
        "fold_auc": [
            {k: _number(v) for k, v in row.items()}
            for row in tables.folds[["dataset", "regime", "method", "repeat", "fold", "auc", "n"]].to_dict(
                orient="records"
            )
        ],
        "notes": tables.notes,
    }
    path.write_text(json.dumps(payload, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)) + "\n")
    return path


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text


def p_value_text(row: pd.Series | dict, *, markdown: bool = True) -> str:
    """``p 0.0010 one-sided; 0.0020 two-sided`` (p <= 0.05 bold in markdown), or why there is none
    (``p n/a: 1 repeat``). ``row``: a row of :data:`TABLE_COLUMNS`."""
    n = int(row["n_paired"])
    if n < MIN_PAIRED_REPEATS:
        return f"p n/a: {n} repeat{'' if n == 1 else 's'}"
    p1, p2 = row["p_one_sided"], row["p_two_sided"]
    if is_missing(p1):
        return "p n/a: identical repeats"
    return (
        f"p {_bold(f'{p1:.4f}', markdown and p1 <= SIGNIFICANCE)} one-sided; "
        f"{_bold(f'{p2:.4f}', markdown and p2 <= SIGNIFICANCE)} two-sided"
    )


def _cell(row: pd.Series, best: bool, reference: str) -> str:
    auc = _bold(f"{row['mean_auc']:.4f}", best)
    if not is_missing(row["ci_low"]):
        auc += f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
    if row["method"] == reference:
        return auc
    return f"{auc} ({p_value_text(row)})"


def _attainable_note(block: pd.DataFrame) -> list[str]:
    """One line per number of paired repeats in the block: the smallest p the exact test can reach."""
    lines = []
    for n in sorted({int(n) for n in block["n_paired"] if n >= MIN_PAIRED_REPEATS}):
        one, two = smallest_attainable_p(n)
        reach = (
            ""
            if two <= SIGNIFICANCE
            else (" (two-sided cannot reach 0.05)" if one <= SIGNIFICANCE else " (cannot reach 0.05)")
        )
        lines.append(
            f"With {n} paired repeats the smallest attainable p is {one:.4g} one-sided, {two:.4g} two-sided{reach}."
        )
    return lines


def render_markdown(tables: ProtocolTables) -> str:
    """Markdown in the paper's layout: one table per regime, methods as rows, datasets as columns.

    Each cell is the mean AUC over repeats and, for non-reference rows, the exact Wilcoxon p-values
    against the reference (one-sided: reference greater; two-sided). Best AUC per column and
    p <= 0.05 are bold, as in the paper.
    """
    rows = tables.rows
    lines = [
        "# Downstream results",
        "",
        f"Reference method: `{tables.reference}`. AUC = mean over repeats of the per-repeat mean fold AUC "
        "[95% percentile bootstrap interval over repeats]; p = exact Wilcoxon signed-rank test on the repeat "
        "summaries, paired by repeat (one-sided: reference greater; two-sided), reported from 2 paired repeats.",
        "",
    ]
    regimes = [r for r in REGIME_TITLES if r in set(rows["regime"])] + sorted(set(rows["regime"]) - set(REGIME_TITLES))
    for regime in regimes:
        block = rows[rows["regime"] == regime]
        datasets = sorted(block["dataset"].unique())
        methods = list(dict.fromkeys(block["method"]))
        lines += [f"## {REGIME_TITLES.get(regime, regime)}", ""]
        lines.append("| Pretraining | " + " | ".join(DATASET_TITLES.get(d, d) for d in datasets) + " |")
        lines.append("|---|" + "---|" * len(datasets))
        best = {d: block[block["dataset"] == d]["mean_auc"].max() for d in datasets}
        for method in methods:
            cells = []
            for dataset in datasets:
                match = block[(block["dataset"] == dataset) & (block["method"] == method)]
                if match.empty:
                    cells.append("–")
                    continue
                row = match.iloc[0]
                cells.append(_cell(row, row["mean_auc"] == best[dataset], tables.reference))
            n = int(block[block["method"] == method]["n_repeats"].max())
            lines.append(f"| {method} ({n} repeat{'' if n == 1 else 's'}) | " + " | ".join(cells) + " |")
        lines.append("")
        attainable = _attainable_note(block)
        if attainable:
            lines += [*attainable, ""]
    if tables.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in tables.notes] + [""]
    return "\n".join(lines)


def write_tables_markdown(tables: ProtocolTables, path: Path) -> Path:
    """``tables.md``: :func:`render_markdown`."""
    path.write_text(render_markdown(tables))
    return path
