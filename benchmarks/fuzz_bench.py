"""The fuzz corpus of tests/ingest/test_ingest_fuzz.py: its size and how long indexing and caching it take.

Writes N mutants of the real pydicom / pydicom-data files (tests/ingest/fuzz_corpus.py; plus a FIFO
and a symbolic link loop) and runs, in this process, `modan-pacs index --workers W` and
`modan-pacs cache --index ... --workers W --size 32` on them, printing the seconds of each step,
the corpus size, and the index's reasons.

    .venv/bin/python benchmarks/fuzz_bench.py --n 1000 --workers 2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "ingest"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import pandas as pd
    from fuzz_corpus import write_fuzz_corpus
    from modan_pacs.cli.main import main as cli

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["MODAN_PACS_SALT_FILE"] = str(root / "salt")
        t0 = time.perf_counter()
        corpus = write_fuzz_corpus(root / "corpus", n=args.n, seed=args.seed)
        t_write = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in corpus["files"])
        steps = {}
        for name, argv in {
            "index": ["index", str(root / "corpus"), "--out", str(root / "idx"), "--workers", str(args.workers)],
            "cache": [
                "cache",
                "--index",
                str(root / "idx"),
                "--out",
                str(root / "cache"),
                "--workers",
                str(args.workers),
                "--size",
                "32",
            ],
        }.items():
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                code = cli(argv)
            steps[name] = (code, time.perf_counter() - start)
        errors = pd.read_parquet(root / "idx" / "errors.parquet")
        n_index = len(pd.read_parquet(root / "idx" / "index.parquet"))
        n_cache = len(pd.read_parquet(root / "cache" / "manifest.parquet"))
    print(
        f"corpus: {len(corpus['files'])} mutants of {len(corpus['sources'])} real files, {size / 2**20:.1f} MiB, "
        f"written in {t_write:.1f} s"
    )
    for name, (code, seconds) in steps.items():
        print(f"{name}: exit {code}, {seconds:.1f} s")
    print(f"indexed {n_index}, errors {len(errors)}, cached {n_cache}")
    print(errors["reason"].value_counts().to_string())
    print(f"cpu count {os.cpu_count()}, load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
