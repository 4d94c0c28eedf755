"""modan_pacs.fileio: the shared atomic write, grey-image loader and missing-value test."""

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from modan_pacs.fileio import atomic_write, gray_array, is_missing, load_gray, temporary_name


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old\n")
    atomic_write(target, lambda tmp: tmp.write_text("new\n"))
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]
    assert temporary_name(target) == tmp_path / f".table.csv.tmp-{os.getpid()}"


def test_atomic_write_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old\n")

    def half_write(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_write)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


@pytest.mark.parametrize(
    ("value", "missing"),
    [
        (None, True),
        (float("nan"), True),
        (np.float32("nan"), True),
        (pd.NA, True),
        (pd.NaT, True),
        ("", False),
        ("nan", False),
        (0, False),
        (2.5, False),
        ([None], False),
        (np.array([np.nan]), False),
    ],
)
def test_is_missing_matches_pd_isna_on_scalars(value, missing):
    assert is_missing(value) is missing


def test_load_gray_is_pil_luminance_with_crop_and_resize(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    path = tmp_path / "colour.png"
    Image.fromarray(rgb).save(path)
    # ITU-R 601-2 luma as PIL computes it (L = R*299/1000 + G*587/1000 + B*114/1000, rounded)
    rgb32 = rgb.astype(np.int64)
    expected = (rgb32[..., 0] * 19595 + rgb32[..., 1] * 38470 + rgb32[..., 2] * 7471 + 0x8000) >> 16
    gray = load_gray(path)
    assert gray.dtype == np.uint8 and gray.shape == (12, 10)
    np.testing.assert_array_equal(gray, expected.astype(np.uint8))
    np.testing.assert_array_equal(load_gray(path, box=(2, 3, 7, 9)), gray[3:9, 2:7])
    with Image.open(path) as im:
        assert gray_array(im, size=4).shape == (4, 4)
    with pytest.raises(OSError):
        load_gray(tmp_path / "absent.png")
