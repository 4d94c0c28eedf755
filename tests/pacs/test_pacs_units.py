"""Pure parts of the PACS code (no server): query slicing, selection, work units, the STORE log."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from modan_pacs.errors import InputError


def test_date_slices_cover_the_range_without_gaps_or_overlap():
    from modan_pacs.pacs.query import date_slices

    slices = date_slices(dt.date(2020, 1, 1), dt.date(2020, 3, 15), 30)
    assert slices == ["20200101-20200130", "20200131-20200229", "20200301-20200315"]
    days = set()
    for s in slices:
        lo, hi = (dt.datetime.strptime(x, "%Y%m%d").date() for x in s.split("-"))
        span = {lo + dt.timedelta(d) for d in range((hi - lo).days + 1)}
        assert not days & span
        days |= span
    assert days == {dt.date(2020, 1, 1) + dt.timedelta(d) for d in range(75)}
    assert date_slices(None, None, 30) == [""]
    assert date_slices(dt.date(2020, 1, 1), None, 30) == ["20200101-"]
    assert date_slices(None, dt.date(2020, 1, 1), 30) == ["-20200101"]
    assert date_slices(dt.date(2020, 1, 1), dt.date(2020, 12, 31), 0) == ["20200101-20201231"]
    with pytest.raises(InputError, match="after"):
        date_slices(dt.date(2021, 1, 1), dt.date(2020, 1, 1), 30)


def test_parse_date_and_select():
    from modan_pacs.pacs.pull import parse_select
    from modan_pacs.pacs.query import parse_date

    assert parse_date("2020-02-29", "d") == parse_date("20200229", "d") == dt.date(2020, 2, 29)
    with pytest.raises(InputError, match="date_to '2020-02-30'"):
        parse_date("2020-02-30", "date_to")
    assert parse_select("per-label 100") == 100 and parse_select(None) is None
    for bad in ("per-label", "per-label 0", "100", "per-series 3"):
        with pytest.raises(InputError, match="per-label N"):
            parse_select(bad)


def test_units_skip_received_instances_and_split_into_chunks():
    from modan_pacs.pacs.pull import units_from_rows
    from modan_pacs.pacs.retrieve import split_units

    rows = pd.DataFrame(
        {
            "study_instance_uid": ["1"] * 5 + ["1"] * 2,
            "series_instance_uid": ["1.1"] * 5 + ["1.2"] * 2,
            "sop_instance_uid": [f"1.1.{i}" for i in range(5)] + ["1.2.0", "1.2.1"],
            "sop_class_uid": ["1.2.840.10008.5.1.4.1.1.2"] * 5 + ["1.2.840.10008.5.1.4.1.1.4"] * 2,
        }
    )
    units, skipped = units_from_rows(rows, skip={"1.1.0", "1.2.0", "1.2.1"})
    assert skipped == 3 and len(units) == 1 and units[0].sop_uids == ["1.1.1", "1.1.2", "1.1.3", "1.1.4"]
    chunks = split_units(units, 3)
    assert [c.sop_uids for c in chunks] == [["1.1.1", "1.1.2", "1.1.3"], ["1.1.4"]]


def test_contexts_never_exceed_128_per_association():
    from modan_pacs.pacs.retrieve import RetrievalUnit, group_by_contexts, storage_contexts

    units = [RetrievalUnit("1", f"1.{i}", ["x"], {f"1.2.3.{i}", f"1.2.4.{i}"}) for i in range(100)]
    groups = group_by_contexts(units)
    assert sum(len(g) for g in groups) == 100
    for group in groups:
        classes = set().union(*(u.sop_classes for u in group))
        assert 1 + len(storage_contexts(classes)) <= 128


def test_store_resumes_from_its_log_and_drops_stale_temporaries(tmp_path):
    from modan_pacs.pacs import Store

    store = Store(tmp_path)
    path, new = store.write("1.2", "1.2.3", "1.2.3.4", b"first")
    assert new and store.has("1.2.3.4")
    stale = path.parent / ".1.2.3.5.99.1.part"
    stale.write_bytes(b"half")
    reopened = Store(tmp_path)
    assert reopened.arrived == {"1.2.3.4"} and not stale.exists()
    _, again = reopened.write("1.2", "1.2.3", "1.2.3.4", b"second")
    assert not again and path.read_bytes() == b"first"
    path.unlink()  # a file deleted by hand is fetched again
    assert Store(tmp_path).arrived == set()
    records = [json.loads(line) for line in (tmp_path / "pull_log.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["arrived"] and records[0]["path"] == "1.2/1.2.3/1.2.3.4.dcm"


def test_pacs_location_is_read_back_from_the_index():
    from modan_pacs.pacs.pull import pacs_from_index

    frame = pd.DataFrame({"location": ["pacs://ORTHANC@10.0.0.5:4242/1/2/3"]})
    assert pacs_from_index(frame) == ("10.0.0.5", 4242, "ORTHANC")
    assert pacs_from_index(pd.DataFrame({"location": [None]})) is None


def test_dicomweb_credentials_from_file_or_environment(tmp_path, monkeypatch):
    from modan_pacs.pacs.dicomweb import PASSWORD_ENV, USER_ENV, read_credentials

    monkeypatch.delenv(USER_ENV, raising=False)
    assert read_credentials(None) is None
    monkeypatch.setenv(USER_ENV, "alice")
    monkeypatch.setenv(PASSWORD_ENV, "s3:cret")
    assert read_credentials(None) == ("alice", "s3:cret")
    creds = tmp_path / "creds"
    creds.write_text("bob:pa:ss\n")
    assert read_credentials(creds) == ("bob", "pa:ss")
    creds.write_text("no-colon\n")
    with pytest.raises(InputError, match="user:password"):
        read_credentials(creds)


def test_filters_go_to_the_level_of_their_attribute():
    from modan_pacs.pacs.query import parse_filters

    parsed = parse_filters(
        [
            "StudyDescription=*KNEE*",
            "0008,1010=CT01",
            "SeriesDescription=AX*",
            "ImageType=ORIGINAL*",
            "AccessionNumber=A=1",
        ]
    )
    assert parsed == {
        "STUDY": {"StudyDescription": "*KNEE*", "AccessionNumber": "A=1"},
        "SERIES": {"StationName": "CT01", "SeriesDescription": "AX*"},
        "IMAGE": {"ImageType": "ORIGINAL*"},
    }
    for bad in ("StudyDescription", "=x", "NotAKeyword=1", "zzzz,0010=1"):
        with pytest.raises(InputError, match="--filter"):
            parse_filters([bad])


def test_pacs_query_is_the_one_checked_way_in():
    """Every C-FIND walk setting goes through :class:`PacsQuery`; a bad value is one line naming the field."""
    from modan_pacs.pacs.query import PacsQuery, make_query

    query = make_query(
        level="series",
        modalities="ct, mr",
        date_from="2020-01-01",
        date_to="20200315",
        filters={"StudyDescription": "*KNEE*"},
    )
    assert query.modalities == ("CT", "MR") and query.date_from == dt.date(2020, 1, 1)
    assert query.date_slices() == ["20200101-20200130", "20200131-20200229", "20200301-20200315"]
    assert query.filters_by_level()["STUDY"] == {"StudyDescription": "*KNEE*"}
    assert PacsQuery().level == "image" and PacsQuery().date_slices() == [""]
    bad = {
        "level": "patient",
        "query_model": "x",
        "date_to": "2020-02-30",
        "slice_days": -1,
        "filters": ["NotAKeyword=1"],
        "colour": "red",
    }
    for field, value in bad.items():
        with pytest.raises(InputError, match=field) as err:
            make_query(**{field: value})
        assert "\n" not in str(err.value) and str(err.value).startswith("PACS query: ")
    with pytest.raises(InputError, match="after"):
        make_query(date_from="2021-01-01", date_to="2020-01-01")


def test_cached_file_meta_equals_pynetdicoms_encoding():
    """The file meta written before each received data set equals ``encode_file_meta(event.file_meta)``."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGLosslessSV1, MRImageStorage, generate_uid
    from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
    from pynetdicom.dsutils import encode_file_meta

    from modan_pacs.pacs.retrieve import FileMetaEncoder

    encoder = FileMetaEncoder()
    uids = [generate_uid(), "1.2.3", "1.2.34", "1.9" * 10, generate_uid(), "9" * 63]  # odd and even lengths, repeats
    for sop_class, syntax in ((CTImageStorage, ExplicitVRLittleEndian), (MRImageStorage, JPEGLosslessSV1)):
        for uid in uids:
            meta = FileMetaDataset()  # what pynetdicom's Event.file_meta holds
            meta.MediaStorageSOPClassUID = sop_class
            meta.MediaStorageSOPInstanceUID = uid
            meta.TransferSyntaxUID = syntax
            meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
            meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
            assert encoder(sop_class, uid, syntax) == encode_file_meta(meta), (uid, syntax)


def test_plan_asks_whole_series_at_series_level_and_lists_the_rest():
    from modan_pacs.pacs.pull import units_from_rows

    frame = pd.DataFrame(
        {
            "study_instance_uid": ["1"] * 6,
            "series_instance_uid": ["1.1"] * 3 + ["1.2"] * 3,
            "sop_instance_uid": [f"1.1.{i}" for i in range(3)] + [f"1.2.{i}" for i in range(3)],
            "sop_class_uid": ["1.2.840.10008.5.1.4.1.1.2"] * 6,
        }
    )
    units, _ = units_from_rows(frame.iloc[[0, 1, 2, 3]], set(), frame, coarsest="SERIES")
    assert [(u.level, u.series_uid, len(u.sop_uids)) for u in units] == [("SERIES", "1.1", 3), ("IMAGE", "1.2", 1)]
    units, _ = units_from_rows(frame, {"1.1.0"}, frame, coarsest="SERIES")  # a received instance: list the rest
    assert [(u.level, u.series_uid, len(u.sop_uids)) for u in units] == [("IMAGE", "1.1", 2), ("SERIES", "1.2", 3)]
    units, _ = units_from_rows(frame, set(), frame, coarsest="STUDY")
    assert [(u.level, u.series_uid, len(u.sop_uids)) for u in units] == [("STUDY", None, 6)]


def test_store_writer_records_a_failed_write_and_goes_on(tmp_path):
    """A write that fails (here: the series folder's name is taken by a file) is logged as failed;
    the writer thread keeps writing the next instances."""
    from modan_pacs.pacs import Store
    from modan_pacs.pacs.retrieve import StoreWriter, _Counter

    store = Store(tmp_path / "store")
    (store.root / "1.2").mkdir()
    (store.root / "1.2" / "1.2.3").write_bytes(b"not a folder")
    counter = _Counter()
    with StoreWriter(store, counter, depth=1) as writer:
        writer.submit(("1.2", "1.2.3"), "1.2.3.1", (b"DICM",))
        for n in range(3):
            writer.submit(("1.2", "1.2.4"), f"1.2.4.{n}", (b"DI", b"CM"))
    assert counter.arrived == 3 and store.arrived == {"1.2.4.0", "1.2.4.1", "1.2.4.2"}
    log = store.read_log()
    assert log.loc[log["sop_instance_uid"] == "1.2.3.1", "status"].tolist() == ["failed"]
    assert (store.root / "1.2" / "1.2.4" / "1.2.4.2.dcm").read_bytes() == b"DICM"


def test_whole_series_of_a_study_go_in_one_request():
    from modan_pacs.pacs.retrieve import RetrievalUnit, _identifier, merge_whole_series

    units = [
        RetrievalUnit("1", "1.1", ["1.1.0", "1.1.1"], {"a"}, "SERIES"),
        RetrievalUnit("1", "1.2", ["1.2.0"], {"b"}, "IMAGE"),
        RetrievalUnit("1", "1.3", ["1.3.0"], {"c"}, "SERIES"),
        RetrievalUnit("2", "2.1", ["2.1.0"], {"a"}, "SERIES"),
    ]
    merged = merge_whole_series(units)
    assert [(u.study_uid, u.series_uids, u.level) for u in merged] == [
        ("1", ["1.1", "1.3"], "SERIES"),
        ("1", ["1.2"], "IMAGE"),
        ("2", ["2.1"], "SERIES"),
    ]
    assert merged[0].sop_uids == ["1.1.0", "1.1.1", "1.3.0"] and merged[0].sop_classes == {"a", "c"}
    identifier = _identifier(merged[0])
    assert identifier.QueryRetrieveLevel == "SERIES" and list(identifier.SeriesInstanceUID) == ["1.1", "1.3"]
    assert "SOPInstanceUID" not in identifier
    assert merge_whole_series(units, min_units=4) == units  # parallel associations keep one unit each


def test_pull_settings_are_the_one_checked_way_in(tmp_path):
    """Every pull option goes through PullSettings; a DICOMweb URL sets the method; the PACS comes from the index."""
    from modan_pacs.pacs.pull import PullSettings, make_pull_settings, pacs_for_index

    assert PullSettings(dicomweb="http://h/dicom-web").method == "dicomweb"
    assert make_pull_settings(select="per-label 3").per_label == 3 and PullSettings().per_label is None
    bad = {"method": "ftp", "workers": 0, "chunk": 0, "select": "per-series 3", "move_port": 70000, "colour": "red"}
    for field, value in bad.items():
        with pytest.raises(InputError, match=field) as err:
            make_pull_settings(**{field: value})
        assert "\n" not in str(err.value) and str(err.value).startswith("pull settings: ")
    with pytest.raises(InputError, match="DICOMweb URL"):
        make_pull_settings(method="dicomweb")
    frame = pd.DataFrame({"location": ["pacs://ORTHANC@10.0.0.5:4242/1.2/1.2.3/1.2.3.4"]})
    pacs = pacs_for_index(frame, calling_aet="ME", dimse_timeout=3)
    assert (pacs.host, pacs.port, pacs.called_aet, pacs.calling_aet, pacs.dimse_timeout) == (
        "10.0.0.5",
        4242,
        "ORTHANC",
        "ME",
        3,
    )
    assert pacs_for_index(frame, address="h:11112", called_aet="X").label == "X@h:11112"
    with pytest.raises(InputError, match="--pacs HOST:PORT is required"):
        pacs_for_index(pd.DataFrame({"location": [None]}))


def test_patched_pynetdicom_internals_exist_in_the_checked_versions():
    """The private pynetdicom attributes association.py patches exist in the installed version, which is
    inside the range they were checked with (a pynetdicom upgrade fails here, not silently)."""
    from importlib.metadata import version

    from packaging.specifiers import SpecifierSet
    from pynetdicom import AE, _config
    from pynetdicom.association import Association

    from modan_pacs.pacs.association import PYNETDICOM_CHECKED

    assert version("pynetdicom") in SpecifierSet(PYNETDICOM_CHECKED)
    assoc = Association(AE(), "requestor")
    assert isinstance(assoc.dul._run_loop_delay, float) and callable(assoc._serve_request)
    queue = assoc.dimse.msg_queue
    assert hasattr(queue, "mutex") and hasattr(queue, "not_empty") and hasattr(queue.queue, "appendleft")
    assert _config.LOG_HANDLER_LEVEL in ("standard", "none")


def test_a_file_cut_anywhere_is_not_complete(tmp_path, pydicom_data_dir):
    """What the dcmtk engine keeps from a getscu that did not end cleanly: only whole files."""
    from modan_pacs.pacs.getscu import is_complete

    raw = (pydicom_data_dir / "CT_small.dcm").read_bytes()
    whole = tmp_path / "whole.dcm"
    whole.write_bytes(raw)
    assert is_complete(whole)
    for cut in (0, 100, 131, 300, len(raw) // 2, len(raw) - 1):
        part = tmp_path / f"cut{cut}.dcm"
        part.write_bytes(raw[:cut])
        assert not is_complete(part), cut
    sequence = tmp_path / "sq.dcm"  # an undefined-length sequence cut before its delimiter
    from pydicom import dcmread
    from pydicom.dataset import Dataset

    ds = dcmread(whole)
    item = Dataset()
    item.CodeValue = "121327"
    ds.ProcedureCodeSequence = [item]
    del ds.PixelData
    ds.save_as(sequence, implicit_vr=False, little_endian=True)
    text = sequence.read_bytes()
    assert is_complete(sequence)
    sequence.write_bytes(text[: text.index(b"121327") + 3])
    assert not is_complete(sequence)


def test_getscu_batches_keep_request_order_and_feed_every_worker():
    from modan_pacs.pacs.getscu import batches
    from modan_pacs.pacs.retrieve import RetrievalUnit

    units = [RetrievalUnit("1", f"1.{i}", [f"1.{i}.{k}" for k in range(40)], level="SERIES") for i in range(10)]
    one = batches(units, workers=1, size=100)
    assert [len(b) for b in one] == [2, 2, 2, 2, 2] and [u for b in one for u in b] == units
    four = batches(units, workers=4, size=256)  # 400 instances: at most 100 per batch so all 4 work
    assert len(four) >= 4 and [u for b in four for u in b] == units
    assert batches([], workers=2) == []


def test_engine_settings_and_a_missing_getscu_are_one_line_errors(monkeypatch):
    from modan_pacs.pacs import getscu
    from modan_pacs.pacs.pull import make_pull_settings

    with pytest.raises(InputError, match="engine dcmtk runs C-GET"):
        make_pull_settings(engine="dcmtk", method="move")
    with pytest.raises(InputError, match="must be one of pynetdicom, dcmtk"):
        make_pull_settings(engine="gdcm")
    monkeypatch.setattr(getscu.shutil, "which", lambda name: None)
    with pytest.raises(InputError, match=r"getscu on PATH \(apt-get install dcmtk\)") as err:
        getscu.getscu_binary()
    assert "\n" not in str(err.value)


def test_getscu_files_move_in_only_when_whole(tmp_path, pydicom_data_dir):
    from modan_pacs.pacs import Store
    from modan_pacs.pacs.association import make_settings
    from modan_pacs.pacs.getscu import GetscuEngine
    from modan_pacs.pacs.retrieve import _Counter
    from modan_pacs.pacs.store import INCOMING_PREFIX

    raw = (pydicom_data_dir / "CT_small.dcm").read_bytes()
    store = Store(tmp_path / "store")
    expected = {"1.5": ("1", "1.2"), "1.6": ("1", "1.2")}
    counter = _Counter()
    engine = GetscuEngine(make_settings(host="127.0.0.1", port=104), store, expected, counter)
    received = store.incoming_folder()
    assert received.name.startswith(INCOMING_PREFIX) and received.parent == store.root
    (received / "1.5").write_bytes(raw)
    (received / "1.6").write_bytes(raw[: len(raw) // 2])  # the file being written when getscu died
    (received / "9.9").write_bytes(raw)  # nobody asked for it
    engine._adopt(received, trust=False)
    assert store.arrived == {"1.5"} and counter.arrived == 1 and counter.unrequested == 1
    assert (store.root / "1" / "1.2" / "1.5.dcm").read_bytes() == raw
    assert Store(tmp_path / "store").arrived == {"1.5"} and not received.exists()  # left-overs go on reopening
