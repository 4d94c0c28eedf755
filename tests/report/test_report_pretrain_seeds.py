"""Holm's adjustment and the statistics over pretraining runs (unit = the pretraining run)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_1samp, ttest_ind

from modan_pacs.errors import InputError
from modan_pacs.report.stats import holm_adjust, pretrain_run_aucs, pretrain_seed_table, split_pretrain_seed


def _holm_rejects(p: np.ndarray, alpha: float) -> set[int]:
    """Holm's procedure as defined (Holm 1979): step down through the sorted p-values, rejecting
    H(j) while p(j) <= alpha / (m - j + 1); stop at the first that is not."""
    order = np.argsort(p, kind="stable")
    m = len(p)
    rejected = set()
    for j, i in enumerate(order, start=1):
        if p[i] > alpha / (m - j + 1):
            break
        rejected.add(int(i))
    return rejected


def test_holm_hand_worked_example():
    # sorted: 0.005, 0.01, 0.03, 0.04 (m = 4) -> 4*0.005 = 0.02, 3*0.01 = 0.03, 2*0.03 = 0.06, max(0.06, 1*0.04) = 0.06
    got = holm_adjust([0.01, 0.04, 0.03, 0.005, math.nan])
    np.testing.assert_allclose(got[:4], [0.03, 0.06, 0.06, 0.02])
    assert math.isnan(got[4])
    assert holm_adjust([0.6, 0.7]).tolist() == [1.0, 1.0]  # capped at 1
    assert np.isnan(holm_adjust([math.nan])).all()


def test_holm_matches_the_step_down_procedure():
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.random(rng.integers(1, 9)) ** 3
        adjusted = holm_adjust(p)
        assert np.all(adjusted >= p - 1e-15)
        for alpha in (0.01, 0.05, 0.1, 0.25):
            assert set(np.flatnonzero(adjusted <= alpha)) == _holm_rejects(p, alpha)


def _repeats(run_means: dict[str, list[float]], n_repeats: int, noise: float = 0.01) -> pd.DataFrame:
    """Repeat AUCs whose mean per pretraining run is exactly the given value."""
    rng = np.random.default_rng(1)
    rows = []
    for method, means in run_means.items():
        for seed, mean in enumerate(means):
            deltas = rng.normal(0, noise, n_repeats)
            deltas -= deltas.mean()
            name = f"{method}.ps{seed}" if method != "scratch" else method
            rows += [
                {
                    "dataset": "breast",
                    "regime": "finetune",
                    "method": name,
                    "repeat": r + 1,
                    "auc": mean + d,
                    "n_folds": 5,
                }
                for r, d in enumerate(deltas)
            ]
    return pd.DataFrame(rows)


def test_pretrain_seed_table_unit_is_the_pretraining_run():
    means = {"modan": [0.80, 0.84, 0.82], "simclr": [0.78, 0.77, 0.83], "scratch": [0.70]}
    few, many = _repeats(means, 3), _repeats(means, 10, noise=0.05)
    table = pretrain_seed_table(few, reference="modan").set_index("method")
    assert list(table.index) == ["modan", "simclr", "scratch"]
    assert table.loc["modan", "n_pretrain_runs"] == 3
    assert table.loc["modan", "mean_auc"] == pytest.approx(0.82)
    assert table.loc["modan", "sd_over_pretraining"] == pytest.approx(np.std([0.80, 0.84, 0.82], ddof=1))
    assert (table.loc["simclr", "min_run_auc"], table.loc["simclr", "max_run_auc"]) == pytest.approx((0.77, 0.83))
    welch = ttest_ind([0.80, 0.84, 0.82], [0.78, 0.77, 0.83], equal_var=False)
    assert table.loc["simclr", "test"] == "welch" and table.loc["simclr", "p_two_sided"] == pytest.approx(welch.pvalue)
    one = ttest_1samp([0.80, 0.84, 0.82], 0.70, alternative="greater")
    assert table.loc["scratch", "test"] == "one-sample" and table.loc["scratch", "p_one_sided"] == pytest.approx(
        one.pvalue
    )
    np.testing.assert_allclose(table["p_two_sided_holm"].to_numpy(), holm_adjust(table["p_two_sided"].to_numpy()))
    # more (and noisier) downstream repeats with the same run means: the same p-values
    again = pretrain_seed_table(many, reference="modan").set_index("method")
    np.testing.assert_allclose(again["p_two_sided"].to_numpy(), table["p_two_sided"].to_numpy(), equal_nan=True)
    assert pretrain_run_aucs(few)["pretrain_seed"].tolist() == [0, 1, 2, -1, 0, 1, 2]
    with pytest.raises(InputError, match="reference 'supcon'"):
        pretrain_seed_table(few, reference="supcon")


def test_split_pretrain_seed():
    assert split_pretrain_seed("modan-mulsupcon.ps12") == ("modan-mulsupcon", 12)
    assert split_pretrain_seed("scratch") == ("scratch", None)
    assert split_pretrain_seed("v1.5") == ("v1.5", None)
