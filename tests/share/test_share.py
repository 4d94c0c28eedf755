"""`modan-pacs share`: patient names in folder names, descriptions and UID-bearing fields reach the
local index but no byte of SHARE; UIDs are replaced consistently; bad inputs stop with one line."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pydicom
import pytest
from modan_pacs.cli.main import main
from pydicom.data import get_testdata_file

from modan_pacs.errors import InputError
from modan_pacs.pixels import load_cache
from modan_pacs.share import SHARE_FILES, SHARE_MANIFEST_COLUMNS, share_dataset

NAME, MRN, BIRTH, STUDY_DATE = "SMITH^JOHN", "MRN9912345", "19580704", "20240315"
ROOT = "1.2.826.0.1.3680043.10.1042"


def _identifiable_export(folder):
    """Two patients' CTs (CT_small.dcm, real) under folders named after them, with identifying
    descriptions, dates and UIDs that embed the MRN's digits and the study date."""
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    uids = []
    for p, (name, mrn) in enumerate([(NAME, MRN), ("DOE^JANE", "MRN8899887")]):
        target = folder / f"{name.replace('^', '_')}_{mrn}" / "CT head"
        target.mkdir(parents=True)
        for k in range(3):
            ds = base.copy()
            ds.PatientName, ds.PatientID, ds.PatientBirthDate = name, mrn, BIRTH
            ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = STUDY_DATE
            ds.StudyDescription = f"CT HEAD {name.replace('^', ' ')} {mrn}"
            ds.SeriesDescription = f"follow-up of {name.split('^')[0]}"
            ds.ProtocolName = f"{name.split('^')[0]}_protocol"
            ds.BodyPartExamined = "HEAD"
            ds.InstitutionName = "St Elsewhere"
            ds.StudyInstanceUID = f"{ROOT}.{mrn[3:]}.{STUDY_DATE}"
            ds.SeriesInstanceUID = f"{ds.StudyInstanceUID}.1"
            ds.SOPInstanceUID = f"{ds.SeriesInstanceUID}.{k + 1}"
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [0.0, 0.0, 5.0 * k]
            ds.PixelData = (base.pixel_array.astype(np.int16) + np.int16(30 * k)).tobytes()
            ds.save_as(target / f"{name.split('^')[0]}_{k}.dcm")
            uids += [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
    return folder, sorted(set(uids))


@pytest.fixture()
def built(tmp_path, monkeypatch):
    monkeypatch.setenv("MODAN_PACS_SALT_FILE", str(tmp_path / "site" / "salt"))
    export, uids = _identifiable_export(tmp_path / "export")
    assert main(["index", str(export), "--out", str(tmp_path / "index"), "--workers", "1"]) == 0
    assert (
        main(
            [
                "cache",
                "--index",
                str(tmp_path / "index"),
                "--out",
                str(tmp_path / "cache"),
                "--size",
                "32",
                "--workers",
                "1",
                "--slices",
                "all",
            ]
        )
        == 0
    )
    return tmp_path, export, uids


def test_no_identifying_byte_in_share(built):
    tmp_path, export, uids = built
    assert (
        main(
            [
                "share",
                "--index",
                str(tmp_path / "index"),
                "--cache",
                str(tmp_path / "cache"),
                "--out",
                str(tmp_path / "share"),
            ]
        )
        == 0
    )
    share = tmp_path / "share"
    needles = {
        "SMITH",
        "JOHN",
        "DOE^JANE",
        "DOE_JANE",
        "JANE",
        MRN,
        MRN[3:],
        "8899887",
        BIRTH,
        STUDY_DATE,
        "Elsewhere",
        "follow-up of",
        "SMITH_protocol",
        "CT HEAD",
        "CT head",
        str(export),
        str(tmp_path),
        ROOT,
        *uids,
    }
    # the local index really holds them (the scan below has something to catch)
    index_bytes = (tmp_path / "index" / "index.parquet").read_bytes()
    for needle in ("SMITH_JOHN_MRN9912345", "follow-up of SMITH", uids[0]):
        assert needle.encode() in index_bytes, needle
    written = sorted(p for p in share.rglob("*") if p.is_file())
    assert [p.name for p in written] == sorted(SHARE_FILES)
    for path in written:
        blob = path.read_bytes()
        for needle in needles:
            for form in {needle, needle.lower(), needle.upper()}:
                assert form.encode() not in blob, (form, path.name)


def test_share_content_consistent_with_cache(built):
    tmp_path, _, _ = built
    report = share_dataset(index_dir=tmp_path / "index", cache_dir=tmp_path / "cache", out=tmp_path / "share")
    cache = load_cache(tmp_path / "cache")
    share = tmp_path / "share"
    np.testing.assert_array_equal(np.load(share / "images.npy"), np.asarray(cache.images))
    np.testing.assert_array_equal(np.load(share / "labels.npy"), cache.labels)
    m = pd.read_parquet(share / "manifest.parquet")
    assert tuple(m.columns) == SHARE_MANIFEST_COLUMNS and len(m) == len(cache) == 6
    assert report.n_patients == 2 and report.n_studies == 2 and report.n_series == 2
    assert all(
        re.fullmatch(r"2\.25\.[1-9]\d{0,38}", u) for col in ("image_uid", "series_uid", "study_uid") for u in m[col]
    )
    # one series -> one series_uid; images distinct; the same salt gives the same share
    assert m.groupby("series_uid")["patient_id"].nunique().eq(1).all() and m["image_uid"].is_unique
    assert m["modality_label"].tolist() == cache.manifest["modality_label"].tolist()
    json.loads((share / "labels.json").read_text())["label_names"] == list(cache.vocabulary.label_names)
    again = share_dataset(index_dir=tmp_path / "index", cache_dir=tmp_path / "cache", out=tmp_path / "again")
    pd.testing.assert_frame_equal(pd.read_parquet(again.path / "manifest.parquet"), m)
    other = share_dataset(
        index_dir=tmp_path / "index",
        cache_dir=tmp_path / "cache",
        out=tmp_path / "other",
        salt_file=tmp_path / "other_salt",
    )
    assert set(pd.read_parquet(other.path / "manifest.parquet")["image_uid"]).isdisjoint(m["image_uid"])


def test_bad_inputs_stop_with_one_line(built, capsys):
    tmp_path, _, _ = built
    with pytest.raises(InputError, match="must be outside"):
        share_dataset(index_dir=tmp_path / "index", cache_dir=tmp_path / "cache", out=tmp_path / "cache" / "share")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert (
        main(
            [
                "share",
                "--index",
                str(tmp_path / "index"),
                "--cache",
                str(tmp_path / "cache"),
                "--out",
                str(tmp_path / "full"),
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "share",
                "--index",
                str(tmp_path / "nope"),
                "--cache",
                str(tmp_path / "cache"),
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "not empty" in err and "does not exist" in err and "Traceback" not in err
    # a cache of another index is refused
    manifest = pd.read_parquet(tmp_path / "cache" / "manifest.parquet")
    manifest["index_row"] = manifest["index_row"][::-1].to_numpy()
    manifest.to_parquet(tmp_path / "cache" / "manifest.parquet", index=False)
    with pytest.raises(InputError, match="not built from index"):
        share_dataset(index_dir=tmp_path / "index", cache_dir=tmp_path / "cache", out=tmp_path / "s2")
