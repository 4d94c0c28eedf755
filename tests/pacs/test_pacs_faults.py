"""Faults: wrong port, unknown AE titles, a crafted UID, and the server killed in the middle of a pull."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

pytestmark = [pytest.mark.pacs, pytest.mark.xdist_group("pacs")]


def _settings(loaded_pacs, **changes):
    return loaded_pacs.settings.model_copy(update=changes)


def test_wrong_port_is_a_one_line_error_and_exit_code(loaded_pacs, tmp_path, capsys):
    from modan_pacs.cli.main import main

    from modan_pacs.errors import PacsError
    from modan_pacs.pacs import echo
    from modan_pacs.pacs.orthanc import free_port

    port = free_port()
    with pytest.raises(PacsError, match=f"cannot connect to 127.0.0.1:{port}: Connection refused") as err:
        echo(_settings(loaded_pacs, port=port))
    assert "\n" not in str(err.value)

    rc = main(
        [
            "index",
            "--pacs",
            f"127.0.0.1:{port}",
            "--called-aet",
            "ORTHANC",
            "--out",
            str(tmp_path / "idx"),
            "--salt-file",
            str(tmp_path / "salt"),
        ]
    )
    message = capsys.readouterr().err.strip()
    assert rc == PacsError.exit_code != 0
    assert "Connection refused" in message and len(message.splitlines()) == 1


def test_retries_back_off_before_giving_up(loaded_pacs):
    from modan_pacs.errors import PacsError
    from modan_pacs.pacs import echo
    from modan_pacs.pacs.orthanc import free_port

    start = time.perf_counter()
    with pytest.raises(PacsError, match="after 3 attempts"):
        echo(_settings(loaded_pacs, port=free_port(), retries=2, backoff=0.2))
    assert time.perf_counter() - start >= 0.2 + 0.4  # backoff 0.2 s then 0.4 s


def test_unknown_called_ae_is_rejected(loaded_pacs):
    from modan_pacs.errors import PacsError
    from modan_pacs.pacs import echo

    with pytest.raises(PacsError, match="rejected: Called AE title not recognised") as err:
        echo(_settings(loaded_pacs, called_aet="NOT_ORTHANC"))
    assert "\n" not in str(err.value)


def test_unknown_calling_ae_cannot_query(loaded_pacs):
    from modan_pacs.errors import PacsError
    from modan_pacs.pacs import PacsQuery, echo, query_pacs

    stranger = _settings(loaded_pacs, calling_aet="STRANGER")
    echo(stranger)  # Orthanc lets anyone echo ...
    with pytest.raises(PacsError, match="no final response.*calling AE STRANGER"):
        query_pacs(stranger, PacsQuery(level="study"))  # ... but only known AEs query


def test_bad_addresses_and_ae_titles_are_input_errors():
    from modan_pacs.errors import InputError
    from modan_pacs.pacs import make_settings, parse_address

    assert parse_address("pacs.example.org:104") == ("pacs.example.org", 104)
    for bad in ("localhost", "host:0", "host:70000", ":104", "host:abc"):
        with pytest.raises(InputError, match="HOST:PORT"):
            parse_address(bad)
    with pytest.raises(InputError, match="called_aet"):
        make_settings(host="h", port=104, called_aet="A" * 17)
    with pytest.raises(InputError, match="calling_aet"):
        make_settings(host="h", port=104, calling_aet="BACK\\SLASH")


@pytest.mark.parametrize(
    "uid",
    [
        "../../../../tmp/escape",
        "/etc/passwd",
        "..",
        ".",
        "",
        "1.2/../../3",
        "1.2.3\x00/..",
        "C:\\evil",
        "1." + "9" * 70,
    ],
)
def test_crafted_uid_names_stay_inside_the_store(tmp_path, uid):
    from modan_pacs.pacs import Store, safe_uid_name

    store = Store(tmp_path / "store")
    name = safe_uid_name(uid)
    assert "/" not in name and "\\" not in name and "." not in name and name not in ("", ".", "..")
    path, new = store.write(uid, uid, uid, b"DICM")
    assert new and store.root in path.parents and path.read_bytes() == b"DICM"
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file() and "store" not in p.parts) == []


def test_valid_uids_are_kept_as_names(tmp_path):
    from modan_pacs.pacs import Store, safe_uid_name

    uid = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
    assert safe_uid_name(uid) == uid
    assert safe_uid_name("1.2.3\x00") == "1.2.3"  # DICOM's NUL padding is not part of the UID
    path, _ = Store(tmp_path).write("1.2", "1.2.3", uid, b"x")
    assert path == (tmp_path / "1.2" / "1.2.3" / f"{uid}.dcm").resolve()


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_storage_scp_files_a_crafted_uid_inside_the_store_and_refuses_strangers(tmp_path, pydicom_data_dir):
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage, Verification

    from modan_pacs.pacs.orthanc import free_port
    from modan_pacs.pacs.retrieve import MoveDestination, StoreWriter, _Counter
    from modan_pacs.pacs.store import Store

    ds = dcmread(pydicom_data_dir / "CT_small.dcm")
    ds.SeriesInstanceUID = "../../../../escaped"
    ds.StudyInstanceUID = "/tmp"
    store = Store(tmp_path / "store")
    port = free_port()
    expected = {str(ds.SOPInstanceUID): (ds.StudyInstanceUID, ds.SeriesInstanceUID)}  # as the index would hold them
    with (
        StoreWriter(store, _Counter()) as writer,
        MoveDestination(
            aet="MODANPACS", port=port, peer_aet="ORTHANC", writer=writer, expected=expected, bind="127.0.0.1"
        ),
    ):
        peer = AE(ae_title="ORTHANC")
        peer.add_requested_context(CTImageStorage, ds.file_meta.TransferSyntaxUID)
        peer.add_requested_context(Verification)
        assoc = peer.associate("127.0.0.1", port, ae_title="MODANPACS")
        assert assoc.is_established
        accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
        assert accepted == {CTImageStorage}  # storage only: no Verification
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()

        stranger = AE(ae_title="STRANGER")
        stranger.add_requested_context(CTImageStorage, ds.file_meta.TransferSyntaxUID)
        refused = stranger.associate("127.0.0.1", port, ae_title="MODANPACS")
        assert refused.is_rejected
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(store.root in p.resolve().parents for p in files)
    stored = [p for p in files if p.suffix == ".dcm"]
    assert len(stored) == 1 and dcmread(stored[0]).SOPInstanceUID == ds.SOPInstanceUID
    assert not (tmp_path / "escaped").exists()


def _synthetic_series(pydicom_data_dir: Path, out: Path, n: int, per_series: int) -> list[Path]:
    """``n`` real CT_small instances re-identified into several series (new UIDs, same pixels)."""
    out.mkdir()
    source = dcmread(pydicom_data_dir / "CT_small.dcm")
    study = generate_uid()
    paths = []
    series = None
    for i in range(n):
        if i % per_series == 0:
            series = generate_uid()
        source.StudyInstanceUID, source.SeriesInstanceUID = study, series
        source.SOPInstanceUID = source.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        source.PatientID = "KILLTEST01"
        source.InstanceNumber = i + 1
        path = out / f"{i:04d}.dcm"
        source.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def test_server_killed_mid_pull_then_rerun_completes_without_duplicates(tmp_path, pydicom_data_dir, orthanc_available):
    from modan_pacs.errors import PacsError
    from modan_pacs.pacs import (
        OrthancServer,
        PacsQuery,
        PullSettings,
        build_pacs_index,
        make_settings,
        pacs_for_index,
        pull,
        send_files,
    )
    from modan_pacs.pacs.pull import raise_if_incomplete

    server = OrthancServer(aet="KILLME", modalities={"MODANPACS": ("127.0.0.1", 1)}, workdir=tmp_path / "orthanc")
    server.start()
    try:
        settings = make_settings(
            host="127.0.0.1", port=server.dicom_port, called_aet="KILLME", dimse_timeout=5, retries=0
        )
        paths = _synthetic_series(pydicom_data_dir, tmp_path / "src", n=120, per_series=30)
        assert len(send_files(settings, paths).stored) == 120
        build_pacs_index(
            make_settings(host="127.0.0.1", port=server.dicom_port, called_aet="KILLME"),
            PacsQuery(level="image"),
            out_dir=tmp_path / "idx",
            vocabulary=None,
            salt_file=tmp_path / "salt",
        )

        arrivals = {"n": 0}

        def kill_after_ten(n: int, nbytes: int) -> None:
            arrivals["n"] += n
            if arrivals["n"] == 10:
                server.kill()  # SIGKILL while Orthanc is sending the first chunk

        store = tmp_path / "store"
        summary = pull(
            tmp_path / "idx",
            store,
            PullSettings(chunk=20),
            pacs=pacs_for_index(tmp_path / "idx", dimse_timeout=5, retries=0),
            on_progress=kill_after_ten,
        )
        assert not summary.complete and 10 <= summary.arrived < 120 and summary.interrupted
        with pytest.raises(PacsError, match="pull incomplete") as err:
            raise_if_incomplete(summary, store)
        assert "\n" not in str(err.value) and "re-run" in str(err.value)
        assert not list(store.rglob("*.part"))  # no half-written file survives

        server.start()  # same ports and storage: the PACS comes back
        again = pull(
            tmp_path / "idx",
            store,
            PullSettings(chunk=20),
            pacs=pacs_for_index(tmp_path / "idx", dimse_timeout=5, retries=1),
        )
        assert again.complete and again.skipped == summary.arrived
        assert summary.arrived + again.arrived == 120  # nothing was received twice
    finally:
        server.stop(remove=True)
    files = sorted(store.rglob("*.dcm"))
    uids = [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files]
    assert len(files) == 120 and len(set(uids)) == 120
    expected = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}
    assert set(uids) == expected
    log = [json.loads(line) for line in (store / "pull_log.jsonl").read_text().splitlines()]
    arrived = [r["sop_instance_uid"] for r in log if r["status"] == "arrived"]
    assert sorted(arrived) == sorted(expected)  # one arrival record per instance
    assert any(r["status"] == "failed" for r in log)  # the interrupted ones were recorded


def test_orthanc_max_pdu_is_what_it_advertises_and_bounds_what_it_sends(
    tmp_path, pydicom_extra_data_dir, orthanc_available
):
    """``OrthancServer(max_pdu=)`` reaches Orthanc: it advertises that length, and a C-GET by a peer
    that asks for 8 KB PDUs gets P-DATA-TF PDUs within 8 KB (the benchmarks rely on both); a
    length outside Orthanc's range is refused before starting it."""
    from pydicom import dcmread
    from pydicom.dataset import Dataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import evt
    from pynetdicom.pdu import P_DATA_TF
    from pynetdicom.presentation import build_role
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as get_model

    from modan_pacs.errors import PacsError
    from modan_pacs.pacs import OrthancServer, make_settings, open_association, send_files

    with pytest.raises(PacsError, match="4096..131072"):
        OrthancServer(max_pdu=1024)
    source = pydicom_extra_data_dir / "693_UNCR.dcm"
    ds = dcmread(source, stop_before_pixels=True)
    server = OrthancServer(
        aet="PDU", modalities={"MODANPACS": ("127.0.0.1", 1)}, workdir=tmp_path / "orthanc", max_pdu=32768
    )
    server.start()
    try:
        settings = make_settings(host="127.0.0.1", port=server.dicom_port, called_aet="PDU", max_pdu=8192)
        assert len(send_files(settings, [source]).stored) == 1
        sizes: list[int] = []
        received: list[int] = []

        def on_pdu(event) -> None:
            if isinstance(event.pdu, P_DATA_TF):
                sizes.append(len(event.pdu) - 6)  # the PDU length field: what max_pdu bounds

        def on_store(event) -> int:
            received.append(len(event.request.DataSet.getvalue()))
            return 0x0000

        contexts = [
            (get_model, [ExplicitVRLittleEndian]),
            (ds.SOPClassUID, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
        ]
        assoc = open_association(
            settings,
            contexts,
            ext_neg=[build_role(ds.SOPClassUID, scp_role=True)],
            evt_handlers=[(evt.EVT_PDU_RECV, on_pdu), (evt.EVT_C_STORE, on_store)],
        )
        try:
            assert assoc.acceptor.maximum_length == 32768
            assert assoc.requestor.maximum_length == 8192
            query = Dataset()
            query.QueryRetrieveLevel = "IMAGE"
            query.StudyInstanceUID, query.SeriesInstanceUID = ds.StudyInstanceUID, ds.SeriesInstanceUID
            query.SOPInstanceUID = ds.SOPInstanceUID
            statuses = [status.Status for status, _ in assoc.send_c_get(query, get_model) if "Status" in status]
        finally:
            assoc.release()
        assert statuses[-1] == 0x0000 and len(received) == 1
        assert max(sizes) <= 8192
        assert len(sizes) >= received[0] // 8192  # the 0.5 MB data set came in 8 KB pieces
    finally:
        server.stop(grace=2)


def test_dcmtk_engine_archive_killed_mid_pull_keeps_whole_files_and_rerun_completes(
    tmp_path, pydicom_data_dir, orthanc_available, binary
):
    """getscu loses its archive while receiving: the files it finished move into the store, the one
    it was writing does not; a re-run brings the rest, nothing twice."""
    import threading

    from modan_pacs.errors import PacsError
    from modan_pacs.pacs import (
        OrthancServer,
        PacsQuery,
        PullSettings,
        build_pacs_index,
        make_settings,
        pacs_for_index,
        pull,
        send_files,
    )
    from modan_pacs.pacs.pull import raise_if_incomplete
    from modan_pacs.pacs.store import INCOMING_PREFIX

    binary("getscu")
    server = OrthancServer(aet="KILLME", modalities={"MODANPACS": ("127.0.0.1", 1)}, workdir=tmp_path / "orthanc")
    server.start()
    store = tmp_path / "store"
    try:
        settings = make_settings(host="127.0.0.1", port=server.dicom_port, called_aet="KILLME", retries=0)
        paths = _synthetic_series(pydicom_data_dir, tmp_path / "src", n=400, per_series=100)
        assert len(send_files(settings, paths).stored) == 400
        build_pacs_index(settings, PacsQuery(level="image"), out_dir=tmp_path / "idx", salt_file=tmp_path / "salt")
        pacs = pacs_for_index(tmp_path / "idx", dimse_timeout=5, retries=0)
        killed = threading.Event()

        def kill_after_ten() -> None:
            while not killed.is_set():
                if len(list(store.glob(f"{INCOMING_PREFIX}*/received/*"))) >= 10:
                    server.kill()  # SIGKILL while getscu receives
                    killed.set()
                time.sleep(0.001)

        watcher = threading.Thread(target=kill_after_ten, daemon=True)
        watcher.start()
        first = pull(tmp_path / "idx", store, PullSettings(engine="dcmtk"), pacs=pacs)
        killed.set()
        watcher.join()
        assert not first.complete and first.failed == 400 - first.arrived and first.arrived < 400
        assert first.interrupted[0].startswith("getscu exited with")  # then pynetdicom's "cannot connect"
        assert any("cannot connect" in line for line in first.interrupted[1:])
        with pytest.raises(PacsError, match="pull incomplete"):
            raise_if_incomplete(first, store)
        kept = sorted(store.rglob("*.dcm"))
        assert 10 <= len(kept) < 400 and not list(store.glob(f"{INCOMING_PREFIX}*"))
        for path in kept:
            assert dcmread(path).pixel_array.shape == (128, 128)  # whole files only

        server.start()  # same ports and storage: the archive comes back
        again = pull(tmp_path / "idx", store, PullSettings(engine="dcmtk"), pacs=pacs)
        assert again.complete and again.skipped == len(kept) and again.arrived == 400 - len(kept)
    finally:
        server.stop(remove=True)
    log = [json.loads(line) for line in (store / "pull_log.jsonl").read_text().splitlines()]
    arrived = [r["sop_instance_uid"] for r in log if r["status"] == "arrived"]
    assert len(arrived) == len(set(arrived)) == 400  # one arrival record per instance
