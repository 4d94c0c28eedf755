"""C-ECHO and C-FIND indexing against a real Orthanc loaded with real files."""

from __future__ import annotations

import shutil

import pytest
from pydicom import dcmread

pytestmark = [pytest.mark.pacs, pytest.mark.xdist_group("pacs")]


def _headers(files):
    return {uid: dcmread(path, stop_before_pixels=True) for uid, path in files.items()}


def test_echo_round_trip(loaded_pacs):
    from modan_pacs.pacs import echo

    assert echo(loaded_pacs.settings) < 1.0


def test_find_counts_equal_what_was_loaded(loaded_pacs):
    import pandas as pd

    from modan_pacs.pacs import PacsQuery, query_pacs

    headers = _headers(loaded_pacs.files)
    frame = query_pacs(loaded_pacs.settings, PacsQuery(level="image"))
    assert sorted(frame["sop_instance_uid"]) == sorted(headers)
    assert frame["series_instance_uid"].nunique() == len({str(h.SeriesInstanceUID) for h in headers.values()})
    assert frame["study_instance_uid"].nunique() == len({str(h.StudyInstanceUID) for h in headers.values()})
    by_uid = frame.set_index("sop_instance_uid")
    for uid, header in headers.items():
        assert by_uid.loc[uid, "modality"] == (header.get("Modality") or None)
        assert by_uid.loc[uid, "sop_class_uid"] == str(header.SOPClassUID)
        rows = by_uid.loc[uid, "rows"]
        assert (None if rows is pd.NA else rows) == header.get("Rows")
        assert by_uid.loc[uid, "location"] == (
            f"pacs://{loaded_pacs.settings.label}/{header.StudyInstanceUID}/{header.SeriesInstanceUID}/{uid}"
        )
    assert frame["path"].isna().all()


def test_patient_root_and_cheaper_levels_give_the_same_instances(loaded_pacs):
    from modan_pacs.pacs import PacsQuery, query_pacs

    expected = sorted(loaded_pacs.files)
    for level, model in (("image", "patient"), ("series", "study"), ("study", "auto")):
        frame = query_pacs(loaded_pacs.settings, PacsQuery(level=level, query_model=model))
        assert sorted(frame["sop_instance_uid"]) == expected, (level, model)
    series_level = query_pacs(loaded_pacs.settings, PacsQuery(level="series")).set_index("sop_instance_uid")
    assert series_level["rows"].isna().all()  # image attributes are not asked for at series level


def test_date_and_modality_slices_match_a_header_count(loaded_pacs):
    import datetime as dt

    from modan_pacs.pacs import PacsQuery, query_pacs
    from modan_pacs.pacs.query import date_slices

    headers = _headers(loaded_pacs.files)

    def in_range(h, lo, hi):
        return bool(h.get("StudyDate")) and lo <= str(h.StudyDate) <= hi

    # 2001-01-01 .. 2004-12-31 in 200-day windows: 8 separate queries whose union is the range
    assert len(date_slices(dt.date(2001, 1, 1), dt.date(2004, 12, 31), 200)) == 8
    calls = []
    frame = query_pacs(
        loaded_pacs.settings,
        PacsQuery(date_from="2001-01-01", date_to="20041231", slice_days=200),
        progress=lambda *args: calls.append(args),
    )
    assert calls == [(k, 8, f"C-FIND {loaded_pacs.settings.label}") for k in range(9)]  # progress: slices done
    expected = {u for u, h in headers.items() if in_range(h, "20010101", "20041231")}
    assert set(frame["sop_instance_uid"]) == expected and expected
    frame = query_pacs(loaded_pacs.settings, PacsQuery(modalities="CT,CR"))
    assert set(frame["sop_instance_uid"]) == {u for u, h in headers.items() if h.get("Modality") in ("CT", "CR")}


def test_pacs_index_labels_equal_folder_index_labels(loaded_pacs, tmp_path):
    from modan_pacs.ingest import build_index, load_index
    from modan_pacs.pacs import PacsQuery, build_pacs_index

    folder = tmp_path / "export"
    folder.mkdir()
    for n, path in enumerate(loaded_pacs.files.values()):
        shutil.copy(path, folder / f"{n:03d}.dcm")
    salt = tmp_path / "salt"
    build_index(folder, tmp_path / "folder_index", workers=1, salt_file=salt)
    s = loaded_pacs.settings
    build_pacs_index(
        s,
        PacsQuery(level="image"),
        out_dir=tmp_path / "pacs_index",
        vocabulary=None,
        salt_file=salt,
    )
    from_folder = load_index(tmp_path / "folder_index")
    from_pacs = load_index(tmp_path / "pacs_index")
    assert from_pacs.vocabulary.label_names == from_folder.vocabulary.label_names
    folder_rows = from_folder.frame.set_index("sop_instance_uid")
    pacs_rows = from_pacs.frame.set_index("sop_instance_uid")
    # every instance the folder index kept is in the PACS index; the PACS cannot see that the
    # others (TINY_ALPHA) lack pixel data, which is the folder index's only reason to drop them
    assert set(folder_rows.index) <= set(pacs_rows.index)
    extra = set(pacs_rows.index) - set(folder_rows.index)
    assert set(from_folder.errors["reason"]) == {"no_pixel_data"} and len(extra) == len(from_folder.errors)
    common = sorted(folder_rows.index)
    assert len(common) >= 30
    pacs_labels = {u: row for u, row in zip(from_pacs.frame["sop_instance_uid"], from_pacs.labels)}
    folder_labels = {u: row for u, row in zip(from_folder.frame["sop_instance_uid"], from_folder.labels)}
    for uid in common:
        assert (pacs_labels[uid] == folder_labels[uid]).all(), uid
    for column in ("modality_label", "anatomy_label", "anatomy_source", "patient_hash", "body_part_examined"):
        assert (
            folder_rows.loc[common, column].fillna("-").tolist() == pacs_rows.loc[common, column].fillna("-").tolist()
        ), column


def test_pacs_index_holds_no_raw_patient_id(loaded_pacs, tmp_path):
    import pandas as pd

    from modan_pacs.pacs import PacsQuery, build_pacs_index

    s = loaded_pacs.settings
    build_pacs_index(
        s,
        PacsQuery(level="series"),
        out_dir=tmp_path / "idx",
        vocabulary=None,
        salt_file=tmp_path / "salt",
    )
    text = (tmp_path / "idx" / "index.parquet").read_bytes()
    patient_ids = {str(dcmread(p, stop_before_pixels=True).get("PatientID") or "") for p in loaded_pacs.files.values()}
    for pid in patient_ids - {""}:
        if len(pid) >= 5:  # short ids could collide with other bytes by chance
            assert pid.encode() not in text, pid
    frame = pd.read_parquet(tmp_path / "idx" / "index.parquet")
    assert frame["patient_hash"].dropna().str.fullmatch(r"[0-9a-f]{64}").all()


def test_find_filters_on_any_key_at_its_level(loaded_pacs, tmp_path, capsys):
    """`index --pacs --filter KEY=VALUE` (repeatable) matches like findscu's -k, at study, series and image level."""
    import pandas as pd
    from modan_pacs.cli.main import main

    from modan_pacs.pacs import PacsQuery, query_pacs

    headers = _headers(loaded_pacs.files)

    def expected(test):
        return sorted(u for u, h in headers.items() if test(h))

    frame = query_pacs(loaded_pacs.settings, PacsQuery(level="series", filters=["StudyDescription=*Brain*"]))
    assert sorted(frame["sop_instance_uid"]) == expected(lambda h: "Brain" in str(h.get("StudyDescription", "")))
    frame = query_pacs(
        loaded_pacs.settings, PacsQuery(level="series", filters={"SeriesDescription": "Cervical*", "Modality": "CR"})
    )
    assert sorted(frame["sop_instance_uid"]) == expected(
        lambda h: str(h.get("SeriesDescription", "")).startswith("Cervical") and h.get("Modality") == "CR"
    )
    assert len(frame) == 3
    s = loaded_pacs.settings
    rc = main(
        [
            "index",
            "--pacs",
            f"{s.host}:{s.port}",
            "--called-aet",
            s.called_aet,
            "--out",
            str(tmp_path / "idx"),
            "--salt-file",
            str(tmp_path / "salt"),
            "--filter",
            "StudyDescription=*Brain*",
            "--filter",
            "Modality=MR",
        ]
    )
    assert rc == 0
    got = sorted(pd.read_parquet(tmp_path / "idx" / "index.parquet")["sop_instance_uid"])
    assert (
        got == expected(lambda h: "Brain" in str(h.get("StudyDescription", "")) and h.get("Modality") == "MR") and got
    )
    rc = main(["index", "--pacs", f"{s.host}:{s.port}", "--out", str(tmp_path / "idx2"), "--filter", "Nonsense=1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--filter Nonsense=1" in err and len(err.splitlines()) == 1
