"""Build or update an index from an export folder: walk, read headers in worker processes, write.

Headers are read in chunks by worker processes (forked on Linux) that send the rows back; each
chunk becomes one Parquet part file in ``OUT/.ingest/``, written by this process under a temporary
name and renamed, so a part is either complete or absent. The parts are the resumable state: a
re-run (or a run after SIGKILL) reads only files whose ``(path, size, mtime)`` is not in a part
yet, then merges the parts keeping the newest row per path and dropping files that disappeared,
compacts them into one part, and hands the merged records to
:func:`modan_pacs.ingest.store.write_index`. Memory during reading holds only the list of paths
and at most two chunks of rows per worker, never the parsed datasets.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from modan_pacs.errors import InputError
from modan_pacs.ingest.headers import PART_SCHEMA, RAW_COLUMNS, quiet_worker, read_chunk, read_rows, write_part
from modan_pacs.ingest.salt import load_or_create_salt
from modan_pacs.ingest.store import IndexTables, write_index
from modan_pacs.ingest.walk import dicomdir_missing_files, iter_files
from modan_pacs.labels import Vocabulary

STATE_DIR = ".ingest"
_MIN_FILES_FOR_POOL = 200
_RETRY_REASONS = {"permission_denied", "unreadable"}  # re-read even when unchanged (access may be fixed)

ProgressCallback = Callable[[int, int], None]


@dataclass
class IndexReport:
    """What a run did: the written tables and the file counts of this run."""

    tables: IndexTables
    out_dir: Path
    n_files: int  # regular files found under PATH
    n_read: int  # headers read in this run (new, changed, or left over by an interrupted run)
    n_unchanged: int  # files skipped because (path, size, mtime) was already indexed
    seconds: float  # the whole call
    read_seconds: float = 0.0  # walking the folder and reading the headers into part files (no labelling or output)


def _worker_pool(n: int) -> ProcessPoolExecutor:
    """Header-reading processes. On Linux they are forked after this process has imported pydicom:
    no new interpreter, no re-import of the caller's ``__main__`` or of pydicom, which would cost
    more than reading thousands of headers. Workers only read files and send rows back; this
    process writes the parts, so a worker never touches pyarrow or rich state it inherited.
    Elsewhere the workers are spawned.
    """
    import multiprocessing

    import pydicom.filereader  # noqa: F401 - once here, inherited by the forked workers

    method = "fork" if sys.platform.startswith("linux") else "spawn"
    return ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context(method),
                               initializer=quiet_worker)


def _part_files(state: Path) -> list[Path]:
    return sorted(state.glob("part-*.parquet"))


def _read_parts(parts: list[Path], columns: list[str] | None = None) -> pd.DataFrame:
    """Rows of all parts, newest row per path (parts sort oldest first by name)."""
    if not parts:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in (columns or PART_SCHEMA.names)})
    tables = [pq.read_table(p, columns=columns) for p in parts]
    frame = pa.concat_tables(tables).to_pandas()
    return frame.drop_duplicates("path", keep="last").reset_index(drop=True)


def _auto_chunk(n_todo: int, workers: int) -> int:
    # Enough chunks to balance workers and show progress; big enough to amortise a part write.
    return max(8, min(500, math.ceil(n_todo / max(1, workers * 8))))


def build_index(
    path: str | Path,
    out_dir: str | Path,
    *,
    vocabulary: Vocabulary | None = None,
    workers: int | None = None,
    salt_file: str | Path | None = None,
    chunk_size: int = 0,
    progress: ProgressCallback | None = None,
) -> IndexReport:
    """Index every DICOM image under ``path`` into ``out_dir`` (see module doc for resuming).

    Args:
        path: export folder (DICOMDIR trees and loose files, any names, nested) or one file.
        out_dir: index folder; may not be ``path`` itself. Created if absent.
        vocabulary: label vocabulary (default: the shipped one).
        workers: header-reading processes (default: CPU count); 1 reads in this process.
        salt_file: PatientID-hash salt file, outside ``out_dir`` (default: see :mod:`modan_pacs.ingest.salt`).
        chunk_size: files per part file (0 = automatic).
        progress: called as ``progress(files_done, files_to_read)`` while reading.

    Raises:
        InputError: ``path`` does not exist, holds no readable DICOM image, or the options are invalid.
    """
    start = time.perf_counter()
    root = Path(path).expanduser()
    if not root.exists():
        raise InputError(f"PATH {root} does not exist")
    out = Path(out_dir).expanduser().absolute()
    if out == root.absolute():
        raise InputError(f"--out {out} must not be the folder being indexed")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    if chunk_size < 0:
        raise InputError(f"chunk size must be >= 0, got {chunk_size}")
    vocab = vocabulary if vocabulary is not None else Vocabulary.load()
    salt = load_or_create_salt(salt_file, forbidden_dir=out)

    state = out / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    for stale in state.glob(".part-*.tmp-*"):
        stale.unlink(missing_ok=True)
    known = _read_parts(_part_files(state), ["path", "size", "mtime", "error"])
    known_map = {p: (s, m, e) for p, s, m, e in zip(known["path"], known["size"], known["mtime"], known["error"])}
    del known

    read_start = time.perf_counter()
    walked: set[str] = set()
    todo: list[str] = []
    walk_errors: list[dict] = []
    dicomdirs: list[Path] = []
    for file_path, size, mtime in iter_files(root, exclude=(out,)):
        if size is None:
            walk_errors.append({"path": file_path, "reason": "permission_denied" if "permission" in mtime else "unreadable",
                                "detail": mtime})
            continue
        walked.add(file_path)
        if os.path.basename(file_path).upper() == "DICOMDIR":
            dicomdirs.append(Path(file_path))
        prev = known_map.get(file_path)
        if prev is not None and prev[0] == size and prev[1] == mtime and prev[2] not in _RETRY_REASONS:
            continue
        todo.append(file_path)
    del known_map
    n_unchanged = len(walked) - len(todo)

    stamp = time.time_ns()
    size = chunk_size or _auto_chunk(len(todo), workers)
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    part_names = [str(state / f"part-{stamp:020d}-{i:06d}.parquet") for i in range(len(chunks))]
    done = 0
    if progress:
        progress(0, len(todo))
    if workers == 1 or len(chunks) <= 1 or len(todo) < _MIN_FILES_FOR_POOL:  # a pool costs ~0.3 s (pydicom import, fork)
        for chunk, name in zip(chunks, part_names):
            done += read_chunk(chunk, name, salt)
            if progress:
                progress(done, len(todo))
    else:
        with _worker_pool(min(workers, len(chunks))) as pool:
            pending: dict = {}  # future -> its part file
            queue = list(zip(chunks, part_names))
            queue.reverse()
            while queue or pending:
                while queue and len(pending) < 2 * workers:  # bounded: chunk lists are not all in flight
                    chunk, name = queue.pop()
                    pending[pool.submit(read_rows, chunk, salt)] = name
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    done += write_part(fut.result(), pending.pop(fut))
                if progress:
                    progress(done, len(todo))

    read_seconds = time.perf_counter() - read_start
    parts = _part_files(state)
    merged = _read_parts(parts)
    merged = merged[merged["path"].isin(walked)].sort_values("path", kind="stable").reset_index(drop=True)
    if todo or len(parts) > 1:
        compact = state / f"part-{time.time_ns():020d}-compact.parquet"
        tmp = compact.with_name(f".{compact.name}.tmp-{os.getpid()}")
        pq.write_table(pa.Table.from_pandas(merged, schema=PART_SCHEMA, preserve_index=False), tmp)
        os.replace(tmp, compact)
        for old in parts:
            if old != compact:
                old.unlink(missing_ok=True)

    ok = merged["error"].isna()
    good = merged.loc[ok, list(RAW_COLUMNS)].reset_index(drop=True)
    bad = merged.loc[~ok]
    errors = pd.concat(
        [
            pd.DataFrame({"path": bad["path"], "reason": bad["error"], "detail": bad["error_detail"]}),
            pd.DataFrame(walk_errors, columns=["path", "reason", "detail"]),
            pd.DataFrame(
                [{"path": m, "reason": "missing_referenced_file", "detail": f"referenced by {d}"}
                 for d in dicomdirs for m in dicomdir_missing_files(d)],
                columns=["path", "reason", "detail"],
            ),
        ],
        ignore_index=True,
    )
    if good.empty:
        reasons = errors["reason"].value_counts().to_dict()
        raise InputError(f"no DICOM image found under {root} ({len(walked)} files; not indexed: {reasons or 'none'})")
    tables = write_index(good, out, vocab, errors)
    return IndexReport(tables=tables, out_dir=out, n_files=len(walked), n_read=len(todo),
                       n_unchanged=n_unchanged, seconds=time.perf_counter() - start,
                       read_seconds=read_seconds)
