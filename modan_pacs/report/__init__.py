"""Statistics, tables and figures of the downstream protocol (the paper's Tables 4 and 5)."""

from .build import build_report
from .stats import (
    TABLE_COLUMNS,
    ProtocolTables,
    compute_tables,
    fold_auc,
    paired_wilcoxon,
    read_fold_predictions,
    repeat_summaries,
    scan_prediction_tree,
)
from .tables import render_markdown

__all__ = [
    "TABLE_COLUMNS",
    "ProtocolTables",
    "build_report",
    "compute_tables",
    "fold_auc",
    "paired_wilcoxon",
    "read_fold_predictions",
    "render_markdown",
    "repeat_summaries",
    "scan_prediction_tree",
]
