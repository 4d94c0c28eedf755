"""What an archive sends is checked: invalid UIDs stay out of the index, unasked-for instances out of the store.

A small pynetdicom Query/Retrieve SCP stands in for a misbehaving archive: its C-FIND answers hold
``../../x`` and a 300-character UID beside valid ones, and its C-GET sends one more instance than
was asked for. Real pixel data (pydicom's CT_small) under new UIDs.
"""

from __future__ import annotations

import copy
import re

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import generate_uid
from pynetdicom.status import Status

pytestmark = [
    pytest.mark.filterwarnings("ignore:Invalid value for VR UI"),
    pytest.mark.filterwarnings("ignore:The value length .* exceeds the maximum length"),
]

BAD_SOP = "../../x"
LONG_SERIES = "1." + "2" * 298


def _instances(pydicom_data_dir) -> dict[str, Dataset]:
    """Three instances of one study: one valid, one with SOP UID ``../../x``, one in a 300-character series."""
    source = dcmread(pydicom_data_dir / "CT_small.dcm")
    study, series = generate_uid(), generate_uid()
    out = {}
    for sop, series_uid in ((generate_uid(), series), (BAD_SOP, series), (generate_uid(), LONG_SERIES)):
        ds = copy.deepcopy(source)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series_uid, sop
        ds.PatientID = "RECEIVED01"
        out[sop] = ds
    return out


def _values(value) -> set[str]:
    """A matching key's values: one UID, or a list of them (IMAGE-level C-GET)."""
    return {str(v) for v in value} if isinstance(value, (list, MultiValue)) else {str(value)}


class FakeArchive:
    """C-FIND over ``instances`` at STUDY/SERIES/IMAGE level; C-GET sends the matches plus ``extra``."""

    current: FakeArchive | None = None  # the running one, for tests that change its behaviour

    def __init__(self, instances: dict[str, Dataset], extra: Dataset) -> None:
        self.instances, self.extra = instances, extra
        self.on_get_impl = self.send_matches_and_extra
        FakeArchive.current = self

    def _matches(self, identifier: Dataset) -> list[Dataset]:
        keys = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
        wanted = {k: _values(identifier.get(k)) for k in keys if identifier.get(k)}
        return [ds for ds in self.instances.values() if all(str(ds.get(k)) in v for k, v in wanted.items())]

    def on_find(self, event):
        identifier = event.identifier
        level = identifier.QueryRetrieveLevel
        seen = set()
        for ds in self._matches(identifier):
            key = {"STUDY": ds.StudyInstanceUID, "SERIES": ds.SeriesInstanceUID, "IMAGE": ds.SOPInstanceUID}[level]
            if key in seen:
                continue
            seen.add(key)
            answer = Dataset()
            answer.QueryRetrieveLevel = level
            for keyword in identifier.dir():
                if keyword in ds and keyword != "QueryRetrieveLevel":
                    setattr(answer, keyword, ds.data_element(keyword).value)
            yield Status.PENDING, answer

    def on_get(self, event):
        yield from self.on_get_impl(event)

    def send_matches_and_extra(self, event):
        matches = self._matches(event.identifier)
        yield len(matches) + 1
        for ds in [*matches, self.extra]:
            yield Status.PENDING, ds


@pytest.fixture
def fake_archive(pydicom_data_dir):
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import (
        CTImageStorage,
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelGet,
    )

    from modan_pacs.pacs.orthanc import free_port

    instances = _instances(pydicom_data_dir)
    valid_series = next(ds.SeriesInstanceUID for ds in instances.values() if ds.SOPInstanceUID != BAD_SOP)
    extra = dcmread(pydicom_data_dir / "CT_small.dcm")
    extra.StudyInstanceUID = next(iter(instances.values())).StudyInstanceUID
    extra.SeriesInstanceUID, extra.SOPInstanceUID = valid_series, generate_uid()
    archive = FakeArchive(instances, extra)
    ae = AE(ae_title="FAKE")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_supported_context(
        CTImageStorage, instances[BAD_SOP].file_meta.TransferSyntaxUID, scp_role=True, scu_role=True
    )
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_C_FIND, archive.on_find), (evt.EVT_C_GET, archive.on_get)],
    )
    try:
        yield port, instances, extra
    finally:
        server.shutdown()


def test_invalid_uids_stay_out_of_the_index_and_are_counted(fake_archive, tmp_path, capsys):
    import pandas as pd
    from modan_pacs.cli.main import main

    port, instances, _ = fake_archive
    rc = main(
        [
            "index",
            "--pacs",
            f"127.0.0.1:{port}",
            "--called-aet",
            "FAKE",
            "--level",
            "image",
            "--out",
            str(tmp_path / "idx"),
            "--salt-file",
            str(tmp_path / "salt"),
            "--timeout",
            "5",
        ]
    )
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 0
    frame = pd.read_parquet(tmp_path / "idx" / "index.parquet")
    errors = pd.read_parquet(tmp_path / "idx" / "errors.parquet")
    valid = [u for u, ds in instances.items() if u != BAD_SOP and ds.SeriesInstanceUID != LONG_SERIES]
    assert frame["sop_instance_uid"].tolist() == valid
    bad = errors[errors["reason"] == "invalid_uid"]
    assert len(bad) == 2 and sorted(bad["detail"]) == [
        "not a valid DICOM UID: SOPInstanceUID",
        "not a valid DICOM UID: SeriesInstanceUID",
    ]
    assert not bad["path"].str.contains(r"\.\./|2{100}").any()  # the raw values are not echoed
    assert re.search(r"invalid_uid\W+2\b", out)


def test_an_instance_nobody_asked_for_is_not_stored_and_is_counted(fake_archive, tmp_path):
    from modan_pacs.pacs import PacsQuery, build_pacs_index, make_settings, pacs_for_index, pull

    port, instances, extra = fake_archive
    build_pacs_index(
        make_settings(host="127.0.0.1", port=port, called_aet="FAKE", dimse_timeout=5),
        PacsQuery(level="image"),
        out_dir=tmp_path / "idx",
        salt_file=tmp_path / "salt",
    )
    summary = pull(
        tmp_path / "idx", tmp_path / "store", pacs=pacs_for_index(tmp_path / "idx", dimse_timeout=5, retries=0)
    )
    # the index holds the one valid instance of its series, so the series is asked for whole: the archive
    # sends it, the ``../../x`` instance (kept out of the index) and the extra one; only the first is kept
    assert summary.complete and summary.arrived == 1 and summary.unrequested == 2
    stored = list((tmp_path / "store").rglob("*.dcm"))
    assert len(stored) == 1 and dcmread(stored[0]).SOPInstanceUID != extra.SOPInstanceUID
    assert all(
        store_root_holds(tmp_path / "store", p) for p in (tmp_path).rglob("*") if p.is_file() and "store" in p.parts
    )


def store_root_holds(root, path) -> bool:
    return root.resolve() in path.resolve().parents


def test_an_archive_that_stops_answering_a_c_get_fails_within_the_timeout(fake_archive, tmp_path):
    """The C-GET is accepted, then nothing comes: the pull stops after --timeout and says so."""
    import threading
    import time

    from modan_pacs.pacs import PacsQuery, build_pacs_index, make_settings, pacs_for_index, pull

    port, instances, _ = fake_archive
    build_pacs_index(
        make_settings(host="127.0.0.1", port=port, called_aet="FAKE", dimse_timeout=5),
        PacsQuery(level="image"),
        out_dir=tmp_path / "idx",
        salt_file=tmp_path / "salt",
    )
    release = threading.Event()
    archive = FakeArchive.current

    def hang(event):
        release.wait(10)
        yield 0

    archive.on_get_impl = hang
    try:
        start = time.perf_counter()
        summary = pull(
            tmp_path / "idx", tmp_path / "store", pacs=pacs_for_index(tmp_path / "idx", dimse_timeout=1, retries=0)
        )
        elapsed = time.perf_counter() - start
    finally:
        release.set()
    assert not summary.complete and summary.arrived == 0
    assert f"no answer from 127.0.0.1:{port} within 1 s; re-run to resume" in summary.interrupted[0]
    assert elapsed < 4.0
