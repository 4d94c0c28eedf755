"""`modan-pacs pull` beside dcmtk's getscu / movescu on the same Orthanc, in the same run.

Starts a throw-away Orthanc (``/usr/sbin/Orthanc``, ``TCP_NODELAY=1``) on loopback, loads N real
instances (by default pydicom-data's ``693_UNCR.dcm``, a 512x512 16-bit CT of 526 kB, re-identified
into studies of several series with new UIDs), builds an image-level index by C-FIND, then, for
each repeat, in interleaved order that starts one client later in each repeat (no client always runs
first), retrieves everything into a fresh folder with:

- ``getscu`` (dcmtk): one process, one association, one study-level C-GET per study; with
  ``--engines ... dcmtk`` also getscu with the flags that engine passes (``+B --max-pdu 131072``);
- ``modan-pacs pull --method get`` (library call) with each ``--workers`` value, once per
  ``--engines`` value (``pynetdicom``, and ``dcmtk``: getscu processes driven by the pull);
- ``movescu`` (dcmtk): one process with its own storage SCP, one study-level C-MOVE per study;
- ``modan-pacs pull --method move``;
- optionally ``modan-pacs pull --dicomweb`` and a plain dicomweb-client loop (one
  ``retrieve_study`` per study, files written with pydicom) on the same Orthanc.

Every rate is instances per second of wall time of the whole retrieval (process start included for
dcmtk); between clients (untimed) ``os.sync()`` writes the last client's files back, so that no client
pays for another's. Ratios are taken within the same repeat; the table gives each repeat and the median.

``--orthanc-max-pdu`` sets Orthanc's ``MaximumPduLength`` (default: Orthanc's own, 16384): one
archive configuration for every client of the run. ``--getscu-max-pdu`` passes ``--max-pdu`` to
getscu and movescu (default: dcmtk's 16384). Our client proposes an unlimited PDU length.
``benchmarks/pull_profile.py`` shows the PDU sizes each client receives and where our CPU goes.

Usage:
    .venv/bin/python benchmarks/pull_bench.py --instances 192 --repeats 5 --workers 1 2 --dicomweb [--cli]
        [--engines pynetdicom dcmtk]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

OUR_AET = "MODANPACS"
PACS_AET = "ORTHANC"


ENGINE_TAG = {"pynetdicom": "", "dcmtk": " (dcmtk engine)"}


def make_instances(out: Path, source: Path, n: int, per_series: int, series_per_study: int) -> list[Path]:
    """``n`` copies of ``source`` with new Study/Series/SOP UIDs (same pixels)."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    out.mkdir(parents=True)
    ds = dcmread(source)
    paths = []
    study = series = None
    for i in range(n):
        if i % (per_series * series_per_study) == 0:
            study = generate_uid()
        if i % per_series == 0:
            series = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientID = "BENCH0001"
        ds.InstanceNumber = i + 1
        path = out / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_study_queries(out: Path, study_uids: list[str]) -> list[Path]:
    """One study-level query file per study, for getscu / movescu."""
    from pydicom.dataset import Dataset

    out.mkdir(parents=True)
    files = []
    for n, uid in enumerate(study_uids):
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = uid
        path = out / f"q{n:03d}.dcm"
        query.save_as(path, implicit_vr=True, little_endian=True)
        files.append(path)
    return files


def count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() and p.suffix != ".jsonl")


def run_dcmtk(args: list[str], out: Path) -> float:
    """Run a dcmtk tool with TCP_NODELAY; returns wall seconds.

    Debian's dcmtk 3.6.7-9~deb12u4 segfaults in ``DUL_DropAssociation`` when it releases an
    association (see the PACS notes), after every file has been received and written: exit 139
    is accepted here, and the caller checks that every instance arrived.
    """
    out.mkdir(parents=True)
    start = time.perf_counter()
    done = subprocess.run(
        args + ["-od", str(out)],
        env=dict(os.environ, TCP_NODELAY="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    seconds = time.perf_counter() - start
    if done.returncode not in (0, -11, 139):
        raise SystemExit(f"{args[0]} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-500:]}")
    return seconds


def dicomweb_client_loop(url: str, user: str, password: str, study_uids: list[str], out: Path) -> float:
    """A plain dicomweb-client loop: ``retrieve_study`` per study, each instance saved by pydicom."""
    from dicomweb_client.api import DICOMwebClient
    from dicomweb_client.session_utils import create_session_from_user_pass

    out.mkdir(parents=True)
    start = time.perf_counter()
    client = DICOMwebClient(url=url, session=create_session_from_user_pass(user, password))
    for uid in study_uids:
        for ds in client.retrieve_study(uid):
            ds.save_as(out / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return time.perf_counter() - start


def main() -> None:  # noqa: C901 - a linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=192)
    parser.add_argument("--per-series", type=int, default=32)
    parser.add_argument("--series-per-study", type=int, default=3)
    parser.add_argument("--source", default="693_UNCR.dcm", help="pydicom-data or pydicom test file to copy")
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--engines", nargs="+", default=["pynetdicom"], choices=["pynetdicom", "dcmtk"], help="pull --engine values"
    )
    parser.add_argument(
        "--orthanc-max-pdu",
        type=int,
        default=None,
        help="Orthanc's MaximumPduLength, 4096..131072 (default: Orthanc's 16384)",
    )
    parser.add_argument(
        "--getscu-max-pdu", type=int, default=None, help="--max-pdu for getscu and movescu (default: dcmtk's 16384)"
    )
    parser.add_argument("--no-move", action="store_true", help="skip movescu and pull --method move")
    parser.add_argument(
        "--dicomweb", action="store_true", help="also WADO-RS: pull --dicomweb vs a dicomweb-client loop"
    )
    parser.add_argument(
        "--cli",
        action="store_true",
        help="also the whole `modan-pacs pull` command in a subprocess (Python start-up and imports included)",
    )
    args = parser.parse_args()

    from pydicom.data import get_testdata_file

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
    from modan_pacs.pacs.dicomweb import PASSWORD_ENV, USER_ENV
    from modan_pacs.pacs.orthanc import free_port

    source = Path(get_testdata_file(args.source))
    work = Path(tempfile.mkdtemp(prefix="pull-bench-"))
    move_port = free_port()
    server = OrthancServer(
        aet=PACS_AET,
        modalities={OUR_AET: ("127.0.0.1", move_port)},
        workdir=work / "orthanc",
        max_pdu=args.orthanc_max_pdu,
    )
    server.start()
    try:
        settings = make_settings(host="127.0.0.1", port=server.dicom_port, called_aet=PACS_AET, calling_aet=OUR_AET)
        paths = make_instances(work / "src", source, args.instances, args.per_series, args.series_per_study)
        report = send_files(settings, paths)
        if len(report.stored) != args.instances:
            raise SystemExit(f"loading failed: {report.failed[:3]}")
        build_pacs_index(
            make_settings(host="127.0.0.1", port=server.dicom_port, called_aet=PACS_AET, calling_aet=OUR_AET),
            PacsQuery(level="image"),
            out_dir=work / "idx",
            salt_file=work / "salt",
        )
        ours = pacs_for_index(work / "idx", calling_aet=OUR_AET)
        import pandas as pd

        studies = sorted(pd.read_parquet(work / "idx" / "index.parquet")["study_instance_uid"].unique())
        queries = [str(q) for q in write_study_queries(work / "queries", studies)]
        os.environ[USER_ENV], os.environ[PASSWORD_ENV] = server.user, server.password
        peer = ["-S", "-aet", OUR_AET, "-aec", PACS_AET, "127.0.0.1", str(server.dicom_port)]
        if args.getscu_max_pdu:
            peer = ["--max-pdu", str(args.getscu_max_pdu), *peer]
        have_getscu = shutil.which("getscu") is not None
        have_movescu = shutil.which("movescu") is not None and not args.no_move

        size_mb = source.stat().st_size / 1e6
        print(
            f"Orthanc MaximumPduLength {args.orthanc_max_pdu or 'default (16384)'}; getscu/movescu --max-pdu "
            f"{args.getscu_max_pdu or 'default (16384)'}; ours unlimited (0)"
        )
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; "
            f"Orthanc on loopback (TCP_NODELAY=1); {args.instances} instances of {source.name} ({size_mb:.2f} MB) in "
            f"{len(studies)} studies of {args.series_per_study} series of {args.per_series}"
        )
        rates: dict[str, list[float]] = {}

        def record(name: str, seconds: float, n: int) -> None:
            # untimed: write the client's files back now, so that the next client does not pay for them
            # (with 1,536 instances each client leaves 0.8 GB of dirty pages behind)
            os.sync()
            if n != args.instances:
                raise SystemExit(f"{name}: {n} of {args.instances} instances arrived")
            rates.setdefault(name, []).append(n / seconds)
            print(
                f"  {name:<28} {seconds:6.2f} s  {n / seconds:7.1f} instances/s  {n * size_mb / seconds:6.1f} MB/s",
                flush=True,
            )

        def clients(base: Path) -> list[tuple[str, Callable[[], tuple[float, int]]]]:
            """Every client of one repeat: (name, run) where run() -> (seconds, instances that arrived)."""
            out: list[tuple[str, Callable[[], tuple[float, int]]]] = []

            def dcmtk(tool_args: list[str], folder: str) -> Callable[[], tuple[float, int]]:
                return lambda: (run_dcmtk(tool_args, base / folder), count_files(base / folder))

            def library(folder: str, settings: PullSettings, pacs=ours) -> Callable[[], tuple[float, int]]:
                def run() -> tuple[float, int]:
                    summary = pull(work / "idx", base / folder, settings, pacs=pacs)
                    return summary.seconds, summary.arrived

                return run

            def command(engine: str) -> Callable[[], tuple[float, int]]:
                def run() -> tuple[float, int]:
                    folder = base / f"cli-{engine}"
                    exe = str(Path(sys.executable).with_name("modan-pacs"))
                    cmd = [exe, "pull", "--index", str(work / "idx"), "--out", str(folder)]
                    start = time.perf_counter()
                    subprocess.run(
                        [*cmd, "--calling-aet", OUR_AET, "--engine", engine],
                        check=True,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    return time.perf_counter() - start, count_files(folder)

                return run

            if have_getscu:
                out.append(("getscu", dcmtk(["getscu", *peer, *queries], "getscu")))
                if "dcmtk" in args.engines:  # the flags the dcmtk engine gives getscu
                    flags = ["+B", "--max-pdu", "131072"]
                    out.append(("getscu +B --max-pdu 131072", dcmtk(["getscu", *flags, *peer, *queries], "getscu-b")))
            for engine in args.engines:
                for w in args.workers:
                    name = f"pull get{ENGINE_TAG[engine]}, {w} worker(s)"
                    out.append((name, library(f"{engine}{w}", PullSettings(engine=engine, workers=w))))
            for engine in args.engines if args.cli else ():
                out.append((f"modan-pacs pull command{ENGINE_TAG[engine]}", command(engine)))
            if have_movescu:
                cmd = ["movescu", *peer, "-aem", OUR_AET, "--port", str(move_port), *queries]
                out.append(("movescu", dcmtk(cmd, "movescu")))
            for w in args.workers if not args.no_move else ():
                settings = PullSettings(method="move", workers=w, move_port=move_port)
                out.append((f"pull move, {w} worker(s)", library(f"move{w}", settings)))
            if args.dicomweb:
                url = server.dicomweb_url
                out.append(
                    (
                        "dicomweb-client loop",
                        lambda: (
                            dicomweb_client_loop(url, server.user, server.password, studies, base / "dwc"),
                            count_files(base / "dwc"),
                        ),
                    )
                )
                out.append(("pull dicomweb, 1 worker", library("web", PullSettings(dicomweb=url, workers=1), None)))
            return out

        for repeat in range(args.repeats):
            os.sync()
            print(f"repeat {repeat + 1} (load average {os.getloadavg()[0]:.1f})")
            base = work / f"r{repeat}"
            todo = clients(base)
            shift = repeat % len(todo)  # each repeat starts with another client: no client always runs first
            for name, run in todo[shift:] + todo[:shift]:
                seconds, n = run()
                record(name, seconds, n)
            shutil.rmtree(base)

        def ratio(a: str, b: str) -> str:
            if a not in rates or b not in rates:
                return "-"
            each = [x / y for x, y in zip(rates[a], rates[b])]
            return f"{statistics.median(each):.2f} (" + ", ".join(f"{r:.2f}" for r in each) + ")"

        print("\n| client | median instances/s | per repeat |")
        print("| --- | --- | --- |")
        for name, _ in clients(work):
            values = rates[name]
            print(f"| {name} | {statistics.median(values):.0f} | {', '.join(f'{v:.0f}' for v in values)} |")
        print("\nratios, median of the per-repeat ratios (each repeat):")
        print(f"- pull get (1 worker) / getscu: {ratio('pull get, 1 worker(s)', 'getscu')}")
        for engine in args.engines if args.cli else ():
            command = f"modan-pacs pull command{ENGINE_TAG[engine]}"
            print(f"- {command} / getscu (both whole processes): {ratio(command, 'getscu')}")
        print(
            f"- pull move (1 worker) / pull get (1 worker): {ratio('pull move, 1 worker(s)', 'pull get, 1 worker(s)')}"
        )
        print(f"- movescu / getscu: {ratio('movescu', 'getscu')}")
        print(f"- pull move (1 worker) / movescu: {ratio('pull move, 1 worker(s)', 'movescu')}")
        if args.dicomweb:
            print(f"- pull dicomweb / dicomweb-client loop: {ratio('pull dicomweb, 1 worker', 'dicomweb-client loop')}")
        for w in args.workers[1:]:
            print(f"- pull get {w} workers / 1 worker: {ratio(f'pull get, {w} worker(s)', 'pull get, 1 worker(s)')}")
        if "dcmtk" in args.engines:
            dcmtk = "pull get (dcmtk engine), {} worker(s)"
            print(f"- pull get, dcmtk engine (1 worker) / getscu: {ratio(dcmtk.format(1), 'getscu')}")
            same = "getscu +B --max-pdu 131072"
            print(
                f"- pull get, dcmtk engine (1 worker) / getscu with the engine's flags: {ratio(dcmtk.format(1), same)}"
            )
            print(
                f"- pull move (1 worker) / pull get, dcmtk engine: {ratio('pull move, 1 worker(s)', dcmtk.format(1))}"
            )
            for w in args.workers[1:]:
                print(f"- pull get, dcmtk engine, {w} workers / 1 worker: {ratio(dcmtk.format(w), dcmtk.format(1))}")
        print("load average (1, 5, 15 min) at the end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
