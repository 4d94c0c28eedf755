"""Near-duplicate grouping: generated near-copies, real BUSI pairs, and the benchmark dry run."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from modan_pacs.bench.config import load_benchmark_config
from modan_pacs.bench.datasets import load_dataset
from modan_pacs.bench.near_duplicates import DEFAULT_THRESHOLD, correlated_pairs, thumbnail


def _scene(seed: int, size: int = 256) -> np.ndarray:
    """A smooth random 'ultrasound-like' scene: blurred noise plus a dark blob, uint8."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((12, 12))
    image = np.asarray(
        Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC),
        dtype=np.float64,
    )
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.integers(60, size - 60, 2)
    image -= 90 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 24.0**2))
    return np.clip(image, 0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("L"))


def _near_copies(image: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """What a re-export or the next frame of a sweep does to an image."""
    rng = np.random.default_rng(seed)
    f = image.astype(np.float64)
    marked = Image.fromarray(image.copy())
    ImageDraw.Draw(marked).text((5, 5), "R BREAST 3cm", fill=255)
    ImageDraw.Draw(marked).line((80, 120, 140, 120), fill=255)
    return {
        "next frame: shifted 2 px": np.pad(image, ((2, 0), (0, 2)), mode="edge")[:-2, 2:],
        "brightness/contrast": np.clip(1.15 * f + 12, 0, 255).astype(np.uint8),
        "noise": np.clip(f + rng.normal(0, 8, f.shape), 0, 255).astype(np.uint8),
        "jpeg q30": _jpeg(image, 30),
        "rescaled": np.asarray(Image.fromarray(image).resize((197, 197)).resize(image.shape[::-1])),
        "calipers and text": np.asarray(marked),
    }


def test_generated_near_copies_are_found_and_other_scenes_are_not():
    scenes = [_scene(s) for s in range(12)]
    for k, scene in enumerate(scenes[:4]):
        base = thumbnail(scene)
        for what, copy in _near_copies(scene, k).items():
            corr = float(base @ thumbnail(copy) / base.size)
            assert corr >= DEFAULT_THRESHOLD, f"{what}: correlation {corr:.3f} below {DEFAULT_THRESHOLD}"
    thumbs = np.stack([thumbnail(s) for s in scenes])
    assert correlated_pairs(thumbs, DEFAULT_THRESHOLD).empty  # 12 different scenes: no pair
    # a constant image correlates with nothing (no division by zero)
    assert not thumbnail(np.full((20, 20), 7, np.uint8)).any()


def test_correlated_pairs_blockwise_equals_dense():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(6, 64))
    rows = np.concatenate([base, base + rng.normal(0, 0.3, base.shape), rng.normal(size=(5, 64))])
    thumbs = np.stack([thumbnail(r.reshape(8, 8), 8) for r in rows])
    dense = thumbs @ thumbs.T / thumbs.shape[1]
    want = [(i, j) for i in range(len(rows)) for j in range(i + 1, len(rows)) if dense[i, j] >= 0.8]
    got = correlated_pairs(thumbs, 0.8, block=4)
    assert list(zip(got["i"], got["j"])) == want and len(want) >= 6
    np.testing.assert_allclose(got["correlation"], [dense[i, j] for i, j in want], rtol=1e-5)


def _write_csv_set(root, copies: bool):
    rows = []
    for s in range(12):
        scene = _scene(100 + s)
        Image.fromarray(scene).save(root / f"s{s}.png")
        rows.append({"path": f"s{s}.png", "label": int(s < 5)})
        if copies:  # a near-copy under another name; s0's copy carries the other label
            Image.fromarray(_near_copies(scene, s)["noise"]).save(root / f"s{s}_copy.png")
            rows.append({"path": f"s{s}_copy.png", "label": int(s < 5) if s else 0})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)


def test_csv_near_copies_share_a_group_discordant_reported_and_dropped(tmp_path):
    _write_csv_set(tmp_path, copies=True)
    data = load_dataset("csv", tmp_path, load_benchmark_config())
    group = dict(zip(data.records["item"], data.records["group"]))
    for s in range(12):
        assert group[f"s{s}.png"] == group[f"s{s}_copy.png"]
    assert data.records["group"].nunique() == 12
    clash = data.duplicates[data.duplicates["label_a"] != data.duplicates["label_b"]]
    assert set(clash["item_a"]) | set(clash["item_b"]) == {"s0.png", "s0_copy.png"}
    assert any("1 label-discordant" in n for n in data.notes)
    dropped = load_dataset("csv", tmp_path, load_benchmark_config(discordant_duplicates="drop"))
    assert len(dropped) == 22 and "s0.png" not in set(dropped.records["item"])
    off = load_dataset("csv", tmp_path, load_benchmark_config(near_duplicates=False))
    assert off.records["group"].nunique() == 24 and off.duplicates.empty


@pytest.mark.data
def test_real_busi_near_duplicate_pairs_and_dry_run_keeps_them_in_one_fold(shared_data, tmp_path):
    """Real BUSI: pairs viewed as the same scene (adjacent frames, re-saved copies with or without
    calipers) join one group; pairs of different scenes do not; ``--dry-run`` writes folds.csv with
    every near-duplicate pair in one fold."""
    from modan_pacs.cli.main import app
    from typer.testing import CliRunner

    busi = shared_data / "busi"
    run = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "benchmark",
            "--dataset",
            "breast",
            "--data-dir",
            str(busi),
            "--init",
            "scratch",
            "--out",
            str(run),
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "near-duplicates merged" in result.output and "trainings planned: 100" in result.output
    assert not any((run / "breast").glob("finetune"))  # nothing trained
    folds = pd.read_csv(run / "folds.csv")
    pairs = pd.read_csv(run / "breast" / "duplicates.csv")
    fold_of = dict(zip(folds["item"], folds["fold"]))
    assert len(pairs) > 200
    assert all(fold_of[a] == fold_of[b] for a, b in zip(pairs["item_a"], pairs["item_b"]))
    plan = json.loads((run / "breast" / "plan.json").read_text())
    assert plan["n_images"] == 780 and plan["class_counts"] == {"0": 570, "1": 210}  # normals as negatives
    assert len(plan["discordant_pairs"]) >= 5
    linked = set(zip(pairs["item_a"], pairs["item_b"]))
    same_scene = [
        ("benign/benign_214_.png", "benign/benign_281_.png"),  # 0.96, adjacent frames
        ("benign/benign_435_.png", "malignant/malignant_145_.png"),  # 0.96, labels disagree
        ("malignant/malignant_3_.png", "malignant/malignant_6_.png"),  # 0.97, one sweep
        ("benign/benign_433_.png", "malignant/malignant_145_.png"),  # byte-identical
    ]
    for a, b in same_scene:
        assert (a, b) in linked, (a, b)
    different = [
        ("benign/benign_385_.png", "benign/benign_396_.png"),
        ("malignant/malignant_25_.png", "malignant/malignant_63_.png"),
    ]
    for a, b in different:  # 0.88 and 0.90: different scenes
        assert (a, b) not in linked and (b, a) not in linked
    group = dict(zip(folds["item"], folds["group"]))
    assert max(pd.Series(group).value_counts()) <= 10  # no chaining into giant groups


def test_a_saved_partition_that_splits_near_duplicates_is_refused(tmp_path):
    from modan_pacs.bench.splits import load_or_make_folds
    from modan_pacs.errors import InputError

    _write_csv_set(tmp_path, copies=True)
    run = tmp_path / "run"
    run.mkdir()
    old = load_dataset("csv", tmp_path, load_benchmark_config(near_duplicates=False))
    load_or_make_folds(run, old, 3, 0)  # the grouping of before: copies may land in other folds
    new = load_dataset("csv", tmp_path, load_benchmark_config())
    with pytest.raises(InputError, match="splits .* group"):
        load_or_make_folds(run, new, 3, 0)


def test_dry_run_on_a_csv_set_plans_without_training(tmp_path, capsys):
    from modan_pacs.cli.main import app
    from typer.testing import CliRunner

    _write_csv_set(tmp_path, copies=True)
    run = tmp_path / "run"
    args = [
        "benchmark",
        "--dataset",
        "csv",
        "--data-dir",
        str(tmp_path / "labels.csv"),
        "--init",
        "scratch",
        "--out",
        str(run),
        "--folds",
        "3",
        "--repeats",
        "2",
        "--dry-run",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "near-duplicates merged: 12 pairs over 24 images" in result.output
    assert "trainings planned: 12" in result.output and "1 label-discordant" in result.output
    plan = json.loads((run / "csv" / "plan.json").read_text())
    assert plan["n_groups"] == 12 and plan["near_duplicate_pairs"] == 12 and plan["trainings_done"] == 0
    assert sum(f["images"] for f in plan["folds"]) == 24
    folds = pd.read_csv(run / "folds.csv")
    fold_of = dict(zip(folds["item"], folds["fold"]))
    assert all(fold_of[f"s{s}.png"] == fold_of[f"s{s}_copy.png"] for s in range(12))
    assert not (run / "csv" / "finetune").exists()
    from modan_pacs.cli.main import main

    assert main([*args[:-1], "--discordant-duplicates", "maybe", "--out", str(tmp_path / "other"), "--dry-run"]) != 0
    err = capsys.readouterr().err
    assert "discordant_duplicates" in err and "Traceback" not in err
