"""read_header on real pydicom files and on a corpus of broken files; the salt file."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from modan_pacs.demo import write_dicom_image
from modan_pacs.errors import InputError
from modan_pacs.ingest import load_or_create_salt, patient_hash, read_header

SALT = b"test-salt"


def test_real_files_match_pydicom(pydicom_data_dir, pydicom_extra_data_dir):
    names = [
        pydicom_data_dir / "CT_small.dcm",
        pydicom_data_dir / "MR_small.dcm",
        pydicom_extra_data_dir / "US1_UNCR.dcm",
        pydicom_extra_data_dir / "RG1_UNCR.dcm",
        pydicom_data_dir / "dicomdirtests" / "77654033" / "CR1" / "6154",
        pydicom_extra_data_dir / "emri_small_jpeg_2k_lossless.dcm",
    ]
    for path in names:
        rec = read_header(str(path), SALT)
        ds = pydicom.dcmread(path)  # independent full read
        assert rec["error"] is None, (path, rec["error_detail"])
        assert rec["modality"] == ds.Modality
        assert rec["sop_instance_uid"] == ds.SOPInstanceUID
        assert rec["rows"] == ds.Rows and rec["columns"] == ds.Columns
        assert rec["number_of_frames"] == int(ds.get("NumberOfFrames", 1))
        assert rec["transfer_syntax_uid"] == ds.file_meta.TransferSyntaxUID
        assert rec["patient_hash"] == patient_hash(ds.PatientID, SALT)
        assert rec["body_part_examined"] == (ds.get("BodyPartExamined") or None)


def _denied_in_child(path: str) -> str | None:
    """read_header as user nobody in a forked child (root can read anything)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            reason = read_header(path, SALT)["error"] or "none"
            os.write(w, reason.encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r) as fh:
        return fh.read()


def test_permission_denied_is_reported():
    base = Path(tempfile.mkdtemp(prefix="modan-perm-"))
    try:
        base.chmod(0o755)
        f = write_dicom_image(base / "secret.dcm", np.zeros((8, 8), np.uint8), modality="CT")
        f.chmod(0)
        if os.geteuid() == 0:
            assert _denied_in_child(str(f)) == "permission_denied"
        else:
            assert read_header(str(f), SALT)["error"] == "permission_denied"
    finally:
        for p in base.iterdir():
            p.chmod(stat.S_IRUSR | stat.S_IWUSR)
            p.unlink()
        base.rmdir()


def test_truncation_offsets(tmp_path, pydicom_data_dir):
    src = pydicom_data_dir / "CT_small.dcm"
    data = src.read_bytes()
    elem = pydicom.dcmread(src)["PixelData"]
    pixel_end = elem.file_tell + len(elem.value)  # file_tell: where the value starts
    for cut in (60, 131, 300, 1000, 4000):  # preamble, meta, dataset
        p = tmp_path / f"cut{cut}.dcm"
        p.write_bytes(data[:cut])
        assert read_header(str(p), SALT)["error"] in {"truncated", "not_dicom", "no_pixel_data"}, cut
    for cut in (elem.file_tell + 100, pixel_end - 1):  # inside the pixel data
        p = tmp_path / f"cut{cut}.dcm"
        p.write_bytes(data[:cut])
        assert read_header(str(p), SALT)["error"] == "truncated", cut
    p = tmp_path / "complete_pixels.dcm"  # only the trailing padding after the pixels is cut
    p.write_bytes(data[:pixel_end])
    assert read_header(str(p), SALT)["error"] is None


def test_salt_file_created_private_and_outside_index(tmp_path):
    salt_path = tmp_path / "cfg" / "salt"
    salt = load_or_create_salt(salt_path)
    assert len(salt) == 64 and stat.S_IMODE(salt_path.stat().st_mode) == 0o600
    assert load_or_create_salt(salt_path) == salt
    with pytest.raises(InputError, match="inside the index"):
        load_or_create_salt(tmp_path / "idx" / "salt", forbidden_dir=tmp_path / "idx")
    assert patient_hash("123", salt) != patient_hash("123", b"other") and patient_hash(" ", salt) is None


def _long_header_ct(path: Path, pydicom_data_dir: Path, private_bytes: int = 102_400) -> Path:
    """CT_small with a large private element before the pixels (header longer than the first read)."""
    ds = pydicom.dcmread(pydicom_data_dir / "CT_small.dcm")
    block = ds.private_block(0x0029, "MODAN TEST", create=True)
    block.add_new(0x10, "OB", bytes(range(256)) * (private_bytes // 256))
    ds.save_as(path)
    return path


def test_fast_walk_matches_dcmread(tmp_path, pydicom_data_dir, pydicom_extra_data_dir):
    """The in-memory element walk gives exactly the record pydicom.dcmread gives, good file or broken."""
    from modan_pacs.demo import generate_export

    files = [p for root in (pydicom_data_dir, pydicom_extra_data_dir) for p in root.rglob("*") if p.is_file()]
    files += [p for p in generate_export(tmp_path / "export", n_patients=2, seed=3).rglob("*") if p.is_file()]
    long_ct = _long_header_ct(tmp_path / "long_header.dcm", pydicom_data_dir)
    huge_ct = _long_header_ct(tmp_path / "huge_header.dcm", pydicom_data_dir, private_bytes=3 << 20)
    files += [long_ct, huge_ct, tmp_path / "huge_cut.dcm"]
    (tmp_path / "huge_cut.dcm").write_bytes(huge_ct.read_bytes()[: 2 << 20])  # cut inside the private element
    for src in (pydicom_data_dir / "CT_small.dcm", long_ct, pydicom_extra_data_dir / "emri_small_jpeg_2k_lossless.dcm"):
        data = src.read_bytes()
        for cut in [*range(0, len(data), max(1, len(data) // 60)), len(data) - 1]:
            p = tmp_path / f"{src.stem}_cut{cut}.dcm"
            p.write_bytes(data[:cut])
            files.append(p)
    reasons = set()
    for path in files:
        fast = read_header(str(path), SALT)
        reference = read_header(str(path), SALT, dcmread_only=True)
        fast.pop("error_detail"), reference.pop("error_detail")
        assert fast == reference, path
        reasons.add(fast["error"])
    assert {None, "truncated", "no_pixel_data", "not_dicom", "dicomdir", "not_an_image"} <= reasons
    assert read_header(str(long_ct), SALT)["error"] is None and read_header(str(huge_ct), SALT)["error"] is None
    assert read_header(str(tmp_path / "huge_cut.dcm"), SALT)["error"] == "truncated"
