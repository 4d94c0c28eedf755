"""Instances/s of `pull` by C-GET with 1 versus several parallel associations, against Orthanc on loopback.

Starts a throw-away Orthanc (``/usr/sbin/Orthanc``), loads N real instances (pydicom's CT_small,
re-identified into series of 30 with new UIDs; 512x512 16-bit would be larger, CT_small is
128x128), builds an image-level index by C-FIND, then pulls everything into a fresh STORE once per
worker count, in one run. Optionally also C-MOVE and DICOMweb.

Usage:
    .venv/bin/python benchmarks/pull_bench.py --instances 240 --workers 1 2 4 [--methods get move dicomweb]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path


def make_instances(out: Path, n: int, per_series: int) -> list[Path]:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    out.mkdir(parents=True)
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    study = generate_uid()
    paths = []
    for i in range(n):
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=240)
    parser.add_argument("--per-series", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--chunk", type=int, default=15, help="instances per C-GET request")
    parser.add_argument("--methods", nargs="+", default=["get"], choices=["get", "move", "dicomweb"])
    args = parser.parse_args()
    if args.instances < 200:
        parser.error("--instances must be at least 200")

    from modan_pacs.pacs import OrthancServer, build_pacs_index, make_settings, pull, send_files
    from modan_pacs.pacs.dicomweb import PASSWORD_ENV, USER_ENV
    from modan_pacs.pacs.orthanc import free_port

    work = Path(tempfile.mkdtemp(prefix="pull-bench-"))
    move_port = free_port()
    server = OrthancServer(modalities={"MODANPACS": ("127.0.0.1", move_port)}, workdir=work / "orthanc")
    server.start()
    try:
        settings = make_settings(host="127.0.0.1", port=server.dicom_port, called_aet="ORTHANC")
        paths = make_instances(work / "src", args.instances, args.per_series)
        t = time.perf_counter()
        report = send_files(settings, paths)
        load_s = time.perf_counter() - t
        assert len(report.stored) == args.instances, report.failed[:3]
        t = time.perf_counter()
        build_pacs_index(host="127.0.0.1", port=server.dicom_port, called_aet="ORTHANC", calling_aet="MODANPACS",
                         level="image", modality=None, date_from=None, date_to=None, out_dir=work / "idx",
                         vocabulary=None, salt_file=work / "salt", show_progress=False)
        index_s = time.perf_counter() - t
        os.environ[USER_ENV], os.environ[PASSWORD_ENV] = server.user, server.password

        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; Orthanc on loopback; "
              f"{args.instances} instances of CT_small ({paths[0].stat().st_size / 1e3:.0f} kB) in series of {args.per_series}")
        print(f"C-STORE load: {args.instances / load_s:.0f} instances/s; C-FIND image-level index: {index_s:.2f} s")
        print("| method | workers | instances | seconds | instances/s | MB/s | speed-up vs 1 worker |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for method in args.methods:
            base = None
            for workers in args.workers:
                store = work / f"store-{method}-{workers}"
                summary = pull(index_dir=work / "idx", out=store, calling_aet="MODANPACS", method=method,
                               workers=workers, chunk=args.chunk, move_port=move_port,
                               dicomweb=server.dicomweb_url if method == "dicomweb" else None)
                assert summary.complete and summary.arrived == args.instances, summary
                rate = summary.instances_per_second
                base = base or rate
                print(f"| {method} | {workers} | {summary.arrived} | {summary.seconds:.2f} | {rate:.0f} | "
                      f"{summary.megabytes_per_second:.1f} | {rate / base:.2f}x |", flush=True)
                shutil.rmtree(store)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
