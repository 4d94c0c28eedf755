"""The same operations against two independent archives: Orthanc and dcmtk's dcmqrscp.

Both serve the same real files (pydicom's ``dicomdirtests`` series, CT_small, MR_small and some
pydicom-data files, one of them JPEG lossless). dcmqrscp answers C-FIND with the keys of its own
index only (no SOPClassUID, BodyPartExamined or SeriesDescription) and never transcodes.
"""

from __future__ import annotations

import pytest
from pydicom import dcmread

pytestmark = [pytest.mark.pacs, pytest.mark.xdist_group("pacs")]


def _headers(files):
    return {uid: dcmread(path, stop_before_pixels=True) for uid, path in files.items()}


def test_echo(archive):
    from modan_pacs.pacs import echo

    assert echo(archive.settings) < 1.0


@pytest.mark.parametrize("level", ["study", "series", "image"])
def test_find_at_each_level_lists_every_instance(archive, level):
    from modan_pacs.pacs import PacsQuery, query_pacs

    headers = _headers(archive.files)
    frame = query_pacs(archive.settings, PacsQuery(level=level))
    assert sorted(frame["sop_instance_uid"]) == sorted(headers)
    by_uid = frame.set_index("sop_instance_uid")
    for uid, header in headers.items():
        assert by_uid.loc[uid, "series_instance_uid"] == str(header.SeriesInstanceUID)
        assert by_uid.loc[uid, "study_instance_uid"] == str(header.StudyInstanceUID)
        if level != "study":  # series-level Modality; at study level ModalitiesInStudy, absent from dcmqrscp
            assert by_uid.loc[uid, "modality"] == (header.get("Modality") or None)


@pytest.mark.parametrize(("method", "engine"), [("get", "pynetdicom"), ("move", "pynetdicom"), ("get", "dcmtk")])
def test_pull_everything(archive, tmp_path, method, engine, request):
    """C-GET and C-MOVE bring every instance; from dcmqrscp, which never transcodes, every element
    (trailing padding and group lengths aside) equals the file it holds (the JPEG lossless one included;
    dcmtk re-encodes sequence lengths);
    from Orthanc the pixels equal the source's. The dcmtk engine's getscu offers uncompressed syntaxes
    only: dcmqrscp fails the JPEG lossless instance, which the pynetdicom pass that follows brings."""
    if engine == "dcmtk":
        request.getfixturevalue("binary")("getscu")
    import numpy as np

    from modan_pacs.pacs import PacsQuery, PullSettings, build_pacs_index, pacs_for_index, pull

    s = archive.settings
    build_pacs_index(
        s.model_copy(update={"dimse_timeout": 8}),
        PacsQuery(level="series"),
        out_dir=tmp_path / "idx",
        salt_file=tmp_path / "salt",
    )
    summary = pull(
        tmp_path / "idx",
        tmp_path / "store",
        PullSettings(method=method, engine=engine, move_port=archive.move_port),
        pacs=pacs_for_index(tmp_path / "idx", dimse_timeout=8, retries=0),
    )
    assert summary.complete, summary.interrupted[:2]
    assert summary.unrequested == 0
    stored = {p.stem: p for p in (tmp_path / "store").rglob("*.dcm")}
    import pandas as pd

    indexed = set(pd.read_parquet(tmp_path / "idx" / "index.parquet")["sop_instance_uid"])
    assert set(stored) == indexed and indexed <= set(archive.files)
    for uid, path in stored.items():
        source = archive.files[uid]
        got, want = dcmread(path), dcmread(source)
        if archive.server.__class__.__name__ == "DcmqrscpServer":
            for ds in (got, want):  # dcmtk drops trailing padding and recomputes group lengths
                for tag in [t for t in ds.keys() if t == 0xFFFCFFFC or t.element == 0]:
                    del ds[tag]
            assert got == want, uid  # every element of the data set (file meta aside)
            assert got.file_meta.TransferSyntaxUID == want.file_meta.TransferSyntaxUID
        elif "PixelData" in want:
            assert np.array_equal(got.pixel_array, want.pixel_array), uid


def test_missing_attributes_are_counted_and_completed_from_the_pulled_files(archive, tmp_path, capsys):
    """dcmqrscp answers no BodyPartExamined / SeriesDescription: the index says how many rows lack
    them; after `pull --complete-labels` the labels equal a folder index of the pulled files."""
    import pandas as pd
    from modan_pacs.cli.main import main

    from modan_pacs.ingest import build_index, load_index
    from modan_pacs.pacs.query import missing_label_attributes

    s = archive.settings
    salt = tmp_path / "salt"
    rc = main(
        [
            "index",
            "--pacs",
            f"{s.host}:{s.port}",
            "--called-aet",
            s.called_aet,
            "--level",
            "series",
            "--out",
            str(tmp_path / "idx"),
            "--salt-file",
            str(salt),
            "--timeout",
            "8",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    frame = pd.read_parquet(tmp_path / "idx" / "index.parquet")
    missing = missing_label_attributes(frame)
    headers = _headers(archive.files)
    indexed = {u: headers[u] for u in frame["sop_instance_uid"]}
    if archive.server.__class__.__name__ == "DcmqrscpServer":
        assert missing["BodyPartExamined"] == missing["SeriesDescription"] == len(frame)
        assert f"BodyPartExamined {len(frame):,}" in " ".join(out.split())
    else:  # Orthanc answers them: only rows whose files lack the attribute are missing
        assert missing["BodyPartExamined"] == sum(1 for h in indexed.values() if not h.get("BodyPartExamined"))

    rc = main(
        [
            "pull",
            "--index",
            str(tmp_path / "idx"),
            "--out",
            str(tmp_path / "store"),
            "--timeout",
            "8",
            "--move-port",
            str(archive.move_port),
            "--complete-labels",
        ]
    )
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 0 and f"labels completed from {len(frame)} pulled files" in out
    build_index(tmp_path / "store", tmp_path / "folder_idx", workers=1, salt_file=salt)
    folder, pacs = load_index(tmp_path / "folder_idx"), load_index(tmp_path / "idx")
    folder_labels = dict(zip(folder.frame["sop_instance_uid"], map(tuple, folder.labels)))
    pacs_labels = dict(zip(pacs.frame["sop_instance_uid"], map(tuple, pacs.labels)))
    # the same rows (files without pixel data moved to the errors, as the folder index does) and labels
    assert set(folder_labels) == set(pacs_labels) and len(folder_labels) >= 30
    assert all(pacs_labels[u] == folder_labels[u] for u in folder_labels)
    assert set(pacs.errors["reason"]) >= {"no_pixel_data"}
    assert pacs.frame["location"].str.startswith(f"pacs://{s.called_aet}@").all()  # still points at the PACS
