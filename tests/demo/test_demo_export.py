"""write_dicom_image round-trips through pydicom; the generated export is deterministic and has a DICOMDIR."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.fileset import FileSet

from modan_pacs.demo import SOP_CLASS_BY_MODALITY, export_plan, generate_export, real_dicom_sources, write_dicom_image
from modan_pacs.errors import InputError


@pytest.mark.parametrize(
    "modality,dtype",
    [
        ("CT", np.uint16),
        ("MR", np.uint16),
        ("US", np.uint8),
        ("CR", np.uint8),
        ("DX", np.uint16),
        ("MG", np.uint16),
        ("OT", np.uint8),
    ],
)
def test_write_dicom_image_roundtrip(tmp_path, modality, dtype):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, np.iinfo(dtype).max, size=(24, 40), dtype=dtype)
    path = write_dicom_image(
        tmp_path / "x.dcm", pixels, modality=modality, body_part="CHEST", anatomic_region=("51185008", "SCT", "Chest")
    )
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == SOP_CLASS_BY_MODALITY.get(modality, "1.2.840.10008.5.1.4.1.1.7")
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.Modality == modality
    assert np.array_equal(ds.pixel_array, pixels)
    assert ds.AnatomicRegionSequence[0].CodeValue == "51185008"
    with pytest.raises(InputError, match="uint8 or uint16"):
        write_dicom_image(tmp_path / "y.dcm", pixels.astype(np.float32), modality="CT")


def test_generate_export_deterministic_with_dicomdir(tmp_path):
    a = generate_export(tmp_path / "a", n_patients=3, seed=5)
    b = generate_export(tmp_path / "b", n_patients=3, seed=5)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    plan = export_plan(3, seed=5)
    fs = FileSet(a / "cd_import" / "DICOMDIR")
    in_dicomdir = {r["sop_instance_uid"] for r in plan if r["in_dicomdir"]}
    assert {inst.SOPInstanceUID for inst in fs} == in_dicomdir
    loose = [r for r in plan if not r["in_dicomdir"]]
    assert any(not r["relpath"].lower().endswith(".dcm") for r in loose)
    ds = pydicom.dcmread(a / loose[0]["relpath"])
    assert str(ds.PatientName) == loose[0]["patient_name"] and 64 <= ds.Rows <= 128
    assert ds.get("BodyPartExamined") == loose[0]["body_part"]


def test_real_dicom_sources_are_globbed():
    files = real_dicom_sources()
    names = {p.name for p in files}
    assert {"CT_small.dcm", "MR_small.dcm", "DICOMDIR", "US1_UNCR.dcm"} <= names
