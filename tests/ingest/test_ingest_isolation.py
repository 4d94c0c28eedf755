"""One file cannot stop `modan-pacs index`: a file that raises, hangs, or kills its reading process
becomes one errors.parquet row, and every other file is indexed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from modan_pacs.demo import write_dicom_image
from modan_pacs.ingest import build_index, load_index, read_header
from modan_pacs.ingest import headers as headers_module
from modan_pacs.ingest import workers as workers_module

SALT = b"isolation-salt"


@pytest.fixture()
def salt_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MODAN_PACS_SALT_FILE", str(tmp_path / "salt"))


def _export(root: Path, n: int) -> list[Path]:
    pixels = np.zeros((8, 8), np.uint8)
    return [
        write_dicom_image(
            root / f"s{i // 50:02d}" / f"f{i:04d}.dcm",
            pixels,
            modality="CT",
            body_part="CHEST",
            sop_instance_uid=f"1.2.826.0.1.3680043.10.1042.91.{i}",
        )
        for i in range(n)
    ]


def _misbehaving_reader(real):
    """read_header that crashes its process, hangs in Python, or hangs where no alarm reaches it,
    depending on the file name (the pool forks after the patch, so its workers run this)."""

    def read(path, salt, **kwargs):
        name = Path(path).name
        if name == "crash.dcm":
            os.kill(os.getpid(), signal.SIGKILL)  # what a segfaulting C decoder does to a worker
        if name == "oom.dcm":
            raise MemoryError  # read_header itself never raises; the process around it can fail
        if name == "hang.dcm":
            time.sleep(600)  # interruptible: the worker's alarm stops it
        if name == "stuck.dcm":
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # as if inside C code
            time.sleep(600)
        return real(path, salt, **kwargs)

    return read


@pytest.mark.parametrize("workers", [2, 1])
def test_crash_and_hang_cost_only_their_file(tmp_path, salt_env, monkeypatch, capfd, workers):
    files = _export(tmp_path / "export", 240)
    bad = {"crash.dcm": "worker_crashed", "hang.dcm": "timeout", "stuck.dcm": "timeout", "oom.dcm": "worker_crashed"}
    if workers == 1:  # in this process: an alarm stops a Python-level hang; nothing survives a crash or a C hang
        bad = {"hang.dcm": "timeout"}
    for i, name in enumerate(bad):
        files[40 + 50 * i].rename(files[40 + 50 * i].with_name(name))
    monkeypatch.setattr(headers_module, "read_header", _misbehaving_reader(headers_module.read_header))
    monkeypatch.setattr(workers_module, "KILL_GRACE", 0.5)
    start = time.monotonic()
    report = build_index(tmp_path / "export", tmp_path / "idx", workers=workers, chunk_size=30, file_timeout=1.0)
    assert time.monotonic() - start < 30
    tables = load_index(tmp_path / "idx")
    errors = dict(zip((Path(p).name for p in tables.errors["path"]), tables.errors["reason"]))
    assert errors == bad
    assert len(tables.frame) == 240 - len(bad)
    indexed = set(tables.frame["path"])
    walked = {str(p) for p in (tmp_path / "export").rglob("*") if p.is_file()}
    assert indexed | set(tables.errors["path"]) == walked and not indexed & set(tables.errors["path"])
    assert report.n_files == 240
    assert "Traceback" not in capfd.readouterr().err


def test_file_meta_value_pydicom_cannot_convert_is_a_row(tmp_path, pydicom_data_dir):
    """(0002,0003) written with VR UA: pydicom raises NotImplementedError converting it."""
    data = (pydicom_data_dir / "CT_small.dcm").read_bytes()
    at = data.index(b"\x02\x00\x03\x00UI")
    bad = tmp_path / "ua.dcm"
    bad.write_bytes(data[:at] + b"\x02\x00\x03\x00UA" + data[at + 6 :])
    with pytest.raises(NotImplementedError):
        pydicom.dcmread(bad).file_meta.get("MediaStorageSOPInstanceUID")
    reference = read_header(str(bad), SALT, dcmread_only=True)
    assert reference["error"] == "not_dicom" and "NotImplementedError" in reference["error_detail"]
    assert read_header(str(bad), SALT)["error"] in {None, "not_dicom", "corrupt_header"}


def test_unexpected_exception_is_a_corrupt_header_row(tmp_path, pydicom_data_dir, monkeypatch):
    def broken_fill(*args, **kwargs):
        raise AssertionError("a reader bug")

    monkeypatch.setattr(headers_module, "_check_pixels", broken_fill)
    rec = read_header(str(pydicom_data_dir / "CT_small.dcm"), SALT)
    assert rec["error"] == "corrupt_header" and rec["error_detail"] == "AssertionError: a reader bug"


def test_deflated_image_is_indexed(tmp_path, salt_env, pydicom_data_dir):
    """A real Deflated Explicit VR Little Endian Secondary Capture: indexed, fast walk == dcmread."""
    src = pydicom_data_dir / "image_dfl.dcm"
    ds = pydicom.dcmread(src)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1.99" and ds.pixel_array.shape == (512, 512)
    fast, reference = read_header(str(src), SALT), read_header(str(src), SALT, dcmread_only=True)
    assert fast["error"] is None and fast == reference
    assert (fast["rows"], fast["columns"], fast["sop_instance_uid"]) == (ds.Rows, ds.Columns, ds.SOPInstanceUID)
    data = src.read_bytes()
    for cut in (len(data) - 10, len(data) // 2, 400):  # a cut deflate stream is truncated, never an image
        (tmp_path / "cut.dcm").write_bytes(data[:cut])
        assert read_header(str(tmp_path / "cut.dcm"), SALT)["error"] in {"truncated", "not_dicom"}, cut
    export = tmp_path / "export"
    export.mkdir()
    (export / "dfl").write_bytes(data)
    tables = build_index(export, tmp_path / "idx", workers=1).tables
    assert list(tables.frame["transfer_syntax_uid"]) == ["1.2.840.10008.1.2.1.99"] and len(tables.errors) == 0


def test_special_files_and_link_loops_are_recorded_not_read(tmp_path, salt_env):
    export = tmp_path / "export"
    _export(export, 3)
    os.mkfifo(export / "pipe.dcm")  # opening it would wait for a writer forever
    (export / "loop_a").symlink_to(export / "loop_b")
    (export / "loop_b").symlink_to(export / "loop_a")
    (export / "dangling").symlink_to(export / "nowhere")
    (export / "to_folder").symlink_to(export / "s00")  # a folder link: skipped (no loops)
    (export / "to_file.dcm").symlink_to(next((export / "s00").iterdir()))
    tables = build_index(export, tmp_path / "idx", workers=1, file_timeout=5).tables
    errors = dict(zip((Path(p).name for p in tables.errors["path"]), tables.errors["reason"]))
    assert errors == {
        "pipe.dcm": "special_file",
        "loop_a": "unreadable",
        "loop_b": "unreadable",
        "dangling": "unreadable",
        "to_file.dcm": "duplicate_sop_instance",
    }


def test_value_arrow_cannot_store_costs_only_its_row(tmp_path):
    good = headers_module.error_row("a.dcm", "not_dicom", "x")
    names = headers_module.PART_SCHEMA.names
    bad = list(headers_module.error_row("b.dcm", "not_dicom", "x"))
    bad[names.index("error")] = None
    bad[names.index("rows")] = 1 << 40  # not an int32
    table = headers_module.write_part([good, tuple(bad)], str(tmp_path / "part-1.parquet"))
    assert table.column("path").to_pylist() == ["a.dcm", "b.dcm"]
    assert table.column("error").to_pylist() == ["not_dicom", "corrupt_header"]


def test_cli_file_timeout_default_is_the_library_default():
    import inspect

    from modan_pacs.cli.commands.index import index

    from modan_pacs.ingest.build import DEFAULT_FILE_TIMEOUT

    assert inspect.signature(index).parameters["file_timeout"].default == DEFAULT_FILE_TIMEOUT


def test_error_detail_is_one_printable_line_without_long_quoted_values():
    detail = headers_module._safe_detail(
        "ValueError: invalid literal for int(): 'Doe^Archibald Lestrade'\ntag (0002,0003) VR 'UA'\x00\x02 " + "x" * 400
    )
    assert "Archibald" not in detail and "<22 characters>" in detail and "'UA'" in detail
    assert detail.isprintable() and len(detail) == 300
