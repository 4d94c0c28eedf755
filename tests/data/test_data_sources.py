"""Generic CSV / folder sources, miniRIN sampling, and the `cache` / `minirin` commands."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from modan_pacs.cli.main import main
from PIL import Image

from modan_pacs.data.sources import read_image_csv, read_image_folder, sample_minirin, scan_radimagenet
from modan_pacs.errors import InputError
from modan_pacs.labels import Vocabulary
from modan_pacs.pixels import load_cache
from modan_pacs.pixels.decode import fit_square, to_uint8


def _png(path, seed, shape=(30, 20)):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr


@pytest.fixture()
def radimagenet(tmp_path):
    root = tmp_path / "radimagenet"
    counts = {"CT/abd/cls_a": 5, "CT/abd/cls_b": 2, "MR/knee/cls_c": 4}
    for cls, n in counts.items():
        for i in range(n):
            _png(root / cls / f"img{i:02d}.png", seed=hash((cls, i)) % 1000)
    return root


def test_minirin_sampling_counts_seed_and_labels(radimagenet):
    vocab = Vocabulary.load()
    images = scan_radimagenet(radimagenet, vocab)
    assert len(images) == 11
    sel = sample_minirin(images, per_class=3, seed=0)
    assert sel.groupby("class_name").size().to_dict() == {"CT/abd/cls_a": 3, "CT/abd/cls_b": 2, "MR/knee/cls_c": 3}
    assert sel.equals(sample_minirin(images, per_class=3, seed=0))
    draws = {tuple(sample_minirin(images, per_class=3, seed=s)["path"]) for s in range(6)}
    assert len(draws) > 1
    labels = sel.drop_duplicates("class_name").set_index("class_name")[["modality_label", "anatomy_label", "target"]]
    assert labels.loc["CT/abd/cls_a"].tolist() == ["CT", "abdomen", 0]
    assert labels.loc["MR/knee/cls_c"].tolist() == ["MR", "knee", 2]
    (radimagenet / "XX" / "abd" / "c").mkdir(parents=True)
    _png(radimagenet / "XX" / "abd" / "c" / "a.png", 1)
    with pytest.raises(InputError, match="XX"):
        scan_radimagenet(radimagenet, vocab)


def test_minirin_command_writes_cache(radimagenet, tmp_path):
    out = tmp_path / "minirin"
    assert (
        main(
            [
                "minirin",
                str(radimagenet),
                "--per-class",
                "3",
                "--seed",
                "1",
                "--out",
                str(out),
                "--size",
                "16",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    cache = load_cache(out)
    assert len(cache) == 8 and cache.images.shape == (8, 16, 16)
    m = cache.manifest
    assert set(m["target"]) == {0, 1, 2}
    names = cache.vocabulary.label_names
    row = int(m.index[m["class_name"] == "MR/knee/cls_c"][0])
    assert {names[k] for k in np.flatnonzero(cache.labels[row])} == {"modality:MR", "anatomy:knee"}
    assert (out / "classes.txt").read_text().split() == ["CT/abd/cls_a", "CT/abd/cls_b", "MR/knee/cls_c"]
    assert len(pd.read_csv(out / "minirin.csv")) == 8


def test_csv_source_through_cache_command(tmp_path):
    data = tmp_path / "data"
    a = _png(data / "set" / "a.png", 1, (40, 20))
    _png(data / "set" / "b.png", 2)
    pd.DataFrame(
        {
            "path": ["set/a.png", "set/b.png"],
            "modality": ["US", "mr"],
            "anatomy": ["THYROID", "nowhere"],
            "label": ["benign", "malignant"],
        }
    ).to_csv(data / "set" / "metadata.csv", index=False)
    out = tmp_path / "cache"
    assert (
        main(
            ["cache", "--csv", str(data / "set" / "metadata.csv"), "--out", str(out), "--size", "20", "--workers", "1"]
        )
        == 0
    )
    cache = load_cache(out)
    m = cache.manifest
    assert m[["modality_label", "label"]].values.tolist() == [["US", "benign"], ["MR", "malignant"]]
    assert m.at[0, "anatomy_label"] == "thyroid" and pd.isna(m.at[1, "anatomy_label"])
    np.testing.assert_array_equal(cache.images[0], to_uint8(fit_square(a / 255.0, 20)))
    assert (
        main(["cache", "--csv", str(data / "set" / "metadata.csv"), "--out", str(out)]) == 2
    )  # finished cache: refuses
    assert main(["cache", "--out", str(out)]) == 2  # no source given


def test_folder_source(tmp_path):
    _png(tmp_path / "f" / "CT" / "chest" / "x" / "1.png", 3)
    _png(tmp_path / "f" / "US" / "breast" / "2.png", 4)
    records = read_image_folder(tmp_path / "f", Vocabulary.load())
    assert records[["modality_label", "anatomy_label"]].values.tolist() == [["CT", "lung"], ["US", "breast"]]


@pytest.mark.data
def test_shared_pool_loads_through_generic_reader(shared_data, tmp_path):
    from modan_pacs.data.sources import build_cache_from_records
    from modan_pacs.pixels.build import CacheSettings

    vocab = Vocabulary.load()
    expected = {
        "pool_mr_brain_figshare": "MR",
        "pool_us_fetalhead_hc18": "US",
        "pool_dx_knee_oai_kl": "radiograph",
        "pool_us_lung_pocus": "US",
    }
    parts = []
    for folder, modality in expected.items():
        records = read_image_csv(shared_data / folder / "metadata.csv", vocab)
        assert len(records) >= 100
        assert set(records["modality_label"]) == {modality}
        parts.append(records.iloc[::40])
    records = pd.concat(parts, ignore_index=True)
    assert {"brain", "knee", "lung"} <= set(records["anatomy_label"].dropna())
    result = build_cache_from_records(records, vocab, tmp_path / "pool", CacheSettings(size=32), workers=1)
    cache = load_cache(tmp_path / "pool")
    assert result.n_errors == 0 and len(cache) == len(records)
    ref = np.asarray(Image.open(records.at[0, "path"]).convert("L"), dtype=np.float64) / 255.0
    np.testing.assert_array_equal(cache.images[0], to_uint8(fit_square(ref, 32)))
