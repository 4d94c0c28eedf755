"""Statistics of the report against independent implementations, and the paper's Tables 4 and 5."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modan_pacs.errors import InputError
from modan_pacs.report import build_report, compute_tables, fold_auc, paired_wilcoxon
from modan_pacs.report.stats import TABLE_COLUMNS


def slow_auc(preds: np.ndarray, labels: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + 0.5 P(tie), over every pair."""
    pos, neg = preds[labels == 1], preds[labels == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def slow_exact_wilcoxon(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Exact signed-rank p-values by enumerating every sign assignment (no ties, no zeros)."""
    d = a - b
    ranks = pd.Series(np.abs(d)).rank().to_numpy()
    observed = ranks[d > 0].sum()
    stats = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=len(d))]
    stats = np.array(stats)
    greater = float(np.mean(stats >= observed - 1e-12))
    less = float(np.mean(stats <= observed + 1e-12))
    return greater, min(1.0, 2 * min(greater, less))


def test_fold_auc_matches_pair_count():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    preds = np.round(rng.random(60) + 0.3 * labels, 2)  # rounding makes ties
    assert fold_auc(preds, labels) == pytest.approx(slow_auc(preds, labels), abs=1e-12)


def test_fold_auc_single_class_is_an_error():
    with pytest.raises(InputError, match="both classes"):
        fold_auc(np.array([0.1, 0.2]), np.array([1, 1]), source="x.csv")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paired_wilcoxon_matches_enumeration(seed):
    rng = np.random.default_rng(seed)
    a = rng.random(9)
    b = a - rng.normal(0.05, 0.1, 9)
    one, two = paired_wilcoxon(a, b)
    slow_one, slow_two = slow_exact_wilcoxon(a, b)
    assert one == pytest.approx(slow_one, abs=1e-12)
    assert two == pytest.approx(slow_two, abs=1e-12)


def test_paired_wilcoxon_identical_samples_give_nan_and_bad_lengths_raise():
    assert all(math.isnan(p) for p in paired_wilcoxon(np.ones(5), np.ones(5)))
    with pytest.raises(InputError):
        paired_wilcoxon(np.ones(3), np.ones(4))


def write_tree(root: Path, aucs_by_method: dict[str, list[list[float]]], *, dataset="toy", regime="finetune", seed=0):
    """Prediction files whose fold AUC is known: scores chosen so that a fraction of pairs is won."""
    rng = np.random.default_rng(seed)
    for method, repeats in aucs_by_method.items():
        for r, folds in enumerate(repeats, start=1):
            for k, target in enumerate(folds, start=1):
                labels = np.array([0] * 10 + [1] * 10)
                preds = np.concatenate([rng.random(10), rng.random(10) + target])
                path = root / dataset / regime / method / f"repeat_{r:02d}" / f"fold_{k}.csv"
                path.parent.mkdir(parents=True, exist_ok=True)
                pd.DataFrame({"preds": preds, "labels": labels}).to_csv(path, index=False)
    return root


def test_compute_tables_against_manual_pipeline(tmp_path):
    tree = write_tree(tmp_path, {m: [[s] * 3 for s in np.linspace(0, 0.5, 6)] for m in ("ref", "base")})
    # shift the baseline so its scores are worse
    for path in (tmp_path / "toy" / "finetune" / "base").rglob("*.csv"):
        frame = pd.read_csv(path)
        frame.loc[frame.labels == 1, "preds"] -= 0.2
        frame.to_csv(path, index=False)
    tables = compute_tables(tree, reference="ref")
    manual = {}
    for method in ("ref", "base"):
        reps = []
        for r in range(1, 7):
            files = sorted((tmp_path / "toy" / "finetune" / method / f"repeat_{r:02d}").glob("fold_*.csv"))
            reps.append(
                np.mean(
                    [slow_auc(*(lambda f: (f.preds.to_numpy(), f.labels.to_numpy()))(pd.read_csv(p))) for p in files]
                )
            )
        manual[method] = np.array(reps)
    rows = tables.rows.set_index("method")
    for method in ("ref", "base"):
        assert rows.loc[method, "mean_auc"] == pytest.approx(manual[method].mean(), abs=1e-12)
        assert rows.loc[method, "std_auc"] == pytest.approx(manual[method].std(ddof=1), abs=1e-12)
        assert rows.loc[method, "n_repeats"] == 6
    one, two = slow_exact_wilcoxon(manual["ref"], manual["base"])
    assert rows.loc["base", "p_one_sided"] == pytest.approx(one)
    assert rows.loc["base", "p_two_sided"] == pytest.approx(two)
    assert math.isnan(rows.loc["ref", "p_one_sided"])


def test_incomplete_repeat_left_out_with_note_and_missing_reference(tmp_path):
    tree = write_tree(tmp_path, {"ref": [[0.3] * 3] * 3, "other": [[0.2] * 3] * 3})
    (tmp_path / "toy" / "finetune" / "other" / "repeat_03" / "fold_3.csv").unlink()
    tables = compute_tables(tree, reference="ref")
    assert tables.rows.set_index("method").loc["other", "n_repeats"] == 2
    assert any("repeat_03" in note for note in tables.notes)
    with pytest.raises(InputError, match="reference method 'nope'"):
        compute_tables(tree, reference="nope")
    with pytest.raises(InputError, match="no prediction files"):
        compute_tables(tmp_path / "toy", reference="ref")


def test_build_report_writes_every_table_and_figure(tmp_path):
    tree = write_tree(tmp_path / "tree", {"ref": [[0.4] * 2] * 3, "scratch": [[0.1] * 2] * 3})
    write_tree(tmp_path / "tree", {"ref": [[0.4] * 2] * 3, "scratch": [[0.1] * 2] * 3}, regime="linear", seed=1)
    out = build_report(tree, reference="ref", out_dir=tmp_path / "rep")
    csv = pd.read_csv(out / "tables.csv", keep_default_na=False)
    assert list(csv.columns) == TABLE_COLUMNS
    ref_rows = csv[csv.method == "ref"]
    assert (ref_rows.p_one_sided == "").all() and (ref_rows.p_two_sided == "").all()
    assert (csv[csv.method == "scratch"].p_one_sided != "").all()
    for name in ("tables.md", "tables.json", "repeat_auc.png", "roc_toy_finetune.png", "roc_toy_linear.png"):
        assert (out / name).stat().st_size > 0, name
    md = (out / "tables.md").read_text()
    assert "## Fine-tuning (Table 4)" in md and "## Linear probing (Table 5)" in md


def test_report_cli_exit_codes(tmp_path):
    from modan_pacs.cli.main import main

    tree = write_tree(tmp_path / "tree", {"ref": [[0.4] * 2] * 2, "b": [[0.1] * 2] * 2})
    assert main(["report", str(tree), "--reference", "ref", "--out", str(tmp_path / "r"), "--no-figures"]) == 0
    assert (tmp_path / "r" / "tables.csv").is_file()
    assert main(["report", str(tmp_path / "absent"), "--reference", "ref", "--out", str(tmp_path / "r2")]) != 0


# (dataset, regime, method) -> (mean AUC, one-sided p, two-sided p), from shared/reference/README.md
PAPER = {
    ("acl", "finetune"): {
        "modan-mulsupcon": (0.9635,),
        "minirin-simclr": (0.9513, 0.0010, 0.0020),
        "minirin165": (0.6300, 0.0010, 0.0020),
        "imagenet": (0.8764, 0.0010, 0.0020),
        "scratch": (0.9074, 0.0010, 0.0020),
    },
    ("breast", "finetune"): {
        "modan-mulsupcon": (0.9261,),
        "minirin-simclr": (0.9404, 1.0000, 0.0020),
        "minirin165": (0.6660, 0.0010, 0.0020),
        "imagenet": (0.8838, 0.0010, 0.0020),
        "scratch": (0.8844, 0.0010, 0.0020),
    },
    ("thyroid", "finetune"): {
        "modan-mulsupcon": (0.7634,),
        "minirin-simclr": (0.6851, 0.0010, 0.0020),
        "minirin165": (0.5577, 0.0010, 0.0020),
        "imagenet": (0.6955, 0.0010, 0.0020),
        "scratch": (0.6768, 0.0010, 0.0020),
    },
    ("acl", "linear"): {
        "modan-mulsupcon": (0.6805,),
        "minirin-simclr": (0.8441, 1.0000, 0.0020),
        "minirin165": (0.7961, 1.0000, 0.0020),
        "imagenet": (0.8243, 1.0000, 0.0020),
        "scratch": (0.6970, 0.9990, 0.0039),
    },
    ("breast", "linear"): {
        "modan-mulsupcon": (0.7165,),
        "minirin-simclr": (0.8050, 1.0000, 0.0020),
        "minirin165": (0.7234, 0.9863, 0.0371),
        "imagenet": (0.7805, 1.0000, 0.0020),
        "scratch": (0.7244, 0.9990, 0.0039),
    },
    ("thyroid", "linear"): {
        "modan-mulsupcon": (0.6389,),
        "minirin-simclr": (0.6567, 0.9346, 0.1602),
        "minirin165": (0.6299, 0.1875, 0.3750),
        "imagenet": (0.6092, 0.0801, 0.1602),
        "scratch": (0.5566, 0.0010, 0.0020),
    },
}


@pytest.mark.data
def test_paper_tables_4_and_5_from_reference_predictions(reference_predictions, tmp_path):
    out = build_report(reference_predictions, reference="modan-mulsupcon", out_dir=tmp_path, figures=False)
    rows = pd.read_csv(out / "tables.csv")
    assert len(rows) == 30
    for (dataset, regime), methods in PAPER.items():
        block = rows[(rows.dataset == dataset) & (rows.regime == regime)].set_index("method")
        assert list(block.index) == list(methods)  # the paper's row order
        for method, expected in methods.items():
            row = block.loc[method]
            assert round(row.mean_auc, 4) == pytest.approx(expected[0], abs=1e-9), (dataset, regime, method)
            assert row.n_repeats == 10
            if len(expected) == 1:
                assert math.isnan(row.p_one_sided) and math.isnan(row.p_two_sided)
            else:
                assert round(row.p_one_sided, 4) == pytest.approx(expected[1], abs=1e-9), (dataset, regime, method)
                assert round(row.p_two_sided, 4) == pytest.approx(expected[2], abs=1e-9), (dataset, regime, method)


def test_repeat_auc_figure_has_a_panel_per_dataset_and_regime_with_results(tmp_path):
    """Two datasets, fine-tuning for both, linear probing for one: three panels, no empty one."""
    from modan_pacs.report.figures import plot_repeat_aucs, repeat_panels

    tree = tmp_path / "tree"
    write_tree(tree, {"ref": [[0.4] * 2] * 2, "scratch": [[0.1] * 2] * 2}, dataset="a")
    write_tree(tree, {"ref": [[0.4] * 2] * 2, "scratch": [[0.1] * 2] * 2}, dataset="b", seed=1)
    write_tree(tree, {"ref": [[0.4] * 2] * 2, "scratch": [[0.1] * 2] * 2}, dataset="a", regime="linear", seed=2)
    tables = compute_tables(tree, reference="ref")
    assert repeat_panels(tables) == [("finetune", "a"), ("finetune", "b"), ("linear", "a")]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    captured = {}
    real_savefig = plt.Figure.savefig

    def spy(fig, *args, **kwargs):
        captured["titles"] = [ax.get_title() for ax in fig.axes if ax.axison]
        return real_savefig(fig, *args, **kwargs)

    plt.Figure.savefig = spy
    try:
        path = plot_repeat_aucs(tables, tmp_path)
    finally:
        plt.Figure.savefig = real_savefig
    assert path.stat().st_size > 0
    assert captured["titles"] == ["a / finetune", "b / finetune", "a / linear"]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6])
def test_smallest_attainable_p_matches_enumeration(n):
    from modan_pacs.report.stats import smallest_attainable_p

    a = np.arange(1.0, n + 1)
    one, two = slow_exact_wilcoxon(a + np.linspace(0.1, 0.5, n), a)  # every difference positive: the extreme
    assert smallest_attainable_p(n) == (pytest.approx(one, abs=1e-12), pytest.approx(two, abs=1e-12))


def test_one_repeat_gives_no_p_value_and_says_why(tmp_path):
    from modan_pacs.report.tables import render_markdown

    tree = write_tree(tmp_path, {"ref": [[0.4] * 2], "other": [[0.1] * 2]})
    tables = compute_tables(tree, reference="ref")
    row = tables.rows.set_index("method").loc["other"]
    assert row.n_paired == 1 and math.isnan(row.p_one_sided) and math.isnan(row.p_two_sided)
    assert math.isnan(row.p_min_one_sided) and math.isnan(row.ci_low)
    md = render_markdown(tables)
    assert "(p n/a: 1 repeat)" in md and "1.0000" not in md and "0.5000" not in md
    assert any("p n/a: 1 paired repeat" in note for note in tables.notes)


def test_few_repeats_note_the_smallest_attainable_p(tmp_path):
    from modan_pacs.report.tables import render_markdown

    tree = write_tree(tmp_path, {"ref": [[0.4] * 2] * 3, "other": [[0.1] * 2] * 3})
    tables = compute_tables(tree, reference="ref")
    row = tables.rows.set_index("method").loc["other"]
    assert (row.n_paired, row.p_min_one_sided, row.p_min_two_sided) == (3, 0.125, 0.25)
    assert "smallest attainable p is 0.125 one-sided, 0.25 two-sided (cannot reach 0.05)" in render_markdown(tables)


def test_bootstrap_interval_of_the_mean_auc():
    from modan_pacs.report.stats import bootstrap_mean_ci

    # two values: resampled means are a, (a+b)/2, b with probabilities 1/4, 1/2, 1/4
    low, high = bootstrap_mean_ci(np.array([0.6, 0.8]))
    assert (low, high) == (pytest.approx(0.6), pytest.approx(0.8))
    # an independent percentile bootstrap with numpy
    values = np.random.default_rng(3).normal(0.75, 0.03, 10)
    rng = np.random.default_rng(99)
    means = values[rng.integers(0, 10, size=(200_000, 10))].mean(axis=1)
    expected = np.percentile(means, [2.5, 97.5])
    assert np.allclose(bootstrap_mean_ci(values), expected, atol=2e-3)
    assert all(math.isnan(v) for v in bootstrap_mean_ci(np.array([0.7])))
    assert bootstrap_mean_ci(np.array([0.7, 0.7, 0.7])) == (0.7, 0.7)


def test_terminal_table_wraps_long_method_names_instead_of_cutting_them(tmp_path):
    import io

    from modan_pacs.cli.commands.report import results_table
    from rich.console import Console

    long = "minirin-simclr-with-a-very-long-name"
    tree = write_tree(tmp_path, {"ref": [[0.4] * 2] * 2, long: [[0.1] * 2] * 2, long + "-2": [[0.1] * 2] * 2})
    rows = compute_tables(tree, reference="ref").rows
    for width in (60, 80):
        buffer = io.StringIO()
        Console(file=buffer, width=width).print(results_table(rows, "ref"))
        text = buffer.getvalue()
        assert "…" not in text and "..." not in text
        method_column = "".join(line.split("│")[3].strip() for line in text.splitlines() if line.count("│") > 3)
        assert long in method_column and long + "-2" in method_column


@pytest.mark.parametrize("n", [3, 10, 11, 20, 25, 199, 200, 201, 450])
def test_group_styles_stay_distinct_for_any_number_of_labels(n):
    from modan_pacs.report.figures import LINESTYLES, group_styles

    styles = group_styles(n)
    assert len(styles) == n and len({(tuple(c), m) for c, m in styles}) == n
    if n > 200:  # past tab20 x markers: every colour itself differs
        assert len({tuple(c) for c, _ in styles}) == n
    lines = group_styles(n, LINESTYLES)
    assert len({(tuple(c), m) for c, m in lines}) == n


def test_missing_values_are_null_in_json_unknown_in_groups_and_no_p_value(tmp_path):
    import json

    from modan_pacs.models.features import cache_groups
    from modan_pacs.report.tables import p_value_text

    tree = write_tree(tmp_path / "tree", {"ref": [[0.4] * 2] * 3, "scratch": [[0.1] * 2] * 3})
    out = build_report(tree, reference="ref", out_dir=tmp_path / "rep", figures=False)
    rows = json.loads((out / "tables.json").read_text())["rows"]
    assert [row["p_one_sided"] for row in rows if row["method"] == "ref"] == [None]  # NaN in the frame
    manifest = pd.DataFrame(
        {"modality_label": ["CT", None, np.nan, "MR"], "anatomy_label": ["chest", "", "head", pd.NA]}
    )
    assert cache_groups(manifest) == ["CT/chest", "unknown/unknown", "unknown/head", "MR/unknown"]
    row = {"n_paired": 3, "p_one_sided": float("nan"), "p_two_sided": float("nan")}
    assert p_value_text(row) == "p n/a: identical repeats"
