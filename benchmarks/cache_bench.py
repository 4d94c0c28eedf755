"""Cache build speed: images/s of ``build_cache_from_index`` on generated 512 x 512 CT files.

The files are those of ``data_bench.py`` (uncompressed / RLE / JPEG 2000 in turn), indexed once
into ``--data``; each repeat builds a fresh cache of them (file units, ``series_volumes=False``,
as data_bench). Run it with two code versions on the same ``--data`` and alternate the runs to
compare them (docs/benchmarks/cache.md):

    .venv/bin/python benchmarks/cache_bench.py --data /tmp/cache_bench --files 300 --workers 2 --repeats 3
    git archive COMMIT modan_pacs | tar -x -C /tmp/base
    .venv/bin/python benchmarks/cache_bench.py --data /tmp/cache_bench --workers 2 --repeats 3 --code /tmp/base
"""

from __future__ import annotations

import argparse
import inspect
import shutil
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, required=True, help="folder for the generated files and their index (reused)"
    )
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--code",
        type=Path,
        help=(
            "import modan_pacs from this folder (e.g. `git archive COMMIT modan_pacs | tar -x -C DIR`) "
            "instead of the installed one"
        ),
    )
    args = parser.parse_args()
    if args.code is not None:  # bypass the editable install's finder so the other version is imported
        sys.meta_path = [f for f in sys.meta_path if "Editable" not in getattr(f, "__name__", "")]
        sys.path.insert(0, str(args.code.resolve()))
    import modan_pacs
    from modan_pacs.pixels.build import CacheSettings, build_cache_from_index

    print(f"code: {Path(modan_pacs.__file__).parent}")
    if not (args.data / "index" / "index.parquet").is_file():
        sys.path.insert(0, str(Path(__file__).parent))
        from data_bench import write_dicom_set

        from modan_pacs.ingest import build_index

        write_dicom_set(args.data / "dicom", args.files)
        build_index(args.data / "dicom", args.data / "index", workers=args.workers, salt_file=args.data / "salt")
    for repeat in range(args.repeats):
        out = args.data / f"cache_{repeat}"
        shutil.rmtree(out, ignore_errors=True)
        t0, c0 = time.perf_counter(), time.process_time()
        if "settings" in inspect.signature(build_cache_from_index).parameters:  # the settings object (since 2026-12-03)
            result = build_cache_from_index(
                args.data / "index", out, CacheSettings(size=args.size, series_volumes=False), workers=args.workers
            )
        else:  # an older --code version: loose keywords
            result = build_cache_from_index(
                args.data / "index", out, size=args.size, workers=args.workers, series_volumes=False
            )
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        # with --workers 1 all decoding runs in this process: its CPU time is robust to other load on the machine
        print(
            f"repeat {repeat}: {result.n_rows} images in {seconds:.2f} s = {result.n_rows / seconds:.1f} images/s; "
            f"this process's CPU {cpu:.2f} s = {1000 * cpu / max(1, result.n_rows):.2f} ms/image"
        )
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
