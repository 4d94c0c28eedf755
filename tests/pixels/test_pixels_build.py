"""Cache builder on a tiny index of real DICOM files: rows, labels, errors, windows, resume, workers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydantic import ValidationError
from pydicom.data import get_testdata_file

from modan_pacs.errors import InputError
from modan_pacs.labels import Vocabulary
from modan_pacs.pixels import load_cache
from modan_pacs.pixels.build import CacheSettings, build_cache_from_index
from modan_pacs.pixels.decode import fit_square, to_uint8

INDEX_COLUMNS = [
    "sop_instance_uid",
    "series_instance_uid",
    "study_instance_uid",
    "patient_hash",
    "modality",
    "body_part_examined",
    "study_description",
    "series_description",
    "protocol_name",
    "anatomic_region_code",
    "anatomic_region_meaning",
    "manufacturer",
    "view_position",
    "laterality",
    "rows",
    "columns",
    "number_of_frames",
    "bits_stored",
    "transfer_syntax_uid",
    "photometric_interpretation",
    "sop_class_uid",
    "path",
    "location",
    "size",
    "mtime",
    "modality_label",
    "anatomy_label",
    "anatomy_source",
]


def _row(path, modality_label, anatomy_label):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    row = dict.fromkeys(INDEX_COLUMNS)
    row.update(
        sop_instance_uid=str(ds.SOPInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        modality=str(ds.Modality),
        number_of_frames=int(ds.get("NumberOfFrames", 1) or 1),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        path=str(path),
        modality_label=modality_label,
        anatomy_label=anatomy_label,
        anatomy_source="body_part",
    )
    return row


def undecodable_jpeg(path):
    """A CT whose JPEG Baseline pixel data is noise: every pydicom plugin and GDCM refuse it."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([b"\xff\xd8" + bytes(range(256)) * 4 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.1042.99.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.1042.99"  # a series of its own
    ds.save_as(path)
    return path


def write_index(folder, pydicom_data_dir, extra=()):
    """A tiny index folder following the contract (index.parquet, labels.npy, vocabulary.yaml)."""
    vocab = Vocabulary.load()
    folder.mkdir(parents=True, exist_ok=True)
    broken = undecodable_jpeg(folder.parent / "broken_jpeg.dcm")
    ct5n = sorted((pydicom_data_dir / "dicomdirtests" / "98892001" / "CT5N").iterdir())
    rows = [
        _row(get_testdata_file("CT_small.dcm"), "CT", "brain"),
        _row(get_testdata_file("MR_small.dcm"), "MR", "brain"),
        _row(get_testdata_file("emri_small.dcm"), "MR", None),
        *[_row(p, "CT", "lung") for p in ct5n],
        _row(get_testdata_file("SC_rgb.dcm"), None, None),
        _row(get_testdata_file("JPEG-lossy.dcm"), "CT", None),  # 12-bit extended JPEG, bad SOS: GDCM decodes it
        _row(broken, "CT", None),  # nothing decodes it
        *extra,
    ]
    pacs = dict(
        rows[0],
        sop_instance_uid="1.2.3.4",
        series_instance_uid="1.2.3",
        path=None,
        location="pacs://X@h:104/1/1.2.3/1.2.3.4",
    )
    rows.append(pacs)
    frame = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / "index.parquet", index=False)
    np.save(folder / "labels.npy", vocab.encode_frame(frame))
    vocab.save(folder / "vocabulary.yaml")
    # the rest of a complete index folder (load_index checks that they exist)
    pd.DataFrame({"path": pd.Series([], dtype=str), "reason": pd.Series([], dtype=str)}).to_parquet(
        folder / "errors.parquet", index=False
    )
    frame.groupby("series_instance_uid").size().rename("n_instances").reset_index().to_parquet(
        folder / "series.parquet", index=False
    )
    return frame, vocab


def test_build_middle_policy_rows_labels_errors(tmp_path, pydicom_data_dir):
    frame, vocab = write_index(tmp_path / "index", pydicom_data_dir)
    result = build_cache_from_index(
        tmp_path / "index", tmp_path / "cache", CacheSettings(size=32, slices="middle", secondary_capture="all")
    )
    cache = load_cache(tmp_path / "cache")
    assert (
        result.n_rows == len(cache) == 6
    )  # CT_small, MR_small, emri (1 frame), CT5N series (1 slice), SC_rgb, JPEG-lossy
    assert not (tmp_path / "cache" / ".partial").exists()
    m = cache.manifest
    index_labels = np.load(tmp_path / "index" / "labels.npy")
    np.testing.assert_array_equal(cache.labels, index_labels[m["index_row"].to_numpy()].astype(np.float32))
    assert list(m["source"]) == list(frame.loc[m["index_row"], "sop_instance_uid"])
    emri = m[m["source"] == frame.at[2, "sop_instance_uid"]]
    assert emri["slice_index"].tolist() == [5]
    series = m[m["series_instance_uid"] == frame.at[3, "series_instance_uid"]]
    assert len(series) == 1 and series["slice_index"].tolist() == [2]
    errors = pd.read_parquet(tmp_path / "cache" / "errors.parquet")
    assert len(errors) == 2 and result.n_errors == 2
    assert any("broken_jpeg" in p for p in errors["path"]) and any(p.startswith("pacs://") for p in errors["path"])
    assert "SimpleITK/GDCM" in errors.loc[errors["path"].str.contains("broken_jpeg"), "reason"].iloc[0]
    # CT_small row: brain window (40, 80) applied to HU, padded/resized, by hand
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    windowed = np.clip((hu - 39.5) / 79 + 0.5, 0, 1)
    row = int(m.index[m["source"] == str(ds.SOPInstanceUID)][0])
    np.testing.assert_array_equal(cache.images[row], to_uint8(fit_square(windowed, 32)))
    with pytest.raises(InputError, match="already holds"):
        build_cache_from_index(tmp_path / "index", tmp_path / "cache", CacheSettings(size=32))


def test_all_policy_and_window_config(tmp_path, pydicom_data_dir):
    write_index(tmp_path / "index", pydicom_data_dir)
    config = tmp_path / "windows.yaml"
    config.write_text("brain: [0, 100]\n")
    build_cache_from_index(
        tmp_path / "index",
        tmp_path / "cache",
        CacheSettings(size=16, slices="all", secondary_capture="all"),
        window_config=config,
    )
    m = load_cache(tmp_path / "cache").manifest
    assert len(m) == 1 + 1 + 10 + 5 + 1 + 1  # CT_small, MR_small, emri frames, CT5N slices, SC_rgb, JPEG-lossy
    assert sorted(m.loc[m["slice_index"] > 2, "slice_index"].unique().tolist()) == list(range(3, 10))
    config.write_text("brian: [0, 100]\n")
    from modan_pacs.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'brain'"):
        build_cache_from_index(tmp_path / "index", tmp_path / "other", CacheSettings(size=16), window_config=config)


def test_interrupted_build_resumes_to_same_cache(tmp_path, pydicom_data_dir):
    write_index(tmp_path / "index", pydicom_data_dir)
    build_cache_from_index(tmp_path / "index", tmp_path / "full", CacheSettings(size=24))

    def stop_after_three(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_cache_from_index(
            tmp_path / "index", tmp_path / "resumed", CacheSettings(size=24), progress=stop_after_three
        )
    assert (tmp_path / "resumed" / ".partial" / "done.jsonl").read_text().count("\n") == 3
    with pytest.raises(InputError, match="other settings"):
        build_cache_from_index(tmp_path / "index", tmp_path / "resumed", CacheSettings(size=32))
    result = build_cache_from_index(tmp_path / "index", tmp_path / "resumed", CacheSettings(size=24), workers=2)
    assert result.n_resumed == 3
    a, b = load_cache(tmp_path / "full"), load_cache(tmp_path / "resumed")
    np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))
    pd.testing.assert_frame_equal(a.manifest, b.manifest)


def test_cache_settings_model_keeps_defaults_errors_and_resume_record():
    settings = CacheSettings()
    # the values the dataclass had (a resume of a build started before the change must agree)
    assert settings.outputs() == {
        "size": 224,
        "slices": "middle",
        "resize": "pad",
        "ct_window": "anatomy",
        "ct_windows": {},
        "series_volumes": True,
        "keep_non_image": False,
        "secondary_capture": "original-primary",
        "keep_burned_in": False,
        "crop_ultrasound": True,
        "min_std": 0.02,
        "pet_nm_window": "percentile",
    }
    assert settings.unit_timeout == 300.0
    with pytest.raises(ValidationError, match="sizes"):
        CacheSettings(sizes=32)
    bad_values = [
        ({"size": 4}, "--size must be >= 8; got 4"),
        ({"resize": "crop"}, "--resize must be pad or stretch"),
        ({"slices": "centre:3"}, "slice policy 'centre:3'"),
        ({"min_std": 0.5}, r"--min-std must be in \[0, 0.5\)"),
        ({"unit_timeout": -1}, "--unit-timeout must be >= 0"),
        ({"pet_nm_window": "max"}, "--pet-nm-window must be one of"),
    ]
    for bad, message in bad_values:
        with pytest.raises(InputError, match=message):
            CacheSettings(**bad)
    with pytest.raises(InputError, match="--size"):
        settings.size = 2
