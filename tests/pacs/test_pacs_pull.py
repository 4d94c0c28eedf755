"""C-GET, C-MOVE and DICOMweb retrieval from a real Orthanc into a STORE; resume; re-indexing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

pytestmark = [pytest.mark.pacs, pytest.mark.xdist_group("pacs")]


@pytest.fixture(scope="module")
def pacs_index(loaded_pacs, tmp_path_factory) -> Path:
    """An image-level index of the session PACS, built by C-FIND."""
    from modan_pacs.pacs import PacsQuery, build_pacs_index

    out = tmp_path_factory.mktemp("pacs_index")
    s = loaded_pacs.settings
    build_pacs_index(
        s,
        PacsQuery(level="image"),
        out_dir=out,
        vocabulary=None,
        salt_file=tmp_path_factory.mktemp("salt") / "salt",
    )
    return out


def _one_series_index(pacs_index: Path, tmp_path: Path, series_uid: str) -> Path:
    """A copy of the index holding only one series (a query-style selection)."""
    import pandas as pd

    frame = pd.read_parquet(pacs_index / "index.parquet")
    sub = tmp_path / "sub_index"
    sub.mkdir()
    frame[frame["series_instance_uid"] == series_uid].to_parquet(sub / "index.parquet")
    return sub


def _series_uid_of(loaded_pacs, name_part: str) -> str:
    path = next(p for p in loaded_pacs.files.values() if name_part in str(p))
    return str(dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


def _assert_pixels_equal_sources(loaded_pacs, store: Path, expected_uids: set[str]) -> None:
    stored = sorted(store.rglob("*.dcm"))
    got = {}
    for path in stored:
        ds = dcmread(path)
        got[str(ds.SOPInstanceUID)] = ds
        assert path.resolve().parent.parent.parent == store.resolve()
        assert path.name == f"{ds.SOPInstanceUID}.dcm"
        assert path.parent.name == str(ds.SeriesInstanceUID)
    assert set(got) == expected_uids
    for uid, ds in got.items():
        source = dcmread(loaded_pacs.files[uid])
        assert np.array_equal(ds.pixel_array, source.pixel_array), uid


@pytest.mark.parametrize("method", ["get", "move"])
def test_series_pull_gives_the_source_pixels(loaded_pacs, pacs_index, tmp_path, method):
    from modan_pacs.pacs import PullSettings, pull

    series_uid = _series_uid_of(loaded_pacs, "98892001/CT5N")
    index = _one_series_index(pacs_index, tmp_path, series_uid)
    s = loaded_pacs.settings
    summary = pull(
        index,
        tmp_path / "store",
        PullSettings(method=method, move_port=loaded_pacs.move_port),
        pacs=s.model_copy(update={"dimse_timeout": 8, "retries": 0}),
    )
    expected = {u for u, p in loaded_pacs.files.items() if "98892001/CT5N" in str(p)}
    assert len(expected) == 5
    assert summary.complete and summary.arrived == 5 and summary.failed == 0
    _assert_pixels_equal_sources(loaded_pacs, tmp_path / "store", expected)
    log = [line for line in (tmp_path / "store" / "pull_log.jsonl").read_text().splitlines() if line]
    assert len(log) == 5 and all('"arrived"' in line for line in log)


def test_parallel_pull_of_everything_then_resume_skips_all(loaded_pacs, pacs_index, tmp_path):
    from modan_pacs.pacs import PullSettings, pacs_for_index, pull

    store = tmp_path / "store"
    # PACS address and AE title from the index's location column
    pacs = pacs_for_index(pacs_index, calling_aet=loaded_pacs.settings.calling_aet, dimse_timeout=8, retries=0)
    first = pull(pacs_index, store, PullSettings(workers=3, chunk=7), pacs=pacs)
    n_index = len(__import__("pandas").read_parquet(pacs_index / "index.parquet"))
    assert first.complete and first.arrived == n_index
    files_before = sorted(store.rglob("*.dcm"))
    assert len(files_before) == n_index
    second = pull(pacs_index, store, pacs=pacs)
    assert second.arrived == 0 and second.skipped == n_index and second.complete
    assert sorted(store.rglob("*.dcm")) == files_before


def _data_set_bytes(path: Path) -> bytes:
    """A DICOM file's bytes after its file meta (the data set as the archive sent it)."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    with open(path, "rb") as handle:
        read_preamble(handle, False)
        _read_file_meta_info(handle)
        return handle.read()


def test_dcmtk_engine_stores_the_bytes_pynetdicom_stores_and_resumes(loaded_pacs, pacs_index, tmp_path, binary):
    """getscu (bit-preserving) and our pynetdicom receiver write the same data set bytes for every
    instance of the archive; the store has the same layout and log; a re-run fetches nothing."""
    from modan_pacs.pacs import PullSettings, pacs_for_index, pull
    from modan_pacs.pacs.store import INCOMING_PREFIX

    binary("getscu")
    pacs = pacs_for_index(pacs_index, calling_aet=loaded_pacs.settings.calling_aet, dimse_timeout=8, retries=0)
    n_index = len(__import__("pandas").read_parquet(pacs_index / "index.parquet"))
    ours = pull(pacs_index, tmp_path / "ours", PullSettings(), pacs=pacs)
    dcmtk = pull(pacs_index, tmp_path / "dcmtk", PullSettings(engine="dcmtk", workers=2), pacs=pacs)
    assert ours.complete and dcmtk.complete and dcmtk.arrived == ours.arrived == n_index
    assert dcmtk.bytes == sum(p.stat().st_size for p in (tmp_path / "dcmtk").rglob("*.dcm"))
    mine = {p.relative_to(tmp_path / "ours"): p for p in (tmp_path / "ours").rglob("*.dcm")}
    theirs = {p.relative_to(tmp_path / "dcmtk"): p for p in (tmp_path / "dcmtk").rglob("*.dcm")}
    assert set(mine) == set(theirs) and len(mine) == n_index
    for relative, path in mine.items():
        assert _data_set_bytes(theirs[relative]) == _data_set_bytes(path), relative
    assert not list((tmp_path / "dcmtk").glob(f"{INCOMING_PREFIX}*"))
    again = pull(pacs_index, tmp_path / "dcmtk", PullSettings(engine="dcmtk"), pacs=pacs)
    assert again.arrived == 0 and again.skipped == n_index and again.complete


def _children_named(name: str) -> list[int]:
    """PIDs of this process's child processes whose command is ``name`` (Linux /proc)."""
    import os

    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            comm = fields[0].split("(", 1)[1]
            ppid = int(fields[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if comm == name and ppid == os.getpid():
            found.append(int(stat.parent.name))
    return found


def test_dcmtk_engine_interrupted_leaves_no_partial_state_and_resumes(
    loaded_pacs, pacs_index, tmp_path, binary, monkeypatch
):
    """Ctrl-C during a dcmtk-engine pull: getscu processes are killed, no incoming folder or partial file
    stays, what was logged is kept, and a re-run brings the rest with no instance twice."""
    import json

    from modan_pacs.pacs import PullSettings, pacs_for_index, pull
    from modan_pacs.pacs import getscu as engine
    from modan_pacs.pacs.store import INCOMING_PREFIX

    binary("getscu")
    monkeypatch.setattr(engine, "BATCH_INSTANCES", 10)
    pacs = pacs_for_index(pacs_index, calling_aet=loaded_pacs.settings.calling_aet, dimse_timeout=8, retries=0)
    n_index = len(__import__("pandas").read_parquet(pacs_index / "index.parquet"))
    seen = {"n": 0}

    def interrupt(n: int, nbytes: int) -> None:
        seen["n"] += n
        if seen["n"] >= 5:
            raise KeyboardInterrupt

    store = tmp_path / "store"
    with pytest.raises(KeyboardInterrupt):
        pull(pacs_index, store, PullSettings(engine="dcmtk", workers=2), pacs=pacs, on_progress=interrupt)
    assert not list(store.glob(f"{INCOMING_PREFIX}*")) and not list(store.rglob("*.part"))
    assert not _children_named("getscu")  # none left running
    kept = len(list(store.rglob("*.dcm")))
    assert 5 <= kept < n_index
    again = pull(pacs_index, store, PullSettings(engine="dcmtk", workers=2), pacs=pacs)
    assert again.complete and again.skipped == kept and again.arrived == n_index - kept
    log = [json.loads(line) for line in (store / "pull_log.jsonl").read_text().splitlines()]
    arrived = [r["sop_instance_uid"] for r in log if r["status"] == "arrived"]
    assert len(arrived) == len(set(arrived)) == n_index


def test_store_is_indexable_with_the_folder_index(loaded_pacs, pacs_index, tmp_path):
    from modan_pacs.ingest import build_index, load_index
    from modan_pacs.pacs import PullSettings, pacs_for_index, pull

    store = tmp_path / "store"
    summary = pull(
        pacs_index,
        store,
        PullSettings(select="per-label 1", workers=2),
        pacs=pacs_for_index(pacs_index, dimse_timeout=8, retries=0),
    )
    assert summary.complete and summary.arrived > 0
    build_index(store, tmp_path / "store_index", workers=1, salt_file=tmp_path / "salt")
    store_index = load_index(tmp_path / "store_index")
    pacs = load_index(pacs_index)
    labels = dict(zip(pacs.frame["sop_instance_uid"], map(tuple, pacs.labels)))
    assert len(store_index.frame) == summary.arrived
    for uid, row in zip(store_index.frame["sop_instance_uid"], store_index.labels):
        assert tuple(row) == labels[uid]
    # the STORE's own resume log is not indexed (nor reported as a broken file)
    assert len(store_index.errors) == 0


def test_per_label_selection_keeps_at_most_n_series_per_label(pacs_index):
    import pandas as pd

    from modan_pacs.pacs.pull import select_rows

    frame = pd.read_parquet(pacs_index / "index.parquet")
    chosen = select_rows(frame, per_label=1)
    keys = ["modality_label", "anatomy_label"]

    def labelled(rows):
        return rows[[*keys, "series_instance_uid"]].astype(object).fillna("-")

    per_label = labelled(chosen).groupby(keys)["series_instance_uid"].nunique()
    assert (per_label == 1).all()
    assert len(per_label) == len(labelled(frame).groupby(keys))
    assert chosen.equals(select_rows(frame, per_label=1))  # seeded: the same draw twice
    ct = select_rows(frame, modality=["CT"])
    assert set(ct["modality_label"]) == {"CT"} and len(ct) == (frame["modality_label"] == "CT").sum()


@pytest.mark.parametrize("engine", ["pynetdicom", "dcmtk"])
def test_cli_pull_prints_a_summary_and_exits_zero(loaded_pacs, pacs_index, tmp_path, capsys, engine, binary):
    from modan_pacs.cli.main import main

    if engine == "dcmtk":
        binary("getscu")

    series_uid = _series_uid_of(loaded_pacs, "77654033/CT2")
    index = _one_series_index(pacs_index, tmp_path, series_uid)
    s = loaded_pacs.settings
    rc = main(
        [
            "pull",
            "--index",
            str(index),
            "--out",
            str(tmp_path / "store"),
            "--pacs",
            f"{s.host}:{s.port}",
            "--called-aet",
            s.called_aet,
            "--workers",
            "2",
            "--timeout",
            "8",
            "--engine",
            engine,
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "4 arrived" in out and "instances/s" in out
    assert ("get via getscu)" in out) == (engine == "dcmtk")
    assert len(list((tmp_path / "store").rglob("*.dcm"))) == 4


def test_cli_engine_dcmtk_with_move_is_a_one_line_usage_error(pacs_index, tmp_path, run_cli):
    code, out, err = run_cli(
        "pull", "--index", pacs_index, "--out", tmp_path / "store", "--engine", "dcmtk", "--method", "move"
    )
    assert code != 0 and "Traceback" not in out + err
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) == 1 and "engine dcmtk runs C-GET (getscu) only" in lines[0], lines
    assert not (tmp_path / "store").exists()


def test_dicomweb_search_and_retrieval(loaded_pacs, pacs_index, tmp_path, monkeypatch):
    from modan_pacs.pacs import PacsQuery, PullSettings, pull, query_pacs
    from modan_pacs.pacs.dicomweb import PASSWORD_ENV, USER_ENV, query_dicomweb

    server = loaded_pacs.server
    monkeypatch.setenv(USER_ENV, server.user)
    monkeypatch.setenv(PASSWORD_ENV, server.password)
    web = query_dicomweb(server.dicomweb_url, PacsQuery(level="image"))
    dimse = query_pacs(loaded_pacs.settings, PacsQuery(level="image"))
    assert sorted(web["sop_instance_uid"]) == sorted(dimse["sop_instance_uid"])
    merged = web.set_index("sop_instance_uid").loc[dimse["sop_instance_uid"]]
    assert merged["modality"].fillna("-").tolist() == dimse["modality"].fillna("-").tolist()
    assert merged["series_instance_uid"].tolist() == dimse["series_instance_uid"].tolist()

    series_uid = _series_uid_of(loaded_pacs, "98892003/MR700")
    index = _one_series_index(pacs_index, tmp_path, series_uid)
    summary = pull(index, tmp_path / "store", PullSettings(dicomweb=server.dicomweb_url, workers=2))
    expected = {u for u, p in loaded_pacs.files.items() if "98892003/MR700" in str(p)}
    assert summary.complete and summary.arrived == len(expected) == 7
    _assert_pixels_equal_sources(loaded_pacs, tmp_path / "store", expected)

    creds = tmp_path / "creds"
    creds.write_text(f"{server.user}:{server.password}\n")
    monkeypatch.delenv(USER_ENV)
    again = pull(index, tmp_path / "store2", PullSettings(dicomweb=server.dicomweb_url, dicomweb_credentials=creds))
    assert again.complete and again.arrived == 7

    # part of a series missing: one WADO-RS request per instance instead of the series request
    import shutil

    shutil.copytree(tmp_path / "store2", tmp_path / "store3")
    removed = sorted((tmp_path / "store3").rglob("*.dcm"))[:3]
    for path in removed:
        path.unlink()
    third = pull(index, tmp_path / "store3", PullSettings(dicomweb=server.dicomweb_url, dicomweb_credentials=creds))
    assert third.complete and third.arrived == 3 and third.skipped == 4 and third.requests == 3
    assert all(path.is_file() for path in removed)


def test_dicomweb_without_credentials_is_a_one_line_error(loaded_pacs, monkeypatch):
    from modan_pacs.errors import PacsError
    from modan_pacs.pacs.dicomweb import USER_ENV, query_dicomweb

    monkeypatch.delenv(USER_ENV, raising=False)
    with pytest.raises(PacsError, match="HTTP 401") as err:
        query_dicomweb(loaded_pacs.server.dicomweb_url)
    assert "\n" not in str(err.value)


def test_dry_run_prints_the_plan_and_fetches_nothing(loaded_pacs, pacs_index, tmp_path, capsys):
    import pandas as pd
    from modan_pacs.cli.main import main

    frame = pd.read_parquet(pacs_index / "index.parquet")
    store = tmp_path / "store"
    rc = main(["pull", "--index", str(pacs_index), "--out", str(store), "--dry-run"])
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 0 and not store.exists()
    assert f"would fetch {len(frame)} of {len(frame)} selected instances (0 already in {store})" in out
    assert (
        f"from {frame['study_instance_uid'].nunique()} studies, {frame['series_instance_uid'].nunique()} series" in out
    )
    # a PACS index has no file sizes; its image-level rows give the uncompressed pixel bytes
    pixels = (
        frame["rows"] * frame["columns"] * frame["number_of_frames"].fillna(1) * ((frame["bits_stored"] + 7) // 8)
    ).sum()
    n_known = int(frame["rows"].notna().sum())
    assert "size unknown" in out and f"the {n_known} instances whose dimensions it holds" in out
    assert f"about {pixels / 1e6:,.1f} MB" in out
    series = _series_uid_of(loaded_pacs, "77654033/CT2")
    index = _one_series_index(pacs_index, tmp_path, series)
    assert (
        main(
            [
                "pull",
                "--index",
                str(index),
                "--out",
                str(store),
                "--pacs",
                f"{loaded_pacs.settings.host}:{loaded_pacs.settings.port}",
                "--called-aet",
                loaded_pacs.settings.called_aet,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["pull", "--index", str(pacs_index), "--out", str(store), "--dry-run"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"would fetch {len(frame) - 4} of {len(frame)} selected instances (4 already in {store})" in out
