"""One bad instance never costs the good ones (issue 11, cache side): per-unit isolation, a dead
worker, and a series volume with a corrupt instance, each error row naming the file at fault."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.data import get_testdata_file

sys.path.insert(0, str(Path(__file__).parent))
from pixel_files import copy_to, extra_file, uid, write_ct_series  # noqa: E402

from modan_pacs.pixels import build as build_module  # noqa: E402
from modan_pacs.pixels import load_cache  # noqa: E402
from modan_pacs.pixels.build import CacheSettings, build_cache_from_index  # noqa: E402
from modan_pacs.pixels.decode import read_series  # noqa: E402


def _truncate(path, keep=0.6):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_series_with_a_corrupt_instance_keeps_the_others(tmp_path, index_folder):
    paths = write_ct_series(tmp_path / "export" / "series", n=11)
    index = index_folder(tmp_path / "export")
    bad = paths[5]  # the middle slice: the one "middle" would choose
    _truncate(bad)  # corrupted after indexing (the index saw a good file)
    build_cache_from_index(index, tmp_path / "middle", CacheSettings(size=32, slices="middle"), workers=1)
    middle = load_cache(tmp_path / "middle")
    errors = pd.read_parquet(tmp_path / "middle" / "errors.parquet")
    assert len(middle) == 1  # the nearest instance stands in for the corrupt one
    assert middle.manifest["source"].iloc[0] in {
        str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in (paths[4], paths[6])
    }
    assert errors["path"].tolist() == [str(bad)] and errors["code"].tolist() == ["missing_instance"]

    build_cache_from_index(index, tmp_path / "all", CacheSettings(size=32, slices="all"), workers=2)
    cache = load_cache(tmp_path / "all")
    errors = pd.read_parquet(tmp_path / "all" / "errors.parquet")
    assert len(cache) == 10  # 11 instances, one gap
    assert errors["path"].tolist() == [str(bad)] and errors["status"].tolist() == ["error"]
    good_uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths if p != bad]
    assert sorted(cache.manifest["source"]) == sorted(good_uids)
    # each cached slice is its own instance's pixels (CT window by anatomy aside, slices differ by +10 HU steps)
    means = [float(np.asarray(cache.images[i], dtype=float).mean()) for i in range(len(cache))]
    assert means == sorted(means)


def test_series_with_an_unreadable_header_is_a_gap_named_by_its_file(tmp_path):
    paths = write_ct_series(tmp_path / "series", n=5)
    paths[1].write_bytes(b"not dicom at all" * 10)
    result = read_series(paths, "all")
    assert [g[0] for g in result.gaps] == [str(paths[1])]
    assert len(result.chosen) == 4 and str(paths[1]) not in map(str, result.chosen)


def test_any_exception_in_one_unit_is_one_error_row(tmp_path, index_folder, monkeypatch):
    folder = tmp_path / "export"
    ct = copy_to(folder, get_testdata_file("CT_small.dcm"))
    mr = copy_to(folder, get_testdata_file("MR_small.dcm"))
    index = index_folder(folder)
    original = build_module.read_dicom_frames

    def explode_on_mr(path, *args, **kwargs):
        if str(path) == str(mr):
            raise KeyError("an unexpected failure inside a decoder")
        return original(path, *args, **kwargs)

    monkeypatch.setattr(build_module, "read_dicom_frames", explode_on_mr)
    result = build_cache_from_index(index, tmp_path / "cache", CacheSettings(size=16), workers=1)
    errors = pd.read_parquet(tmp_path / "cache" / "errors.parquet")
    assert result.n_rows == 1 and load_cache(tmp_path / "cache").manifest["source"].tolist() == [
        str(pydicom.dcmread(ct).SOPInstanceUID)
    ]
    assert errors["path"].tolist() == [str(mr)] and "KeyError" in errors["reason"].iloc[0]


def test_a_worker_killed_by_a_signal_costs_only_its_file(tmp_path, index_folder, monkeypatch):
    folder = tmp_path / "export"
    names = ["CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "rtdose_1frame.dcm", "US1_UNCR.dcm"]
    paths = [copy_to(folder, get_testdata_file(n) or extra_file(n), f"{i}_{n}") for i, n in enumerate(names)]
    crash = folder / "crash_here.dcm"
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID, ds.SeriesInstanceUID = uid(8, 1, 1), uid(8, 1)  # an instance of its own
    ds.save_as(crash)
    index = index_folder(folder)
    original = build_module.decode_unit

    def die_on_crash_file(unit, settings):  # forked workers inherit the patch: a real SIGKILL of a worker
        if any("crash_here" in p for p in unit["paths"]):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(unit, settings)

    monkeypatch.setattr(build_module, "decode_unit", die_on_crash_file)
    result = build_cache_from_index(index, tmp_path / "cache", CacheSettings(size=16, keep_non_image=True), workers=2)
    errors = pd.read_parquet(tmp_path / "cache" / "errors.parquet")
    assert errors.loc[errors["code"] == "worker_died", "path"].tolist() == [str(crash)]
    assert result.n_rows == len(paths)  # every other file cached


def test_a_hanging_unit_is_stopped_and_recorded(tmp_path, index_folder, monkeypatch):
    folder = tmp_path / "export"
    names = ["CT_small.dcm", "MR_small.dcm", "emri_small.dcm"]
    for i, n in enumerate(names):
        copy_to(folder, get_testdata_file(n), f"{i}_{n}")
    hang = folder / "hang_here.dcm"
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID, ds.SeriesInstanceUID = uid(8, 2, 1), uid(8, 2)
    ds.save_as(hang)
    index = index_folder(folder)
    original = build_module.decode_unit

    def hang_on_file(unit, settings):  # forked workers inherit the patch: a decoder that never returns
        if any("hang_here" in p for p in unit["paths"]):
            import time

            time.sleep(3600)
        return original(unit, settings)

    monkeypatch.setattr(build_module, "decode_unit", hang_on_file)
    result = build_cache_from_index(index, tmp_path / "cache", CacheSettings(size=16, unit_timeout=1.0), workers=2)
    errors = pd.read_parquet(tmp_path / "cache" / "errors.parquet")
    assert errors.loc[errors["code"] == "timeout", "path"].tolist() == [str(hang)]
    assert result.n_rows == len(names)


def test_native_decoder_messages_stay_off_the_terminal(tmp_path, index_folder, capfd):
    """The C decoders print their complaints to file descriptor 2 (libjpeg: "Unsupported JPEG data
    precision 12"); the decoding processes send it to /dev/null, since every failure is a row of
    errors.parquet with its reason."""
    folder = tmp_path / "in"
    for name in ("JPEG-lossy.dcm", "CT_small.dcm"):
        copy_to(folder, get_testdata_file(name))
    index = index_folder(folder)
    capfd.readouterr()
    settings = CacheSettings(size=16, secondary_capture="all")
    result = build_cache_from_index(index, tmp_path / "cache", settings, workers=2)
    err = capfd.readouterr().err
    assert result.n_rows == 2, result
    assert "JPEG" not in err and "precision" not in err, err


def test_the_montage_of_excluded_inputs_keeps_decoder_messages_off_the_terminal(tmp_path, index_folder, capfd):
    """The montage decodes a few excluded inputs in this process for their thumbnails (a JPEG
    secondary capture here): the C decoders' messages about them stay off the terminal too."""
    folder = tmp_path / "in"
    for name in ("JPEG-lossy.dcm", "CT_small.dcm"):
        copy_to(folder, get_testdata_file(name))
    index = index_folder(folder)
    capfd.readouterr()
    result = build_cache_from_index(index, tmp_path / "cache", CacheSettings(size=16), workers=1, montage=True)
    captured = capfd.readouterr()
    errors = pd.read_parquet(tmp_path / "cache" / "errors.parquet")
    assert result.n_rows == 1 and errors["code"].tolist() == ["secondary_capture"]
    assert (tmp_path / "cache" / "montage.png").is_file()
    assert "JPEG" not in captured.err and "precision" not in captured.err, captured.err
    print("still here")  # fd 2 and stdout work again after the montage
    import sys

    print("stderr back", file=sys.stderr)
    again = capfd.readouterr()
    assert "still here" in again.out and "stderr back" in again.err
