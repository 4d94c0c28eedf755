"""build_index / write_index / relabel end to end on real and generated files."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from modan_pacs.cli.main import main
from PIL import Image

from modan_pacs.demo import export_plan, generate_export, real_dicom_sources, write_dicom_image
from modan_pacs.ingest import build_index, load_index, relabel, write_index
from modan_pacs.ingest import headers as headers_module
from modan_pacs.labels import Vocabulary

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def salt_env(tmp_path, monkeypatch):
    path = tmp_path / "salt_outside" / "salt"
    monkeypatch.setenv("MODAN_PACS_SALT_FILE", str(path))
    return path


def test_real_pydicom_files_modality_equals_header(tmp_path, salt_env):
    sources = real_dicom_sources()
    report = build_index(sources[0].parent.parent, tmp_path / "idx", workers=1)  # pydicom/data
    extra = build_index(sources[-1].parent, tmp_path / "idx_extra", workers=1).tables.frame  # pydicom-data
    assert {"CT", "MR", "US", "CR", "NM"} <= set(extra["modality"])
    for row in extra.itertuples():
        assert row.modality == (pydicom.dcmread(row.path, stop_before_pixels=True, force=True).get("Modality") or None)
    frame = report.tables.frame
    assert len(frame) > 50 and frame["sop_instance_uid"].is_unique
    for row in frame.itertuples():
        ds = pydicom.dcmread(row.path, stop_before_pixels=True, force=True)
        assert row.modality == (ds.get("Modality") or None)
    # dicomdirtests studies: CR cervical spine, CT head, MR
    dd = frame[frame["path"].str.contains("dicomdirtests/")]
    assert set(dd["modality"]) == {"CR", "CT", "MR"}
    cr = dd[dd["modality"] == "CR"]
    assert (cr["modality_label"] == "radiograph").all() and (cr["anatomy_label"] == "spine").all()
    reasons = dict(zip(report.tables.errors["path"].map(lambda p: Path(p).name), report.tables.errors["reason"]))
    assert reasons["DICOMDIR"] == "dicomdir" and reasons["test-SR.dcm"] == "not_an_image"
    assert reasons["MR_truncated.dcm"] == "truncated" and reasons["README.txt"] == "not_dicom"
    indexed_or_error = set(frame["path"]) | set(report.tables.errors["path"])
    assert {str(p) for p in sources if "test_files" in str(p)} <= indexed_or_error  # every file accounted for
    labels = report.tables.labels
    assert labels.shape == (len(frame), len(report.tables.vocabulary.label_names))
    assert np.array_equal(labels, np.load(tmp_path / "idx" / "labels.npy"))


def test_messy_export_anatomy_and_source(tmp_path, salt_env):
    export = generate_export(tmp_path / "export", n_patients=10, seed=3)
    plan = pd.DataFrame(export_plan(10, seed=3))
    tables = build_index(export, tmp_path / "idx", workers=1).tables
    got = tables.frame.set_index("sop_instance_uid")
    assert set(got.index) == set(plan["sop_instance_uid"])
    for rec in plan.itertuples():
        row = got.loc[rec.sop_instance_uid]
        want = rec.anatomy if isinstance(rec.anatomy, str) else None
        have = row["anatomy_label"] if isinstance(row["anatomy_label"], str) else None
        assert (have, row["anatomy_source"]) == (want, rec.source), rec
    assert plan["in_dicomdir"].any() and got["path"].str.contains("cd_import").any()
    assert set(tables.errors["reason"]) == {"dicomdir", "not_dicom"}  # the DICOMDIR and README.TXT
    assert (got["modality_label"] == "radiograph").sum() == plan["modality"].isin(["CR", "DX"]).sum()
    series = tables.series.set_index("series_instance_uid")
    assert series["n_instances"].to_dict() == plan.groupby("series_instance_uid").size().to_dict()
    summary = pd.read_csv(tmp_path / "idx" / "label_summary.csv")
    assert summary["n_instances"].sum() == len(plan)
    unmapped = pd.read_csv(tmp_path / "idx" / "unmapped.csv")
    assert "localizer" in set(unmapped["raw_value"])


def _broken_corpus(root: Path, pydicom_data_dir: Path) -> dict[str, set[str]]:
    """Good and broken files; returns {file name: allowed reasons} for the broken ones."""
    root.mkdir(parents=True)
    ct = (pydicom_data_dir / "CT_small.dcm").read_bytes()
    shutil.copy(pydicom_data_dir / "CT_small.dcm", root / "good_ct.dcm")
    shutil.copy(pydicom_data_dir / "MR_small.dcm", root / "good_mr")
    expected: dict[str, set[str]] = {}
    (root / "empty.dcm").write_bytes(b"")
    expected["empty.dcm"] = {"empty_file"}
    (root / "random.bin").write_bytes(np.random.default_rng(0).bytes(5000))
    expected["random.bin"] = {"not_dicom"}
    for cut in (100, 500, 3000, 20000):
        (root / f"trunc_{cut}.dcm").write_bytes(ct[:cut])
        # a cut between two header elements leaves a valid header without pixels
        expected[f"trunc_{cut}.dcm"] = {"truncated", "not_dicom", "no_pixel_data"}
    expected["trunc_20000.dcm"] = {"truncated"}
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "image.png", format="PNG")
    (root / "image.png").rename(root / "picture.dcm")
    expected["picture.dcm"] = {"not_dicom"}
    (root / "cd").mkdir()
    shutil.copy(pydicom_data_dir / "dicomdirtests" / "DICOMDIR", root / "cd" / "DICOMDIR")
    expected["DICOMDIR"] = {"dicomdir"}
    shutil.copy(pydicom_data_dir / "test-SR.dcm", root / "report.dcm")
    expected["report.dcm"] = {"not_an_image"}
    ds = pydicom.dcmread(pydicom_data_dir / "CT_small.dcm")
    del ds.PixelData
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".9"
    ds.save_as(root / "nopixels.dcm")
    expected["nopixels.dcm"] = {"no_pixel_data"}
    write_dicom_image(root / "locked.dcm", np.zeros((8, 8), np.uint8), modality="CT")
    (root / "locked.dcm").chmod(0)
    expected["locked.dcm"] = {"permission_denied"}
    return expected


def test_broken_corpus_all_in_errors_exit_zero(tmp_path, salt_env, pydicom_data_dir, monkeypatch):
    expected = _broken_corpus(tmp_path / "corpus", pydicom_data_dir)
    if os.geteuid() == 0:  # root reads mode-000 files; deny it the way the kernel would for a user
        real_open = open

        def guarded_open(file, *args, **kwargs):
            if str(file).endswith("locked.dcm"):
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(headers_module, "open", guarded_open, raising=False)
    rc = main(["index", str(tmp_path / "corpus"), "--out", str(tmp_path / "idx"), "--workers", "1"])
    assert rc == 0
    tables = load_index(tmp_path / "idx")
    assert sorted(Path(p).name for p in tables.frame["path"]) == ["good_ct.dcm", "good_mr"]
    errors = {Path(p).name: r for p, r in zip(tables.errors["path"], tables.errors["reason"])}
    missing_refs = {n for n, r in errors.items() if r == "missing_referenced_file"}
    assert missing_refs  # the copied DICOMDIR references files that are not there
    for name, allowed in expected.items():
        assert errors.get(name) in allowed, (name, errors.get(name))
    (tmp_path / "corpus" / "locked.dcm").chmod(0o644)


@pytest.mark.parametrize("target", ["missing", "nodicom"])
def test_bad_path_one_line_nonzero(tmp_path, salt_env, target, run_cli):
    path = tmp_path / target
    if target == "nodicom":
        path.mkdir()
        (path / "notes.txt").write_text("hello")
    code, _, text = run_cli("index", path, "--out", tmp_path / "out")
    assert code != 0
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and str(path) in lines[0], text


def test_rerun_idempotent_and_incremental(tmp_path, salt_env):
    export = generate_export(tmp_path / "export", n_patients=4, seed=1)
    first = build_index(export, tmp_path / "idx", workers=1)
    frame1 = pd.read_parquet(tmp_path / "idx" / "index.parquet")
    second = build_index(export, tmp_path / "idx", workers=1)
    assert second.n_read == 0 and second.n_unchanged == first.n_files
    pd.testing.assert_frame_equal(frame1, pd.read_parquet(tmp_path / "idx" / "index.parquet"))
    new = write_dicom_image(export / "late" / "new.dcm", np.ones((8, 8), np.uint16), modality="MR", body_part="KNEE")
    victim = Path(frame1["path"].iloc[0])
    victim.unlink()
    third = build_index(export, tmp_path / "idx", workers=1)
    assert third.n_read == 1
    frame3 = third.tables.frame
    assert str(new) in set(frame3["path"]) and str(victim) not in set(frame3["path"])
    assert len(frame3) == len(frame1) and frame3["sop_instance_uid"].is_unique
    assert len(list((tmp_path / "idx" / ".ingest").glob("part-*.parquet"))) == 1  # compacted


def test_sigkill_then_resume_same_rows(tmp_path, salt_env):
    export = tmp_path / "many"
    pixels = np.zeros((8, 8), np.uint8)
    n = 800
    sops = [f"1.2.826.0.1.3680043.10.1042.77.{i}" for i in range(n)]
    for i, sop in enumerate(sops):
        write_dicom_image(
            export / f"d{i // 100:02d}" / f"{i:05d}", pixels, modality="CT", body_part="CHEST", sop_instance_uid=sop
        )
    out = tmp_path / "idx"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from modan_pacs.cli.main import main; sys.exit(main(sys.argv[1:]))",
            "index",
            str(export),
            "--out",
            str(out),
            "--workers",
            "2",
            "--chunk-size",
            "10",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list((out / ".ingest").glob("part-*.parquet"))) < 6:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its worker processes
    proc.wait()
    parts_at_kill = len(list((out / ".ingest").glob("part-*.parquet")))
    assert 6 <= parts_at_kill < n // 10 and not (out / "index.parquet").exists(), parts_at_kill
    resumed = build_index(export, out, workers=1)
    assert 0 < resumed.n_read <= n - 10 * parts_at_kill  # parts written before the kill are not read again
    frame = resumed.tables.frame
    assert len(frame) == n and frame["sop_instance_uid"].is_unique
    assert sorted(frame["sop_instance_uid"]) == sorted(sops)
    assert len(resumed.tables.errors) == 0


def test_no_phi_in_any_output_byte(tmp_path, salt_env):
    export = generate_export(tmp_path / "export", n_patients=6, seed=7)
    plan = export_plan(6, seed=7)
    out = tmp_path / "idx"
    assert main(["index", str(export), "--out", str(out), "--workers", "1"]) == 0
    assert main(["labels", str(out)]) == 0
    needles = set()
    for rec in plan:
        needles |= {
            rec["patient_id"],
            rec["patient_name"],
            rec["patient_birth_date"],
            rec["patient_address"],
            rec["patient_name"].split("^")[0],
        }
    needles |= {"Springfield", "DR^NOBODY"}
    # the generated files really carry them (the check below has something to catch)
    assert any(plan[-1]["patient_name"].encode() in p.read_bytes() for p in export.rglob("*") if p.is_file())
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {
        "index.parquet",
        "labels.npy",
        "vocabulary.yaml",
        "errors.parquet",
        "series.parquet",
        "label_summary.csv",
        "unmapped.csv",
    }
    for path in written:
        blob = path.read_bytes()
        for needle in needles:
            assert needle.encode() not in blob, (needle, path)


def test_relabel_without_reading_files(tmp_path, salt_env):
    export = generate_export(tmp_path / "export", n_patients=4, seed=2)
    out = tmp_path / "idx"
    before = build_index(export, out, workers=1).tables
    shutil.rmtree(export)  # nothing left to read
    vocab = Vocabulary.load()
    data = __import__("yaml").safe_load(vocab.to_yaml())
    data.pop("label_names")
    data["unknown_anatomy"] = "drop"
    data["anatomies"] = [
        dict(a, refines=[r for r in a["refines"] if r != "lung"]) for a in data["anatomies"] if a["name"] != "lung"
    ]
    data["multi_regions"] = [
        m for m in data["multi_regions"] if "lung" not in m["anatomies"]
    ]  # a vocabulary names only its anatomies
    custom = tmp_path / "custom.yaml"
    custom.write_text(__import__("yaml").safe_dump(data))
    assert main(["labels", str(out), "--vocab", str(custom)]) == 0
    after = load_index(out)
    assert "anatomy:lung" not in after.vocabulary.label_names
    kept = before.frame[before.frame["anatomy_label"].notna() & (before.frame["anatomy_label"] != "lung")]
    assert set(after.frame["sop_instance_uid"]) == set(kept["sop_instance_uid"])
    assert after.labels.shape == (len(kept), len(after.vocabulary.label_names))
    back = relabel(out, None)  # dropped rows come back with the default vocabulary
    assert set(back.frame["sop_instance_uid"]) == set(before.frame["sop_instance_uid"])
    assert np.array_equal(back.labels, before.labels)


def test_write_index_for_pacs_records(tmp_path):
    frame = pd.DataFrame(
        {
            "sop_instance_uid": ["1.2.3", "1.2.4", "1.2.3"],
            "series_instance_uid": ["9.1", "9.1", "9.1"],
            "modality": ["CT", "CT", "CT"],
            "body_part_examined": ["THORAX", None, "THORAX"],
            "location": [
                "pacs://ORTHANC@h:4242/s/9.1/1.2.3",
                "pacs://ORTHANC@h:4242/s/9.1/1.2.4",
                "pacs://X@h:1/s/9.1/1.2.3",
            ],
        }
    )
    tables = write_index(frame, tmp_path / "pacs", Vocabulary.load())
    assert tables.frame["sop_instance_uid"].tolist() == ["1.2.3", "1.2.4"]
    assert tables.frame["anatomy_label"].tolist()[0] == "lung" and tables.frame["path"].isna().all()
    assert tables.errors["reason"].tolist() == ["duplicate_sop_instance"]
    with pytest.raises(Exception, match="PatientName"):
        write_index(frame.assign(PatientName="X"), tmp_path / "bad", Vocabulary.load())


def test_help_does_not_import_torch():
    code = (
        "import sys; from modan_pacs.cli.main import main\n"
        "for args in (['--help'], ['index', '--help'], ['labels', '--help']):\n"
        "    main(args)\n"
        "bad = [m for m in ('torch', 'monai', 'pydicom') if m in sys.modules]\n"
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "--pacs" in proc.stdout and "--workers" in proc.stdout


def test_vectorised_normalise_equals_value_by_value():
    """Parquet parts give string / numeric columns (vectorised path); the same values as Python
    objects take the value-by-value path; both must give the same contract columns."""
    from modan_pacs.ingest.store import _normalise_raw

    frame = pd.DataFrame(
        {
            "sop_instance_uid": pd.array(["1.2.3", " 1.2.4 ", "1.2.5", "1.2.6"], dtype="string"),
            "modality": pd.array(["CT", "  ", None, " MR"], dtype="string"),
            "series_description": pd.array(["Ax 1.25mm ", "", "chest\t", None], dtype="string"),
            "rows": pd.array([512, None, 256, 64], dtype="Int32").astype("float64"),  # nulls make Parquet ints floats
            "number_of_frames": np.array([1, 2, 3, 4], dtype=np.int32),
            "size": np.array([10, 20, 30, 40], dtype=np.int64),
            "mtime": np.array([1.5, np.nan, 2.5, 3.0]),
        }
    )
    fast = _normalise_raw(frame)
    slow = _normalise_raw(frame.astype(object))
    pd.testing.assert_frame_equal(fast, slow)
    assert fast["modality"].tolist() == ["CT", None, None, "MR"]
    assert fast["series_description"].tolist() == ["Ax 1.25mm", None, "chest", None]
    assert fast["sop_instance_uid"].tolist()[1] == "1.2.4"
    assert fast["rows"].tolist() == [512, pd.NA, 256, 64] and str(fast["rows"].dtype) == "Int32"
    assert str(fast["mtime"].dtype) == "Float64" and fast["mtime"].isna().tolist() == [False, True, False, False]
    # a non-whole float in an integer column is truncated, as value by value
    odd = _normalise_raw(frame.assign(columns=np.array([1.5, 2.0, np.nan, 4.0])))
    assert odd["columns"].tolist() == [1, 2, pd.NA, 4]


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_vocabulary_fails_cleanly_before_any_output(tmp_path, salt_env, capsys, workers):
    """A bad or missing --vocab file stops the run with one line, exit code != 0 and no index file;
    the same export then indexes with the shipped vocabulary."""
    pixels = np.zeros((8, 8), np.uint8)
    export = tmp_path / "export"
    for i in range(260):  # above the pool threshold
        write_dicom_image(export / f"{i:04d}.dcm", pixels, modality="CT", body_part="CHEST")
    good = Vocabulary.load()
    data = __import__("yaml").safe_load(good.to_yaml())
    data["anatomys"] = data.pop("anatomies")  # a typo in a key
    bad = tmp_path / "bad.yaml"
    bad.write_text(__import__("yaml").safe_dump(data))
    out = tmp_path / "idx"
    code = main(["index", str(export), "--out", str(out), "--workers", str(workers), "--vocab", str(bad)])
    err = capsys.readouterr().err
    assert (
        code != 0 and "anatomys" in err and "did you mean 'anatomies'" in err and len(err.strip().splitlines()) == 1
    ), err
    assert not (out / "index.parquet").exists() and not (out / "labels.npy").exists()
    code = main(["index", str(export), "--out", str(out), "--vocab", str(tmp_path / "missing.yaml")])
    err = capsys.readouterr().err
    assert code != 0 and "missing.yaml" in err and "does not exist" in err
    # the same export indexes with the shipped vocabulary
    assert main(["index", str(export), "--out", str(out), "--workers", str(workers)]) == 0
    assert len(load_index(out).frame) == 260


def test_pull_store_log_is_not_indexed_but_a_user_file_of_that_name_is(tmp_path, salt_env):
    from modan_pacs.ingest.walk import OWN_LOG
    from modan_pacs.pacs.store import LOG_NAME

    assert OWN_LOG == LOG_NAME
    store = tmp_path / "store"
    write_dicom_image(
        store / "1.2" / "1.2.3" / "1.2.3.4.dcm", np.zeros((8, 8), np.uint8), modality="CT", body_part="CHEST"
    )
    (store / LOG_NAME).write_text('{"event": "arrived", "sop": "1.2.3.4"}\n')
    (store / "1.2" / LOG_NAME).write_text("not a log of ours\n")  # a user's file deeper down: reported
    report = build_index(store, tmp_path / "idx", workers=1)
    assert len(report.tables.frame) == 1
    assert [Path(p).relative_to(store).as_posix() for p in report.tables.errors["path"]] == [f"1.2/{LOG_NAME}"]


def test_walk_while_reading_gives_the_same_index(tmp_path, salt_env, monkeypatch):
    """A large export is walked while the workers read (here forced with a small walk-ahead and
    chunk): the index equals the one read in one process after a full walk; a re-run reads nothing."""
    import modan_pacs.ingest.build as build_module

    pixels = np.zeros((8, 8), np.uint8)
    export = tmp_path / "export"
    for i in range(300):
        write_dicom_image(export / f"s{i // 40}" / f"{i:04d}.dcm", pixels, modality="CT", body_part="CHEST")
    (export / "s3" / "junk.dcm").write_bytes(b"not dicom at all")
    reference = build_index(export, tmp_path / "one", workers=1)
    monkeypatch.setattr(build_module, "_WALK_AHEAD", 50)
    monkeypatch.setattr(build_module, "_STREAM_CHUNK", 20)
    streamed = build_index(export, tmp_path / "two", workers=2)
    assert streamed.n_read == 301 and streamed.n_files == 301
    columns = [c for c in reference.tables.frame.columns if c not in ("mtime",)]
    pd.testing.assert_frame_equal(streamed.tables.frame[columns], reference.tables.frame[columns])
    np.testing.assert_array_equal(streamed.tables.labels, reference.tables.labels)
    assert streamed.tables.errors["path"].tolist() == reference.tables.errors["path"].tolist()
    again = build_index(export, tmp_path / "two", workers=2)
    assert again.n_read == 0 and again.n_unchanged == 301
    pd.testing.assert_frame_equal(again.tables.frame[columns], streamed.tables.frame[columns])
