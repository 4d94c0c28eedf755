"""A silent peer: it accepts TCP (or even the association) and then never answers.

No PACS binary is needed: a plain socket that accepts and holds connections, and a pynetdicom
C-FIND SCP whose handler waits, stand in for a hung archive. Each test bounds the wall time.
"""

from __future__ import annotations

import socket
import threading
import time

import pandas as pd
import pytest

from modan_pacs.errors import PacsError


@pytest.fixture
def silent_port():
    """A port that accepts TCP connections and never sends a byte."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_defaults_stay_within_15_seconds():
    from modan_pacs.pacs import make_settings

    settings = make_settings(host="h", port=104)
    assert max(settings.connection_timeout, settings.acse_timeout, settings.dimse_timeout) <= 15


def test_silent_peer_fails_within_the_timeout_and_says_so(silent_port):
    from modan_pacs.pacs import echo, make_settings

    settings = make_settings(host="127.0.0.1", port=silent_port, acse_timeout=1.5, connection_timeout=1.5, retries=2)
    start = time.perf_counter()
    with pytest.raises(PacsError) as err:
        echo(settings)
    elapsed = time.perf_counter() - start
    assert f"no answer from 127.0.0.1:{silent_port} within 1.5 s" in str(err.value)
    assert "\n" not in str(err.value)
    assert 1.4 <= elapsed < 4.0  # not retried: three tries would take 4.5 s, plus 1.5 s of backoff


def test_index_pacs_takes_the_timeout_options(silent_port, tmp_path, capsys):
    from modan_pacs.cli.main import main

    start = time.perf_counter()
    rc = main(
        [
            "index",
            "--pacs",
            f"127.0.0.1:{silent_port}",
            "--connect-timeout",
            "1",
            "--timeout",
            "2",
            "--retries",
            "0",
            "--backoff",
            "0.1",
            "--out",
            str(tmp_path / "idx"),
            "--salt-file",
            str(tmp_path / "salt"),
        ]
    )
    elapsed = time.perf_counter() - start
    message = capsys.readouterr().err.strip()
    assert rc == PacsError.exit_code
    assert f"no answer from 127.0.0.1:{silent_port} within 1 s" in message and len(message.splitlines()) == 1
    assert elapsed < 5.0  # 1 s, plus imports on a loaded machine


def test_pull_from_a_silent_peer_fails_within_the_timeout(silent_port, tmp_path, capsys):
    from modan_pacs.cli.main import main

    index = tmp_path / "idx"
    index.mkdir()
    pd.DataFrame(
        {
            "sop_instance_uid": ["1.2.3.1"],
            "series_instance_uid": ["1.2.3"],
            "study_instance_uid": ["1.2"],
            "sop_class_uid": ["1.2.840.10008.5.1.4.1.1.2"],
            "modality_label": ["CT"],
            "anatomy_label": ["chest"],
            "modality": ["CT"],
            "location": [f"pacs://SILENT@127.0.0.1:{silent_port}/1.2/1.2.3/1.2.3.1"],
        }
    ).to_parquet(index / "index.parquet")
    start = time.perf_counter()
    rc = main(["pull", "--index", str(index), "--out", str(tmp_path / "store"), "--connect-timeout", "1"])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err.strip()
    assert rc == PacsError.exit_code and f"no answer from 127.0.0.1:{silent_port} within 1 s" in err
    assert elapsed < 4.0  # default --retries 2 are not spent on a silent peer: 3 tries would take 3 s + 1.5 s backoff


def test_peer_that_accepts_the_association_but_never_answers_a_query():
    """A C-FIND SCP whose handler hangs: the query fails after the DIMSE timeout, saying so."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
    from pynetdicom.status import Status

    from modan_pacs.pacs import PacsQuery, make_settings, query_pacs
    from modan_pacs.pacs.orthanc import free_port

    release = threading.Event()

    def hang(event):
        release.wait(10)
        yield Status.SUCCESS, None

    ae = AE(ae_title="HUNG")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_FIND, hang)])
    try:
        settings = make_settings(
            host="127.0.0.1", port=port, called_aet="HUNG", dimse_timeout=1, acse_timeout=2, retries=0
        )
        start = time.perf_counter()
        with pytest.raises(PacsError, match=rf"C-FIND STUDY: no answer from 127.0.0.1:{port} within 1 s"):
            query_pacs(settings, PacsQuery(level="study"))
        assert time.perf_counter() - start < 4.0
    finally:
        release.set()
        server.shutdown()
