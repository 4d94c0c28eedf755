"""Downstream datasets, grouping and the fixed partition (generated layouts and the real sets)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from modan_pacs.bench.config import load_benchmark_config
from modan_pacs.bench.datasets import load_dataset, load_pixels, merge_groups
from modan_pacs.bench.splits import load_or_make_folds, load_or_make_inner
from modan_pacs.errors import DataNotFoundError, InputError


def _png(path: Path, value: int, size=(20, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, size[::-1], dtype=np.uint8)).save(path)


def make_ddti_original(root: Path, scores: dict[int, str]) -> Path:
    """DDTI's original layout: N.xml with TI-RADS and nodule outlines, N_M.jpg images."""
    root.mkdir(parents=True, exist_ok=True)
    for case, score in scores.items():
        marks = ""
        for image in (1, 2):
            Image.fromarray(np.full((30, 40, 3), case * 5 + image, dtype=np.uint8)).save(root / f"{case}_{image}.jpg")
            svg = json.dumps(
                [{"points": [{"x": 10, "y": 5}, {"x": 25, "y": 20}], "annotation": {}, "regionType": "freehand"}]
            )
            marks += f"<mark><image>{image}</image><svg>{svg}</svg></mark>"
        (root / f"{case}.xml").write_text(
            f"<?xml version='1.0'?><case><number>{case}</number><age>50</age><sex>F</sex>"
            f"<tirads>{score}</tirads>{marks}</case>"
        )
    return root


def test_ddti_original_layout_tirads_cutoff_and_crop(tmp_path):
    root = make_ddti_original(tmp_path / "ddti", {1: "2", 2: "3", 3: "4a", 4: "4b", 5: "5", 6: ""})
    data = load_dataset("thyroid", root, load_benchmark_config())
    assert len(data) == 10  # case 6 has no score
    labels = dict(zip(data.records["item"], data.records["label"]))
    assert labels["3_1.jpg"] == 1 and labels["2_1.jpg"] == 0
    assert any("without a TI-RADS" in n for n in data.notes)
    # both images of a case share a group
    assert data.records.groupby("group")["item"].count().eq(2).all()
    strict = load_dataset("thyroid", root, load_benchmark_config(tirads_cutoff="4b"))
    assert dict(zip(strict.records["item"], strict.records["label"]))["3_1.jpg"] == 0
    cropped = load_dataset("thyroid", root, load_benchmark_config(ddti_crop=True))
    pixels = load_pixels(cropped.records.iloc[0])
    # outline x 10..25, y 5..20 plus an 8-pixel margin, clipped at the top: box (2, 0, 33, 28)
    assert pixels.shape == (1, 28, 31)
    assert load_pixels(data.records.iloc[0]).shape == (1, 30, 40)


def test_merge_groups_matches_union_find():
    cases = ["a", "a", "b", "c", None, "d", None]
    digests = ["x", "y", "y", "z", "z", "w", "v"]
    groups = merge_groups(cases, digests)
    parent = list(range(len(cases)))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for key in (cases, digests):
        for i in range(len(key)):
            for j in range(i):
                if key[i] is not None and key[i] == key[j]:
                    parent[find(i)] = find(j)
    for i in range(len(cases)):
        for j in range(len(cases)):
            assert (groups[i] == groups[j]) == (find(i) == find(j))


def test_breast_folder_layout_normal_as_negative_or_dropped_masks_ignored(tmp_path):
    for klass, n in (("benign", 6), ("malignant", 5), ("normal", 3)):
        for i in range(n):
            _png(tmp_path / klass / f"{klass} ({i}).png", hash(klass) % 100 + i)
            _png(tmp_path / klass / f"{klass} ({i})_mask.png", 1)
    _png(tmp_path / "malignant" / "dup.png", hash("benign") % 100)  # byte-identical to a benign image
    data = load_dataset("breast", tmp_path, load_benchmark_config())
    assert len(data) == 15 and data.labels.sum() == 6  # normal images are negatives (the paper's count)
    assert (data.records[data.records["item"].str.startswith("normal/")]["label"] == 0).all()
    assert any("3 normal image(s) counted as class 0" in n for n in data.notes)
    data = load_dataset("breast", tmp_path, load_benchmark_config(breast_normal="drop"))
    assert len(data) == 12 and data.labels.sum() == 6
    assert not data.records["item"].str.contains("mask").any()
    rec = data.records.set_index("item")
    assert rec.loc["malignant/dup.png", "group"] == rec.loc["benign/benign (0).png", "group"]


def test_missing_dataset_message_and_cli_exit(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MODAN_PACS_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("thyroid", None, load_benchmark_config())
    message = str(info.value)
    assert "thyroid" in message and "nowhere/ddti" in message and "metadata.csv" in message and "\n" not in message
    from modan_pacs.cli.main import main

    code = main(["benchmark", "--dataset", "breast", "--init", "scratch", "--out", str(tmp_path / "run")])
    assert code != 0
    err = capsys.readouterr().err
    assert "breast dataset not found" in err and "benign/" in err


def test_csv_dataset_labels_and_patient_groups(tmp_path):
    rows = []
    for i in range(12):
        _png(tmp_path / "img" / f"{i}.png", i)
        rows.append({"path": f"img/{i}.png", "label": "tumour" if i % 3 == 0 else "ok", "patient_id": f"p{i // 2}"})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(InputError, match="positive-label"):
        load_dataset("csv", tmp_path / "labels.csv", load_benchmark_config())
    data = load_dataset("csv", tmp_path, load_benchmark_config(positive_label="tumour"))
    assert data.labels.sum() == 4
    assert data.records["group"].nunique() == 6


def test_folds_saved_reused_and_checked(tmp_path):
    rows = []
    for i in range(30):
        _png(tmp_path / "img" / f"{i}.png", i)
        rows.append({"path": f"img/{i}.png", "label": int(i < 9), "patient_id": f"p{i // 3}"})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    cfg = load_benchmark_config()
    data = load_dataset("csv", tmp_path / "labels.csv", cfg)
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(InputError, match="only 3 independent case"):
        load_or_make_folds(run, data, 5, 0)  # the 9 positives belong to 3 patients
    rows = [dict(r, patient_id=f"p{i}") for i, r in enumerate(rows)]
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    data = load_dataset("csv", tmp_path / "labels.csv", cfg)
    first = load_or_make_folds(run, data, 5, 0)
    again = load_or_make_folds(run, data, 5, 123)  # saved partition wins over a new seed
    pd.testing.assert_frame_equal(first, again)
    assert sorted(first["fold"].unique()) == [1, 2, 3, 4, 5]
    masks = load_or_make_inner(run, data.name, first, 0.2, 0)
    for k, mask in masks.items():
        assert not (first["fold"].to_numpy()[mask] == k).any() and mask.sum() > 0
    assert load_or_make_inner(run, data.name, first, 0.2, 99)[1].tolist() == masks[1].tolist()
    data.records = data.records.iloc[:-1]
    with pytest.raises(InputError, match="other images"):
        load_or_make_folds(run, data, 5, 0)


@pytest.mark.data
def test_real_busi_and_ddti_partitions_keep_cases_and_duplicates_together(shared_data, tmp_path):
    cfg = load_benchmark_config()
    busi = load_dataset("breast", shared_data / "busi", cfg)
    assert len(busi) == 780 and busi.labels.sum() == 210  # 437 benign + 133 normal negatives
    assert len(load_dataset("breast", shared_data / "busi", cfg.model_copy(update={"breast_normal": "drop"}))) == 647
    ddti = load_dataset("thyroid", shared_data / "ddti", cfg)
    meta = pd.read_csv(shared_data / "ddti" / "metadata.csv", dtype=str, keep_default_na=False)
    assert len(ddti) == int((meta["tirads"] != "").sum())
    folds = load_or_make_folds(tmp_path, ddti, 5, 0).merge(
        meta[["path", "patient_id", "md5_source"]], left_on="item", right_on="path"
    )
    assert folds.groupby("patient_id")["fold"].nunique().max() == 1
    assert folds.groupby("md5_source")["fold"].nunique().max() == 1  # byte-identical crops of different cases
    busi_folds = load_or_make_folds(tmp_path, busi, 5, 0)
    share = busi_folds.groupby("fold")["label"].mean()
    assert share.max() - share.min() < 0.05  # stratified
