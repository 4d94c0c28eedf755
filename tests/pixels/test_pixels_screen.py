"""Screening before pixels are cached, on real files (pydicom's and pydicom-data's US, SEG, RTDOSE,
SR, NM and SC files): each exclusion has a reason row and a count, and each can be switched off."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file

sys.path.insert(0, str(Path(__file__).parent))
from pixel_files import copy_to, extra_file, uid  # noqa: E402

from modan_pacs.errors import InputError  # noqa: E402
from modan_pacs.labels import Vocabulary  # noqa: E402
from modan_pacs.pixels import load_cache  # noqa: E402
from modan_pacs.pixels.build import CacheSettings, build_cache_from_index  # noqa: E402
from modan_pacs.pixels.decode import display_frames, fit_square, read_dicom_frames, to_uint8  # noqa: E402
from modan_pacs.pixels.screen import non_image_reason, ultrasound_crop_box  # noqa: E402


def _variant(source, target, number, **changes):
    """A copy of a real file as an instance of its own, with ``changes`` to its header or pixels."""
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID, ds.SeriesInstanceUID = uid(5, number, 1), uid(5, number)
    pixels = changes.pop("pixels", None)
    if pixels is not None:
        ds.PixelData = pixels(ds.pixel_array).tobytes()
    for key, value in changes.items():
        setattr(ds, key, value)
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target)
    return target


@pytest.fixture()
def export(tmp_path):
    folder = tmp_path / "export"
    files = {
        "ct": copy_to(folder, get_testdata_file("CT_small.dcm")),
        "us_regions": copy_to(folder, extra_file("OBXXXX1A.dcm")),
        "us_plain": copy_to(folder, extra_file("US1_UNCR.dcm")),
        "seg": copy_to(folder, extra_file("liver.dcm")),
        "rtdose": copy_to(folder, get_testdata_file("rtdose.dcm")),
        "sc": copy_to(folder, extra_file("SC_rgb.dcm")),
        "nm_sc": copy_to(folder, extra_file("JPEG2000_UNC.dcm")),  # NM whole body stored as SC, DERIVED\PRIMARY
        "sr": copy_to(folder, get_testdata_file("test-SR.dcm")),
        "burned": _variant(
            extra_file("JPGLosslessP14SV1_1s_1f_8b.dcm"), folder / "burned_us.dcm", 1, BurnedInAnnotation="YES"
        ),
        "flat": _variant(
            get_testdata_file("CT_small.dcm"), folder / "flat_ct.dcm", 2, pixels=lambda a: np.full_like(a, 40)
        ),
    }
    return folder, files


def _errors(cache_dir):
    return pd.read_parquet(cache_dir / "errors.parquet")


def test_default_screening_excludes_with_reasons_and_counts(tmp_path, export, index_folder):
    folder, files = export
    index = index_folder(folder)
    result = build_cache_from_index(index, tmp_path / "cache", CacheSettings(size=32), workers=1)
    errors = _errors(tmp_path / "cache")
    code_of = dict(zip(errors["path"], errors["code"], strict=True))
    assert code_of[str(files["seg"])] == "not_an_image" and code_of[str(files["rtdose"])] == "not_an_image"
    assert code_of[str(files["sc"])] == "secondary_capture" and code_of[str(files["nm_sc"])] == "secondary_capture"
    assert code_of[str(files["burned"])] == "burned_in_annotation"
    assert code_of[str(files["flat"])] == "near_constant"
    assert set(errors.loc[errors["path"].isin([str(files[k]) for k in ("seg", "sc", "burned", "flat")]), "status"]) == {
        "excluded"
    }
    assert "Segmentation Storage" in errors.loc[errors["path"] == str(files["seg"]), "reason"].iloc[0]
    sources = set(load_cache(tmp_path / "cache").manifest["source"])
    kept = {
        str(pydicom.dcmread(files[k], stop_before_pixels=True).SOPInstanceUID) for k in ("ct", "us_regions", "us_plain")
    }
    assert sources == kept and result.n_rows == 3
    summary = json.loads((tmp_path / "cache" / "summary.json").read_text())
    assert summary["excluded"] == {
        "burned_in_annotation": 1,
        "near_constant": 1,
        "not_an_image": 2,
        "secondary_capture": 2,
    }
    assert summary["notes"] == {"us_cropped": 1, "us_without_regions": 1}
    assert result.n_excluded == 6 and summary == result.summary


def test_each_screen_can_be_switched_off(tmp_path, export, index_folder):
    folder, files = export
    index = index_folder(folder)
    result = build_cache_from_index(
        index,
        tmp_path / "cache",
        CacheSettings(
            size=32,
            keep_non_image=True,
            secondary_capture="all",
            keep_burned_in=True,
            min_std=0.0,
            crop_ultrasound=False,
        ),
        workers=1,
    )
    assert result.n_excluded == 0 and result.summary["notes"] == {}
    m = load_cache(tmp_path / "cache").manifest
    uids = {k: str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for k, p in files.items()}
    assert {uids[k] for k in ("seg", "rtdose", "sc", "nm_sc", "burned", "flat")} <= set(m["source"])
    primary = build_cache_from_index(
        index, tmp_path / "primary", CacheSettings(size=32, secondary_capture="primary"), workers=1
    )
    assert (
        primary.summary["excluded"]["secondary_capture"] == 1
    )  # NM (DERIVED\PRIMARY) kept, SC_rgb (DERIVED\SECONDARY) not
    assert uids["nm_sc"] in set(load_cache(tmp_path / "primary").manifest["source"])
    with pytest.raises(InputError, match="--secondary-capture"):
        build_cache_from_index(index, tmp_path / "bad", CacheSettings(secondary_capture="some"))


def test_ultrasound_is_cropped_to_the_union_of_its_2d_regions(tmp_path, export, index_folder):
    folder, files = export
    ds = pydicom.dcmread(files["us_regions"], stop_before_pixels=True)
    # OBXXXX1A: a 2D tissue region (x 120..800, y 60..518) and a waveform strip below it
    assert ultrasound_crop_box(ds, (int(ds.Rows), int(ds.Columns))) == (60, 519, 120, 800)
    index = index_folder(folder)
    build_cache_from_index(index, tmp_path / "cache", CacheSettings(size=48), workers=1)
    cache = load_cache(tmp_path / "cache")
    row = int(np.flatnonzero(cache.manifest["source"] == str(ds.SOPInstanceUID))[0])
    decoded, raw = read_dicom_frames(files["us_regions"], "middle")
    expected = to_uint8(fit_square(display_frames(decoded, raw=raw)[0][60:519, 120:800], 48))
    np.testing.assert_array_equal(cache.images[row], expected)


def test_sop_class_screen_in_the_worker_for_csv_and_folder_records(tmp_path):
    """Records (--csv / --folder) have no index column: the worker screens the header it reads."""
    from modan_pacs.pixels.build import CacheSettings, build_cache, plan_record_units

    records = pd.DataFrame(
        {
            "path": [
                get_testdata_file("test-SR.dcm"),
                get_testdata_file("rtdose.dcm"),
                get_testdata_file("CT_small.dcm"),
            ],
            "modality_label": [None, None, "CT"],
            "anatomy_label": [None, None, "brain"],
        }
    )
    vocab, settings = Vocabulary.load(), CacheSettings(size=16)
    units = plan_record_units(records, settings)
    result = build_cache(units, vocab.encode_frame(records), vocab, tmp_path / "cache", settings=settings)
    errors = _errors(tmp_path / "cache")
    assert result.n_rows == 1 and errors["code"].tolist() == ["not_an_image", "not_an_image"]
    assert "Comprehensive SR Storage" in errors["reason"].iloc[0]


def test_non_image_sop_classes_by_standard_names():
    import pydicom.uid as u

    for name in (
        "SegmentationStorage",
        "RTDoseStorage",
        "RTStructureSetStorage",
        "RTPlanStorage",
        "BasicTextSRStorage",
        "ComprehensiveSRStorage",
        "KeyObjectSelectionDocumentStorage",
        "GrayscaleSoftcopyPresentationStateStorage",
        "EncapsulatedPDFStorage",
        "RawDataStorage",
        "TwelveLeadECGWaveformStorage",
    ):
        assert non_image_reason(getattr(u, name)), name
    for name in (
        "CTImageStorage",
        "MRImageStorage",
        "UltrasoundImageStorage",
        "PositronEmissionTomographyImageStorage",
        "NuclearMedicineImageStorage",
        "DigitalXRayImageStorageForPresentation",
        "SecondaryCaptureImageStorage",
    ):
        assert non_image_reason(getattr(u, name)) is None, name
    assert non_image_reason(None) is None and non_image_reason("1.2.3.4") is None


def test_montage_rows_per_label_pair_and_a_strip_of_exclusions(tmp_path, export, index_folder):
    from PIL import Image

    from modan_pacs.pixels.montage import write_montage

    folder, _ = export
    build_cache_from_index(index_folder(folder), tmp_path / "cache", CacheSettings(size=32), workers=1, montage=True)
    path = tmp_path / "cache" / "montage.png"
    assert path.is_file()
    m = load_cache(tmp_path / "cache").manifest
    n_pairs = (m["modality_label"].fillna("?") + m["anatomy_label"].fillna("?")).nunique()
    per_code = _errors(tmp_path / "cache").query("status == 'excluded'")["code"].value_counts()
    strip = int(per_code.clip(upper=2).sum())  # at most 2 per exclusion code
    with Image.open(path) as im:
        width, height = im.size
    # one row per label pair plus the exclusion strip; columns: max(6 per pair, the strip's tiles)
    assert strip == 6 and height == round(1.75 * (n_pairs + 1) * 80) and width == round(1.6 * max(6, strip) * 80)
    blank = write_montage(tmp_path / "cache", per_pair=1, per_code=0)
    with Image.open(blank) as im:
        assert im.size[1] == round(1.75 * n_pairs * 80)  # no strip without sampled exclusions
