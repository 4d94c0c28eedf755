"""Header indexing speed: plain pydicom.dcmread loop vs `modan-pacs index` with 1 and 2 workers.

Builds (once) a synthetic export of N realistic CT slices (512x512, 16-bit, ~0.5 MB each) and
measures, in one run, files/s and peak RSS of:
  (a) a one-process loop calling pydicom.dcmread(path) on every file,
  (b) build_index (what `modan-pacs index` runs) with 1 and with 2 worker processes, into a fresh index.
Every mode runs in its own subprocess so peak memory (ru_maxrss of the process + its children) is its own.
The files are read once before timing so every mode reads from the page cache.

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
    if len(files) >= n:
        return files[:n]
    rng = np.random.default_rng(0)
    base = rng.integers(0, 4096, size=(512, 512), dtype=np.uint16)
    parts = ["CHEST", "ABDOMEN", "HEAD", None]
    for i in range(n):
        write_dicom_image(
            root / f"study{i // 500:03d}" / f"series{(i // 100) % 5}" / f"slice{i:06d}.dcm", base, modality="CT",
            body_part=parts[i % 4], series_description="Ax 1.25mm", patient_id=f"P{i // 500:05d}",
            patient_name="BENCH^PATIENT", instance_number=i % 100 + 1,
        )
    return sorted(root.rglob("*.dcm"))[:n]


def run_mode(mode: str, root: Path, n: int, workers: int) -> dict:
    files = sorted(root.rglob("*.dcm"))[:n]
    start = time.perf_counter()
    if mode == "plain":
        import pydicom

        for f in files:
            pydicom.dcmread(f)
        count = len(files)
    else:
        from modan_pacs.ingest import build_index

        with tempfile.TemporaryDirectory() as out:
            report = build_index(root, Path(out) / "idx", workers=workers,
                                 salt_file=Path(out) / "salt")
            count = len(report.tables.frame)
    seconds = time.perf_counter() - start
    kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return {"mode": mode, "workers": workers, "files": count, "seconds": seconds,
            "files_per_s": count / seconds, "peak_rss_mib": kib / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="number of CT files (>= 5000 for the recorded figure)")
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "modan_bench_ct")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "WORKERS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_mode(args.child[0], args.root, args.n, int(args.child[1]))))
        return
    t0 = time.perf_counter()
    files = generate(args.root, args.n)
    print(f"{len(files)} files in {args.root} ({sum(f.stat().st_size for f in files) / 2**30:.2f} GiB), "
          f"ready in {time.perf_counter() - t0:.1f} s", flush=True)
    for f in files:  # page cache warm-up so all modes read from memory
        f.read_bytes()
    results = []
    for mode, workers in (("plain", 1), ("index", 1), ("index", 2)):
        out = subprocess.run([sys.executable, __file__, "--n", str(args.n), "--root", str(args.root),
                              "--child", mode, str(workers)], capture_output=True, text=True, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(res)
        print(json.dumps(res), flush=True)
    plain = results[0]["files_per_s"]
    print("\n| mode | workers | files | seconds | files/s | x plain loop | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        label = "pydicom.dcmread loop" if r["mode"] == "plain" else "modan-pacs index"
        print(f"| {label} | {r['workers']} | {r['files']} | {r['seconds']:.2f} | {r['files_per_s']:.0f} | "
              f"{r['files_per_s'] / plain:.2f} | {r['peak_rss_mib']:.0f} |")
    print(f"\ncpu count: {os.cpu_count()}; load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
