"""Statistics of the paper's downstream protocol (Tables 4 and 5).

From a prediction tree ``<dataset>/<regime>/<method>/repeat_NN/fold_K.csv`` (header ``preds,labels``):

- fold AUC = :func:`sklearn.metrics.roc_auc_score` of that fold's ``preds`` against ``labels``;
- summary AUC of a repeat = mean of its fold AUCs;
- the table's AUC = mean of the repeat summaries (``std_auc``: their sample standard deviation, ddof 1);
- p-values = :func:`scipy.stats.wilcoxon` (``method="exact"``) on the repeat summaries of the
  reference method and another method, paired by repeat number; one-sided (alternative "reference
  greater", what the paper printed) and two-sided (what the paper said it computed). Only with 2 or
  more paired repeats (with 1 no test is possible: "n/a: 1 repeat"); the smallest attainable p
  (``1/2**n`` one-sided) is reported beside it, since with few repeats even the most extreme result
  cannot reach 0.05 (5 repeats: one-sided 0.031, two-sided 0.063);
- ``ci_low``/``ci_high`` = percentile bootstrap (:func:`scipy.stats.bootstrap`, 9999 resamples,
  seed 0) 95% interval of the mean AUC over the repeat summaries (spread between training repeats).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from modan_pacs.errors import InputError

#: columns of ``tables.csv``, in order. ``n_paired``: repeats paired with the reference;
#: ``p_min_*``: the smallest p the exact test can give with that many pairs (``1/2**n`` one-sided,
#: ``2/2**n`` two-sided); ``ci_low``/``ci_high``: bootstrap interval of ``mean_auc`` over repeats.
TABLE_COLUMNS = [
    "dataset",
    "regime",
    "method",
    "mean_auc",
    "std_auc",
    "n_repeats",
    "p_one_sided",
    "p_two_sided",
    "n_paired",
    "p_min_one_sided",
    "p_min_two_sided",
    "ci_low",
    "ci_high",
]
#: fewest paired repeats for which a p-value is reported (with 1 pair no test is possible)
MIN_PAIRED_REPEATS = 2
#: bootstrap of the mean AUC over repeats: confidence level, resamples, seed
CI_LEVEL = 0.95
CI_RESAMPLES = 9999
CI_SEED = 0

_REPEAT_RE = re.compile(r"^repeat_(\d+)$")
_FOLD_RE = re.compile(r"^fold_(\d+)\.csv$")


def read_fold_predictions(path: str | Path) -> pd.DataFrame:
    """Read one ``preds,labels`` CSV, checking its columns and that labels are 0/1.

    Raises:
        InputError: unreadable file, missing column, labels other than 0/1, or NaN predictions.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except Exception as exc:  # empty or malformed CSV
        raise InputError(f"{path}: not a readable preds,labels CSV ({exc.__class__.__name__}: {exc})") from exc
    missing = [c for c in ("preds", "labels") if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; expected header 'preds,labels'")
    labels = pd.to_numeric(frame["labels"], errors="coerce")
    if labels.isna().any() or not set(labels.unique()) <= {0, 1}:
        raise InputError(f"{path}: column 'labels' must hold only 0 and 1")
    preds = pd.to_numeric(frame["preds"], errors="coerce")
    if preds.isna().any():
        raise InputError(f"{path}: column 'preds' has missing or non-numeric values")
    return pd.DataFrame({"preds": preds.astype(float), "labels": labels.astype(int)})


def fold_auc(preds: np.ndarray, labels: np.ndarray, *, source: str = "fold") -> float:
    """ROC AUC of one fold (scikit-learn).

    Raises:
        InputError: the fold holds only one class, so its AUC is undefined.
    """
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise InputError(f"{source}: all labels are {labels[0] if len(labels) else 'absent'}; AUC needs both classes")
    return float(roc_auc_score(labels, np.asarray(preds, dtype=float)))


def scan_prediction_tree(tree: str | Path) -> pd.DataFrame:
    """Every prediction file of a tree: columns ``dataset, regime, method, repeat, fold, path``.

    Raises:
        InputError: ``tree`` is not a folder or holds no ``<d>/<r>/<m>/repeat_NN/fold_K.csv`` file.
    """
    tree = Path(tree)
    if not tree.is_dir():
        raise InputError(f"{tree}: prediction tree not found (expected a folder)")
    rows = []
    for path in sorted(tree.glob("*/*/*/repeat_*/fold_*.csv")):
        repeat = _REPEAT_RE.match(path.parent.name)
        fold = _FOLD_RE.match(path.name)
        if repeat is None or fold is None:
            continue
        method_dir = path.parent.parent
        rows.append(
            {
                "dataset": method_dir.parent.parent.name,
                "regime": method_dir.parent.name,
                "method": method_dir.name,
                "repeat": int(repeat.group(1)),
                "fold": int(fold.group(1)),
                "path": str(path),
            }
        )
    if not rows:
        raise InputError(f"{tree}: no prediction files laid out as <dataset>/<regime>/<method>/repeat_NN/fold_K.csv")
    return pd.DataFrame(rows)


def fold_auc_table(files: pd.DataFrame) -> pd.DataFrame:
    """Add an ``auc`` column (fold AUC) and ``n`` (test images) to :func:`scan_prediction_tree`'s table."""
    aucs, sizes = [], []
    for path in files["path"]:
        frame = read_fold_predictions(path)
        aucs.append(fold_auc(frame["preds"].to_numpy(), frame["labels"].to_numpy(), source=str(path)))
        sizes.append(len(frame))
    out = files.copy()
    out["auc"] = aucs
    out["n"] = sizes
    return out


def repeat_summaries(folds: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Mean fold AUC per repeat, keeping only complete repeats.

    A repeat is complete when it has as many folds as the most complete repeat of the same
    (dataset, regime, method). Incomplete repeats (an interrupted run) are left out and named in
    the returned notes.

    Returns:
        (frame with columns ``dataset, regime, method, repeat, auc, n_folds``, notes)
    """
    keys = ["dataset", "regime", "method", "repeat"]
    summary = folds.groupby(keys, sort=True).agg(auc=("auc", "mean"), n_folds=("fold", "nunique")).reset_index()
    expected = summary.groupby(["dataset", "regime", "method"])["n_folds"].transform("max")
    incomplete = summary[summary["n_folds"] < expected]
    notes = [
        f"{r.dataset}/{r.regime}/{r.method}/repeat_{r.repeat:02d}: only {r.n_folds} of {e} folds; left out"
        for r, e in zip(incomplete.itertuples(), expected[incomplete.index])
    ]
    return summary[summary["n_folds"] == expected].reset_index(drop=True), notes


def paired_wilcoxon(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """Exact Wilcoxon signed-rank p-values of paired samples: (one-sided "reference greater", two-sided).

    Returns NaN for both when every paired difference is zero (the test is undefined).

    Raises:
        InputError: the samples differ in length or are empty.
    """
    from scipy.stats import wilcoxon

    reference = np.asarray(reference, dtype=float)
    other = np.asarray(other, dtype=float)
    if reference.shape != other.shape or reference.size == 0:
        raise InputError(
            f"paired Wilcoxon needs two samples of equal, non-zero length (got {reference.size} and {other.size})"
        )
    if np.all(reference - other == 0):
        return math.nan, math.nan
    one = wilcoxon(reference, other, alternative="greater", method="exact").pvalue
    two = wilcoxon(reference, other, alternative="two-sided", method="exact").pvalue
    return float(one), float(two)


def smallest_attainable_p(n_pairs: int) -> tuple[float, float]:
    """Smallest (one-sided, two-sided) p-value of the exact signed-rank test with ``n_pairs`` pairs:
    all ``2**n`` sign patterns are equally likely under the null, the most extreme has ``1/2**n``."""
    if n_pairs < 1:
        return math.nan, math.nan
    one = 0.5**n_pairs
    return one, min(1.0, 2 * one)


def bootstrap_mean_ci(
    values: np.ndarray, *, level: float = CI_LEVEL, n_resamples: int = CI_RESAMPLES, seed: int = CI_SEED
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (:func:`scipy.stats.bootstrap`).

    Over repeat summaries it shows how much the mean AUC moves between training repeats on the
    same fixed partition; it does not cover the sampling of the test images. NaN for fewer than 2 values.
    """
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return math.nan, math.nan
    if np.all(values == values[0]):
        return float(values[0]), float(values[0])
    result = bootstrap(
        (values,),
        np.mean,
        confidence_level=level,
        n_resamples=n_resamples,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def method_order(methods: list[str], reference: str, preferred: list[str] | None = None) -> list[str]:
    """Table order: the reference first, then ``preferred`` (e.g. the run's inits), then the rest
    sorted by name with ``imagenet`` and ``scratch`` last (the paper's order for its five methods)."""
    baselines = {"imagenet": 1, "scratch": 2}
    ordered = [reference] if reference in methods else []
    for name in preferred or []:
        if name in methods and name not in ordered:
            ordered.append(name)
    rest = sorted((m for m in methods if m not in ordered), key=lambda m: (baselines.get(m, 0), m))
    return ordered + rest


def _paired_test(
    ref: pd.Series, values: pd.Series, where: str, reference: str, notes: list[str]
) -> tuple[int, float, float]:
    """(pairs, one-sided p, two-sided p) of ``values`` against the reference, paired by repeat
    number; p is NaN (with a note) when fewer than :data:`MIN_PAIRED_REPEATS` pairs allow no test."""
    common = ref.index.intersection(values.index)
    if len(common) < len(values) or len(common) < len(ref):
        notes.append(f"{where}: paired on the {len(common)} repeat(s) it shares with {reference}")
    if len(common) < MIN_PAIRED_REPEATS:
        plural = "" if len(common) == 1 else "s"
        notes.append(f"{where}: p n/a: {len(common)} paired repeat{plural} with {reference} (a test needs 2 or more)")
        return len(common), math.nan, math.nan
    p_one, p_two = paired_wilcoxon(ref[common].to_numpy(), values[common].to_numpy())
    if math.isnan(p_one):
        notes.append(f"{where}: identical to {reference} in every repeat; no p-value")
    return len(common), p_one, p_two


@dataclass
class ProtocolTables:
    """Everything the report shows: the table rows, per-repeat and per-fold AUCs, and notes."""

    rows: pd.DataFrame  # TABLE_COLUMNS
    repeats: pd.DataFrame  # dataset, regime, method, repeat, auc, n_folds
    folds: pd.DataFrame  # dataset, regime, method, repeat, fold, path, auc, n
    reference: str
    notes: list[str] = field(default_factory=list)


def compute_tables(tree: str | Path, *, reference: str, order: list[str] | None = None) -> ProtocolTables:
    """Tables 4/5 statistics of a prediction tree against a reference method.

    Args:
        tree: folder holding ``<dataset>/<regime>/<method>/repeat_NN/fold_K.csv``.
        reference: the method every other one is compared with (e.g. ``modan-mulsupcon``).
        order: preferred method order after the reference (default: by name, imagenet/scratch last).

    Raises:
        InputError: no prediction file, a malformed file, or a (dataset, regime) without the reference.
    """
    folds = fold_auc_table(scan_prediction_tree(tree))
    repeats, notes = repeat_summaries(folds)
    rows = []
    for (dataset, regime), block in repeats.groupby(["dataset", "regime"], sort=True):
        methods = list(block["method"].unique())
        if reference not in methods:
            raise InputError(
                f"{tree}: reference method {reference!r} has no complete repeat in {dataset}/{regime}; "
                f"methods there: {', '.join(sorted(methods))}"
            )
        ref = block[block["method"] == reference].set_index("repeat")["auc"]
        for method in method_order(methods, reference, order):
            values = block[block["method"] == method].set_index("repeat")["auc"]
            p_one = p_two = math.nan
            n_paired = 0
            if method != reference:
                n_paired, p_one, p_two = _paired_test(ref, values, f"{dataset}/{regime}/{method}", reference, notes)
            ci_low, ci_high = bootstrap_mean_ci(values.to_numpy())
            p_min_one, p_min_two = (
                smallest_attainable_p(n_paired) if n_paired >= MIN_PAIRED_REPEATS else (math.nan, math.nan)
            )
            rows.append(
                {
                    "dataset": dataset,
                    "regime": regime,
                    "method": method,
                    "mean_auc": float(values.mean()),
                    "std_auc": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                    "n_repeats": int(len(values)),
                    "p_one_sided": p_one,
                    "p_two_sided": p_two,
                    "n_paired": n_paired,
                    "p_min_one_sided": p_min_one,
                    "p_min_two_sided": p_min_two,
                    "ci_low": ci_low,
                    "ci_high": ci_high,
                }
            )
    return ProtocolTables(
        rows=pd.DataFrame(rows, columns=TABLE_COLUMNS), repeats=repeats, folds=folds, reference=reference, notes=notes
    )


# ------------------------------------------------------------------ multiple comparisons


def holm_adjust(pvalues) -> np.ndarray:  # noqa: ANN001
    """Holm's step-down adjusted p-values (Holm 1979), NaN entries left out and kept NaN.

    With the m finite p-values sorted ascending, ``p(1) <= ... <= p(m)``, the adjusted value of
    ``p(i)`` is ``max_{j <= i} min(1, (m - j + 1) p(j))``: rejecting where the adjusted value is at
    most alpha controls the family-wise error rate at alpha. Returned in the input order.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    m = len(finite)
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])  # (m - j + 1) p(j), j = 1..m
    out[order] = np.maximum.accumulate(scaled)
    return out


# ------------------------------------------------------------------ pretraining-seed statistics

#: a method folder of one pretraining run: ``<method>.ps<seed>`` (e.g. ``modan-mulsupcon.ps2``)
PRETRAIN_SEED_RE = re.compile(r"^(?P<method>.+)\.ps(?P<seed>\d+)$")
#: columns of :func:`pretrain_seed_table`
SEED_COLUMNS = [
    "dataset",
    "regime",
    "method",
    "n_pretrain_runs",
    "mean_auc",
    "sd_over_pretraining",
    "min_run_auc",
    "max_run_auc",
    "test",
    "p_one_sided",
    "p_two_sided",
    "p_one_sided_holm",
    "p_two_sided_holm",
]


def split_pretrain_seed(method: str) -> tuple[str, int | None]:
    """``"modan.ps2" -> ("modan", 2)``; a method without the suffix (scratch, imagenet) -> ``(method, None)``."""
    match = PRETRAIN_SEED_RE.match(method)
    return (match["method"], int(match["seed"])) if match else (method, None)


def pretrain_run_aucs(repeats: pd.DataFrame) -> pd.DataFrame:
    """One row per pretraining run: the mean over its downstream repeats of the repeat AUCs.

    Args:
        repeats: :func:`repeat_summaries`' frame (``dataset, regime, method, repeat, auc``).

    Returns:
        ``dataset, regime, method, pretrain_seed, auc, n_repeats`` (``pretrain_seed`` -1 for a
        method without pretraining runs: its one "run" is the initialisation itself).
    """
    frame = repeats.copy()
    split = frame["method"].map(split_pretrain_seed)
    frame["method"] = [m for m, _ in split]
    frame["pretrain_seed"] = [-1 if s is None else s for _, s in split]
    keys = ["dataset", "regime", "method", "pretrain_seed"]
    return frame.groupby(keys, sort=True).agg(auc=("auc", "mean"), n_repeats=("repeat", "nunique")).reset_index()


def _run_test(ref: np.ndarray, other: np.ndarray) -> tuple[str, float, float]:
    """Test of the reference's pretraining runs against another method's: Welch's t-test when both
    have >= 2 runs; a one-sample t-test of the reference's runs against the other's single value
    (an initialisation without pretraining, e.g. scratch); nothing otherwise."""
    from scipy.stats import ttest_1samp, ttest_ind

    if len(ref) >= 2 and len(other) >= 2:
        one = ttest_ind(ref, other, equal_var=False, alternative="greater").pvalue
        two = ttest_ind(ref, other, equal_var=False).pvalue
        return "welch", float(one), float(two)
    if len(ref) >= 2 and len(other) == 1:
        one = ttest_1samp(ref, other[0], alternative="greater").pvalue
        two = ttest_1samp(ref, other[0]).pvalue
        return "one-sample", float(one), float(two)
    return "none", math.nan, math.nan


def pretrain_seed_table(repeats: pd.DataFrame, *, reference: str) -> pd.DataFrame:
    """Mean and spread over pretraining runs, and tests whose unit is the pretraining run.

    Each pretraining run contributes one number per (dataset, regime): its AUC averaged over the
    downstream repeats (:func:`pretrain_run_aucs`), so the variance between pretraining runs --
    which the repeat-level Wilcoxon test leaves out -- is what the tests see. The reference
    (``method`` without the ``.ps<seed>`` suffix) is compared with every other method (see
    :func:`_run_test`); Holm's adjustment (:func:`holm_adjust`) runs over every comparison of the
    table (all datasets, regimes and methods: one family), beside the raw p-values.

    Raises:
        InputError: the reference has no pretraining run in some (dataset, regime).
    """
    runs = pretrain_run_aucs(repeats)
    rows = []
    for (dataset, regime), block in runs.groupby(["dataset", "regime"], sort=True):
        ref = block[block["method"] == reference]["auc"].to_numpy()
        if len(ref) == 0:
            raise InputError(f"reference {reference!r} has no pretraining run in {dataset}/{regime}")
        for method in method_order(list(block["method"].unique()), reference):
            values = block[block["method"] == method]["auc"].to_numpy()
            test, p_one, p_two = ("reference", math.nan, math.nan) if method == reference else _run_test(ref, values)
            rows.append(
                {
                    "dataset": dataset,
                    "regime": regime,
                    "method": method,
                    "n_pretrain_runs": len(values),
                    "mean_auc": float(values.mean()),
                    "sd_over_pretraining": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                    "min_run_auc": float(values.min()),
                    "max_run_auc": float(values.max()),
                    "test": test,
                    "p_one_sided": p_one,
                    "p_two_sided": p_two,
                }
            )
    table = pd.DataFrame(rows)
    table["p_one_sided_holm"] = holm_adjust(table["p_one_sided"])
    table["p_two_sided_holm"] = holm_adjust(table["p_two_sided"])
    return table[SEED_COLUMNS]
