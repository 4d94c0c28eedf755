"""Every image kind decoded to a useful grey image: PET / NM by a robust percentile window, Siemens
MOSAIC split into slices (checked against nibabel's own mosaic reader), one cache row per slice."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from pixel_files import copy_to, extra_file, write_mosaic, write_pet  # noqa: E402

from modan_pacs.pixels import load_cache  # noqa: E402
from modan_pacs.pixels.build import CacheSettings, build_cache_from_index  # noqa: E402
from modan_pacs.pixels.decode import (  # noqa: E402
    SUV_WINDOW,
    display_frames,
    mosaic_layout,
    read_dicom_frames,
    split_mosaic,
    suv_factor,
)


def test_pet_percentile_window_not_the_header_window(tmp_path):
    path, activity = write_pet(tmp_path / "pet.dcm")
    decoded, raw = read_dicom_frames(path)
    np.testing.assert_allclose(decoded.frames[0], activity)  # Bq/ml after rescale
    robust = display_frames(decoded, raw=raw)[0]
    lo, hi = np.percentile(activity, [0.5, 99.5])
    np.testing.assert_allclose(robust, np.clip((activity - lo) / (hi - lo), 0, 1))
    header = display_frames(decoded, raw=raw, modality_window="header")[0]
    body = activity > 1000
    # the header window (0..10, meant for SUV) saturates every body pixel; the robust one keeps contrast
    assert header[body].min() == 1.0 and header[body].std() == 0.0
    assert robust[body].std() > 0.03 and robust.max() == 1.0 and robust.min() == 0.0


def test_pet_suv_window_from_the_header(tmp_path):
    import math

    path, activity = write_pet(tmp_path / "pet.dcm")
    decoded, raw = read_dicom_frames(path)
    # SUVbw by hand: weight 70 kg, 3.7e8 Bq injected 3600 s before the series, F-18 half life 6586.2 s
    expected_factor = 70_000 / (3.7e8 * math.exp(-math.log(2) * 3600 / 6586.2))
    assert suv_factor(decoded.headers[0]) == pytest.approx(expected_factor, rel=1e-12)
    suv = display_frames(decoded, raw=raw, modality_window="suv")[0]
    np.testing.assert_allclose(suv, np.clip(activity * expected_factor / SUV_WINDOW[1], 0, 1))
    lesion_suv = (
        35000 * expected_factor
    )  # the generated lesion: ~35 kBq/ml = SUV ~9.7, white; the body (5 kBq/ml) SUV ~1.4, grey
    assert lesion_suv > SUV_WINDOW[1] and suv.max() == 1.0 and 0.15 < np.median(suv[activity > 1000]) < 0.25
    no_weight = decoded.headers[0].copy()
    del no_weight.PatientWeight
    assert suv_factor(no_weight) is None


def test_nm_uses_the_percentile_window_too():
    path = extra_file("JPEG2000_UNC.dcm")  # NM whole body (as SC): counts, no window of its own
    decoded, raw = read_dicom_frames(path)
    out = display_frames(decoded, raw=raw)[0]
    lo, hi = np.percentile(decoded.frames[0], [0.5, 99.5])
    np.testing.assert_allclose(out, np.clip((decoded.frames[0] - lo) / (hi - lo), 0, 1))


def test_pet_in_the_cache_is_not_black(tmp_path, index_folder):
    for seed in range(2):
        write_pet(tmp_path / "export" / f"pet_{seed}.dcm", seed=seed)
    index = index_folder(tmp_path / "export")
    build_cache_from_index(index, tmp_path / "cache", CacheSettings(size=64, series_volumes=False), workers=1)
    cache = load_cache(tmp_path / "cache")
    assert len(cache) == 2 and all(int(cache.images[i].max()) >= 250 for i in range(2))
    build_cache_from_index(
        index,
        tmp_path / "header",
        CacheSettings(size=64, series_volumes=False, pet_nm_window="header", min_std=0),
        workers=1,
    )
    header = load_cache(tmp_path / "header")
    assert np.mean(np.asarray(header.images) == 255) > 0.3  # saturated: what the header window did
    suv = build_cache_from_index(
        index, tmp_path / "suv", CacheSettings(size=64, series_volumes=False, pet_nm_window="suv"), workers=1
    )
    assert suv.summary["notes"] == {"pet_suv": 2}


def _nibabel_volume(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nibabel.nicom import dicomwrappers

        return dicomwrappers.wrapper_from_file(str(path)).get_data()  # (rows, columns, slices), nibabel's own split


@pytest.mark.parametrize("keep_csa", [True, False])
def test_mosaic_split_equals_nibabel(tmp_path, keep_csa):
    path, slices = write_mosaic(tmp_path / "dwi.dcm", keep_csa=keep_csa)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    n, rows, columns, from_csa = mosaic_layout(ds)
    assert (rows, columns, from_csa) == (128, 128, keep_csa)
    assert n == (48 if keep_csa else 49)  # without CSA: the 7 x 7 grid of the acquisition matrix ...
    decoded, raw = read_dicom_frames(path, "all")
    assert decoded.frame_indices == list(range(48))  # ... and its empty last tile dropped
    np.testing.assert_array_equal(np.stack(raw), slices)
    if keep_csa:
        volume = _nibabel_volume(path)
        np.testing.assert_array_equal(np.stack(raw), np.moveaxis(volume, -1, 0).astype(slices.dtype))
    middle, _ = read_dicom_frames(path, "middle")
    assert middle.frame_indices == [24]
    even, _ = read_dicom_frames(path, "even:4")
    assert even.frame_indices == [6, 18, 30, 42]


def test_split_mosaic_reads_tiles_row_by_row():
    frame = np.arange(4 * 6).reshape(4, 6)  # a 2 x 3 grid of 2 x 2 tiles
    tiles = split_mosaic(frame, 5, 2, 2)
    np.testing.assert_array_equal(tiles[1], frame[0:2, 2:4])
    np.testing.assert_array_equal(tiles[3], frame[2:4, 0:2])
    assert len(tiles) == 5


def test_mosaic_in_the_cache_one_row_per_slice(tmp_path, index_folder):
    write_mosaic(tmp_path / "export" / "dwi.dcm")
    copy_to(tmp_path / "export", pydicom.data.get_testdata_file("CT_small.dcm"))
    index = index_folder(tmp_path / "export")
    result = build_cache_from_index(index, tmp_path / "cache", CacheSettings(size=32, slices="all"), workers=1)
    m = load_cache(tmp_path / "cache").manifest
    uid = str(pydicom.dcmread(tmp_path / "export" / "dwi.dcm", stop_before_pixels=True).SOPInstanceUID)
    mosaic_rows = m[m["source"] == uid]
    assert mosaic_rows["slice_index"].tolist() == list(range(48))
    assert result.n_rows == 49
    errors = pd.read_parquet(tmp_path / "cache" / "errors.parquet")
    assert errors.empty
    # a series of mosaics (repeated volumes) gives the slices of its middle instance
    middle = build_cache_from_index(index, tmp_path / "middle", CacheSettings(size=32, slices="even:3"), workers=1)
    assert load_cache(tmp_path / "middle").manifest.query("source == @uid")["slice_index"].tolist() == [8, 24, 40]
    assert middle.n_rows == 4
