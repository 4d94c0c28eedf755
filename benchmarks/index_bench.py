"""Header indexing speed: plain pydicom.dcmread loop vs `modan-pacs index` with 1 and 2 workers.

Builds (once) a synthetic export of N realistic CT slices (512x512, 16-bit, ~0.5 MB each) and
measures, in one run, files/s and peak RSS of:
  (a) a one-process loop calling pydicom.dcmread(path) on every file (the issue's baseline),
  (b) the `modan-pacs index PATH --out DIR --workers W` command (its entry point, called in-process:
      CLI and vocabulary loading, walk, header reading, labelling, every output file, progress bar
      and summary) with W = 1 and 2, each into a fresh index.
Each timed span starts before the mode's own imports (pydicom for (a), the CLI for (b)).
Two figures per index run: the whole command, and its reading phase (IndexReport.read_seconds:
walking the folder, starting the workers, which includes importing pydicom, and reading every
header into part files; not the CLI/pandas imports, labelling or writing the outputs). The plain
loop's reading phase is the whole loop (import pydicom + dcmread of every file).
Every mode runs in its own subprocess so peak memory (ru_maxrss of the process, and of its largest
worker) is its own. The files are read once before timing so every mode reads from the page cache.
Modes run in the order given by --order (default plain, index-1, index-2, plain again), so a
change in machine load during the run shows up as two different plain-loop figures.

    .venv/bin/python benchmarks/index_bench.py --n 5000 --root /tmp/modan_bench_ct
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def generate(root: Path, n: int) -> list[Path]:
    import numpy as np

    from modan_pacs.demo import write_dicom_image

    files = sorted(p for p in root.rglob("*.dcm"))
    if len(files) > n or any(p.suffix != ".dcm" for p in root.rglob("*") if p.is_file()):
        # the index reads the whole folder: it must hold exactly the files the plain loop reads
        raise SystemExit(
            f"{root} holds {len(files)} .dcm files (and possibly others); --n {n} needs a folder "
            f"with exactly {n}: give another --root (it is generated there)"
        )
    if len(files) == n:
        return files
    rng = np.random.default_rng(0)
    base = rng.integers(0, 4096, size=(512, 512), dtype=np.uint16)
    parts = ["CHEST", "ABDOMEN", "HEAD", None]
    for i in range(n):
        write_dicom_image(
            root / f"study{i // 500:03d}" / f"series{(i // 100) % 5}" / f"slice{i:06d}.dcm",
            base,
            modality="CT",
            body_part=parts[i % 4],
            series_description="Ax 1.25mm",
            patient_id=f"P{i // 500:05d}",
            patient_name="BENCH^PATIENT",
            instance_number=i % 100 + 1,
        )
    return sorted(root.rglob("*.dcm"))[:n]


def run_mode(mode: str, root: Path, n: int, workers: int) -> dict:
    files = [str(f) for f in sorted(root.rglob("*.dcm"))[:n]]
    load_before = os.getloadavg()[0]
    cpu_before = os.times()
    start = time.perf_counter()
    if mode == "plain":
        import pydicom

        for f in files:
            pydicom.dcmread(f)
        count = len(files)
        seconds = read_seconds = time.perf_counter() - start
    else:
        import contextlib
        import io

        with tempfile.TemporaryDirectory() as out:
            with contextlib.redirect_stdout(io.StringIO()):  # progress bar and summary
                from modan_pacs.cli.main import main as cli

                import modan_pacs.ingest
                import modan_pacs.ingest.build

                reports = []
                build_index = modan_pacs.ingest.build.build_index

                def recording_build_index(*a, **k):  # the CLI's call, unchanged; keeps its report
                    reports.append(build_index(*a, **k))
                    return reports[-1]

                modan_pacs.ingest.build_index = recording_build_index
                rc = cli(
                    ["index", str(root), "--out", f"{out}/idx", "--workers", str(workers), "--salt-file", f"{out}/salt"]
                )
            seconds = time.perf_counter() - start
            if rc != 0:
                raise SystemExit(f"modan-pacs index exited {rc}")
            import pyarrow.parquet as pq

            count = pq.read_metadata(f"{out}/idx/index.parquet").num_rows
            read_seconds = reports[0].read_seconds
    cpu = os.times()
    cpu_s = (
        cpu.user
        - cpu_before.user
        + cpu.system
        - cpu_before.system
        + cpu.children_user
        - cpu_before.children_user
        + cpu.children_system
        - cpu_before.children_system
    )
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "mode": mode,
        "workers": workers,
        "files": count,
        "seconds": seconds,
        "files_per_s": count / seconds,
        "read_seconds": read_seconds,
        "read_files_per_s": count / read_seconds,
        "cpu_s": cpu_s,
        "peak_rss_mib": own,
        "worker_peak_rss_mib": kids,
        "load1_before": load_before,
        "load1_after": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="number of CT files (>= 5000 for the recorded figure)")
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "modan_bench_ct")
    ap.add_argument(
        "--order", default="plain,index-1,index-2,plain", help="modes to run, in order: plain, index-W (W workers)"
    )
    ap.add_argument("--child", nargs=2, metavar=("MODE", "WORKERS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_mode(args.child[0], args.root, args.n, int(args.child[1]))))
        return
    t0 = time.perf_counter()
    files = generate(args.root, args.n)
    print(
        f"{len(files)} files in {args.root} ({sum(f.stat().st_size for f in files) / 2**30:.2f} GiB), "
        f"ready in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    for f in files:  # page cache warm-up so all modes read from memory
        f.read_bytes()
    results = []
    for item in args.order.split(","):
        mode, workers = ("plain", 1) if item == "plain" else ("index", int(item.split("-")[1]))
        out = subprocess.run(
            [sys.executable, __file__, "--n", str(args.n), "--root", str(args.root), "--child", mode, str(workers)],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise SystemExit(f"{item} failed:\n{out.stderr[-3000:]}")
        res = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(res)
        print(json.dumps(res), flush=True)
    plains = [r for r in results if r["mode"] == "plain"]
    plain = max(r["files_per_s"] for r in plains)  # the faster plain run: a slow baseline never flatters the ratio
    print(f"\nratio baseline: the faster plain loop, {plain:.0f} files/s")
    print(
        "\n| mode | workers | files | whole run s | files/s | x plain loop | reading s | reading files/s "
        "| reading x plain loop | CPU s (all processes) | peak RSS main / worker (MiB) | load1 before -> after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        label = "pydicom.dcmread loop" if r["mode"] == "plain" else "modan-pacs index"
        worker_rss = f"{r['worker_peak_rss_mib']:.0f}" if r["mode"] == "index" and r["workers"] > 1 else "-"
        print(
            f"| {label} | {r['workers']} | {r['files']} | {r['seconds']:.2f} | {r['files_per_s']:.0f} | "
            f"{r['files_per_s'] / plain:.2f} | {r['read_seconds']:.2f} | {r['read_files_per_s']:.0f} | "
            f"{r['read_files_per_s'] / plain:.2f} | {r['cpu_s']:.2f} | {r['peak_rss_mib']:.0f} / {worker_rss} | "
            f"{r['load1_before']:.1f} -> {r['load1_after']:.1f} |"
        )
    print(f"\ncpu count: {os.cpu_count()}; load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
