"""One salt per index: the index records a fingerprint of its salt (never the salt); a run with
another salt is refused with one line that says where the salt is and how to pass it."""

from __future__ import annotations

import pandas as pd
import pytest
from pydicom.data import get_testdata_file

from modan_pacs.errors import InputError
from modan_pacs.ingest import build_index, load_or_create_salt, salt_fingerprint
from modan_pacs.ingest.salt import FINGERPRINT_FILE


def _export(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        (folder / name).write_bytes(open(get_testdata_file(name), "rb").read())
    return folder


def test_fingerprint_recorded_and_another_salt_refused(tmp_path):
    export, out = _export(tmp_path), tmp_path / "index"
    salt_a, salt_b = tmp_path / "keys" / "a", tmp_path / "keys" / "b"
    build_index(export, out, workers=1, salt_file=salt_a)
    salt = load_or_create_salt(salt_a)
    recorded = (out / FINGERPRINT_FILE).read_text().strip()
    assert recorded == salt_fingerprint(salt) and recorded.startswith("sha256:") and len(recorded) == 7 + 16
    for blob in (p.read_bytes() for p in out.rglob("*") if p.is_file()):
        assert salt not in blob  # the salt itself is in no file of the index
    hashes = pd.read_parquet(out / "index.parquet")["patient_hash"].tolist()
    with pytest.raises(InputError, match="built with another salt") as info:
        build_index(export, out, workers=1, salt_file=salt_b)
    assert str(salt_b) in str(info.value) and "--salt-file" in str(info.value) and "\n" not in str(info.value)
    assert pd.read_parquet(out / "index.parquet")["patient_hash"].tolist() == hashes  # untouched
    build_index(export, out, workers=1, salt_file=salt_a)  # the right salt goes on


def test_a_folder_without_hashes_takes_the_new_salt(tmp_path):
    """A run that wrote no index (nothing found) does not bind the folder to its salt."""
    out = tmp_path / "index"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no DICOM image"):
        build_index(empty, out, workers=1, salt_file=tmp_path / "a")
    build_index(_export(tmp_path), out, workers=1, salt_file=tmp_path / "b")
    assert (out / FINGERPRINT_FILE).read_text().strip() == salt_fingerprint(load_or_create_salt(tmp_path / "b"))


def test_cli_refuses_with_one_line_and_exit_2(tmp_path, run_cli):
    export, out = _export(tmp_path), tmp_path / "index"
    build_index(export, out, workers=1, salt_file=tmp_path / "a")
    code, _, text = run_cli("index", export, "--out", out, "--workers", "1", "--salt-file", tmp_path / "b")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "another salt" in lines[0] and "Traceback" not in text, text


def test_pacs_index_binds_its_salt_the_same_way(tmp_path):
    """`index --pacs` hashes PatientIDs through the same salt loader, bound to its --out folder."""
    from modan_pacs.pacs.query import _patient_hasher

    out = tmp_path / "pacs_index"
    build_index(_export(tmp_path), out, workers=1, salt_file=tmp_path / "a")  # an index in the folder
    assert _patient_hasher(tmp_path / "a", out)("PAT1") is not None
    with pytest.raises(InputError, match="another salt"):
        _patient_hasher(tmp_path / "b", out)
