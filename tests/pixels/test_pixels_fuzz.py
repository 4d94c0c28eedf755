"""Cache over mutants of real files (issue 11, cache side): files changed after indexing by byte
flips, truncations, a wrong transfer syntax or emptied pixel data. The build finishes, and every
indexed instance ends in exactly one place: a cache row or an errors.parquet row naming it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.data import get_testdata_file

sys.path.insert(0, str(Path(__file__).parent))
from pixel_files import extra_file, uid, write_ct_series  # noqa: E402

from modan_pacs.pixels import load_cache  # noqa: E402
from modan_pacs.pixels.build import CacheSettings, build_cache_from_index  # noqa: E402

BASES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "emri_small.dcm",
    "MR_small_RLE.dcm",
    "JPEG2000.dcm",
    "US1_J2KR.dcm",
    "SC_rgb_rle.dcm",
]
MUTATIONS = ("flip", "truncate", "syntax", "empty_pixels", "garbage_tail")


def _source(name):
    return get_testdata_file(name) or extra_file(name)


def _write_copies(folder, n_per_base):
    """Copies of real files, each an instance of its own (new UIDs), so the index keeps them all."""
    paths = []
    for b, name in enumerate(BASES):
        ds = pydicom.dcmread(_source(name))
        for k in range(n_per_base):
            ds.SOPInstanceUID, ds.SeriesInstanceUID = uid(6, b, k, 1), uid(6, b, k)
            path = folder / f"{b}_{k}_{name}"
            ds.save_as(path)
            paths.append(path)
    return paths


def _mutate(path, kind, rng):
    data = bytearray(path.read_bytes())
    n = len(data)
    if kind == "flip":  # a few bytes anywhere after the file meta
        for pos in rng.integers(300, n, size=8):
            data[pos] ^= 0xFF
    elif kind == "truncate":
        data = data[: int(rng.integers(n // 3, n - 1))]
    elif kind == "syntax":  # claim JPEG Baseline for whatever the pixels are
        at = data.find(b"1.2.840.10008.1.2")
        if at > 0:
            data[at : at + 22] = b"1.2.840.10008.1.2.4.50"
    elif kind == "empty_pixels":
        at = data.rfind(b"\xe0\x7f\x10\x00")
        if at > 0:
            data = data[: at + 8] + b"\x00\x00\x00\x00"
    elif kind == "garbage_tail":
        data = data[: n - 64] + bytes(rng.integers(0, 256, size=64, dtype=np.uint8))
    path.write_bytes(bytes(data))


def test_cache_over_mutants_every_instance_in_exactly_one_place(tmp_path, index_folder):
    rng = np.random.default_rng(11)
    folder = tmp_path / "export"
    folder.mkdir()
    paths = _write_copies(folder, n_per_base=len(MUTATIONS))
    series = write_ct_series(folder / "series", n=6)
    index = index_folder(folder)
    frame = pd.read_parquet(index / "index.parquet")
    assert len(frame) == len(paths) + len(series)
    for i, path in enumerate(paths):  # the files change after indexing: the cache meets them as they are now
        _mutate(path, MUTATIONS[i % len(MUTATIONS)], rng)
    for path, kind in zip(series[1::2], ("flip", "truncate", "empty_pixels"), strict=True):
        _mutate(path, kind, rng)
    result = build_cache_from_index(
        index, tmp_path / "cache", CacheSettings(size=16, slices="all", secondary_capture="all"), workers=2
    )
    manifest = load_cache(tmp_path / "cache").manifest
    errors = pd.read_parquet(tmp_path / "cache" / "errors.parquet")
    cached = set(manifest["source"])
    failed = set(errors["path"])
    assert failed <= set(frame["path"])  # every error row names an indexed file
    for row in frame.itertuples():
        assert (row.sop_instance_uid in cached) != (row.path in failed), row.path
    assert result.n_rows == len(manifest) and len(errors) == result.n_errors + result.n_excluded
    assert result.summary["errors"].get("decode_error", 0) + result.summary["errors"].get("missing_instance", 0) >= 10
