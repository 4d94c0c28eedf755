"""Build or update an index from an export folder: walk, read headers in worker processes, write.

Headers are read in chunks by worker processes (:class:`~modan_pacs.ingest.workers.ReaderPool`:
forked on Linux; a file that crashes or hangs one costs only its own row) that send the rows back; each
chunk becomes one Parquet part file in ``OUT/.ingest/``, written by this process under a temporary
name and renamed, so a part is either complete or absent. The parts are the resumable state: a
re-run (or a run after SIGKILL) reads only files whose ``(path, size, mtime)`` is not in a part
yet, then merges the parts keeping the newest row per path and dropping files that disappeared,
compacts them into one part, and hands the merged records to
:func:`modan_pacs.ingest.store.write_index`. Memory during reading holds only the list of paths,
at most two chunks of rows per worker, never the parsed datasets, and this run's rows as Arrow
tables (a few hundred bytes per file).

Start-up order, for speed: the workers are forked as soon as the folder is walked, before this
process imports pandas and the labelling code (~0.4 s), which it then does while they read.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from modan_pacs.errors import InputError
from modan_pacs.fileio import atomic_write
from modan_pacs.ingest.headers import PART_SCHEMA, RAW_COLUMNS, read_rows, write_part
from modan_pacs.ingest.salt import load_or_create_salt
from modan_pacs.ingest.walk import dicomdir_missing_files, iter_files
from modan_pacs.ingest.workers import ReaderPool
from modan_pacs.labels.vocabulary import Vocabulary

if TYPE_CHECKING:
    import pandas as pd

    from modan_pacs.ingest.store import IndexTables

STATE_DIR = ".ingest"
_WALK_AHEAD = 4000  # files walked before reading starts; a larger export is walked while the workers read
_STREAM_CHUNK = 500  # files per part when the total is not known yet (the largest automatic chunk)
# re-read even when unchanged: access may be fixed, a mount may answer again, a crash may not recur
_RETRY_REASONS = {"permission_denied", "unreadable", "timeout", "worker_crashed"}
DEFAULT_FILE_TIMEOUT = 60.0

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


def _part_files(state: Path) -> list[Path]:
    return sorted(state.glob("part-*.parquet"))


def _read_parts(parts: list[Path], columns: list[str] | None = None) -> pd.DataFrame:
    """Rows of all parts, newest row per path (parts sort oldest first by name)."""
    import pandas as pd
    import pyarrow.parquet as pq

    if not parts:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in (columns or PART_SCHEMA.names)})
    tables = [pq.read_table(p, columns=columns) for p in parts]
    frame = pa.concat_tables(tables).to_pandas()
    return frame.drop_duplicates("path", keep="last").reset_index(drop=True)


def _import_for_output() -> None:
    """What the end of the run needs (pandas, Parquet, the labelling code), imported while the
    workers read instead of before they start."""
    import pyarrow.parquet  # noqa: F401

    import modan_pacs.ingest.store  # noqa: F401 - pandas, numpy, labels.assign


def _merge(old_parts: list[Path], new: list[pa.Table], walked: set[str]) -> pa.Table:
    """One table, sorted by path: this run's rows plus the rows of earlier parts that this run did
    not re-read (newest earlier row per path), for files still present."""
    new_table = pa.concat_tables(new) if new else PART_SCHEMA.empty_table()
    if not old_parts:
        merged = new_table
    else:
        old = _read_parts(old_parts)  # newest earlier row per path
        keep = old["path"].isin(walked) & ~old["path"].isin(new_table.column("path").to_pylist())
        old_table = pa.Table.from_pandas(old.loc[keep], schema=PART_SCHEMA, preserve_index=False)
        merged = pa.concat_tables([old_table, new_table])
    # (no duplicate paths: this run reads each walked path once, and earlier rows of those paths are left out)
    return merged.sort_by("path")


class _Walk:
    """The folder walk, advanced on demand: files to read go to :attr:`todo`, unchanged files
    (same size and mtime as in an earlier part, and no retryable error) are only counted."""

    def __init__(self, files, known: dict[str, tuple]) -> None:
        self._files, self._known = files, known
        self.walked: set[str] = set()
        self.todo: list[str] = []
        self.errors: list[dict] = []
        self.dicomdirs: list[Path] = []
        self.done = False

    def advance(self, n: int | None) -> bool:
        """Walk until ``n`` more files are to read (``None``: to the end). False once the walk is over."""
        target = None if n is None else len(self.todo) + n
        for file_path, size, mtime in self._files:
            if size is None:  # a folder that cannot be listed, a FIFO, a broken link: (reason, detail)
                self.errors.append({"path": file_path, "reason": mtime[0], "detail": mtime[1]})
                continue
            self.walked.add(file_path)
            if os.path.basename(file_path).upper() == "DICOMDIR":
                self.dicomdirs.append(Path(file_path))
            prev = self._known.get(file_path)
            if prev is not None and prev[0] == size and prev[1] == mtime and prev[2] not in _RETRY_REASONS:
                continue
            self.todo.append(file_path)
            if target is not None and len(self.todo) >= target:
                return True
        self.done = True
        return False


def _chunker(walk: _Walk, size: int, state: Path, stamp: int) -> Callable[[], tuple[list[str], str] | None]:
    """``next_chunk()``: the next ``size`` files to read and their part file name in ``state``
    (``part-<stamp>-<n>.parquet``), walking on as needed; ``None`` when every walked file has been
    handed out and the walk is over."""
    position, number = 0, 0

    def next_chunk() -> tuple[list[str], str] | None:
        nonlocal position, number
        while not walk.done and len(walk.todo) - position < size:
            walk.advance(size)
        if position >= len(walk.todo):
            return None
        chunk = walk.todo[position : position + size]
        position += len(chunk)
        name = str(state / f"part-{stamp:020d}-{number:06d}.parquet")
        number += 1
        return chunk, name

    return next_chunk


def _read_here(
    next_chunk, salt: bytes, file_timeout: float | None, wrote: Callable[[pa.Table], None]
) -> list[pa.Table]:
    """Read every chunk in this process; returns this run's part tables (kept for the merge)."""
    tables = []
    while (item := next_chunk()) is not None:
        tables.append(write_part(read_rows(item[0], salt, file_timeout=file_timeout), item[1]))
        wrote(tables[-1])
    _import_for_output()
    return tables


def _read_in_pool(
    next_chunk, n_workers: int, salt: bytes, file_timeout: float | None, wrote: Callable[[pa.Table], None]
) -> list[pa.Table]:
    """Read every chunk in ``n_workers`` reading processes; this process writes the parts."""
    tables = []
    with ReaderPool(n_workers, salt, file_timeout=file_timeout) as pool:
        imported = False
        item = next_chunk()
        while item is not None or pool.busy:
            while item is not None and pool.waiting < n_workers:  # bounded: chunk lists are not all in flight
                pool.submit(*item)
                item = next_chunk()  # (walks on while the workers read)
            if not imported:  # the workers are busy now: import what the output needs meanwhile
                _import_for_output()
                imported = True
            for rows, part in pool.results():
                tables.append(write_part(rows, part))
                wrote(tables[-1])
    return tables


def _auto_chunk(n_todo: int, workers: int) -> int:
    # Enough chunks to balance workers and show progress; big enough to amortise a part write.
    return max(8, min(500, math.ceil(n_todo / max(1, workers * 8))))


def _check_options(
    path, out_dir, workers: int | None, chunk_size: int, file_timeout: float | None
) -> tuple[Path, Path, int, bool]:
    """``(root, absolute out, workers, in_process)`` after checking the options of :func:`build_index`."""
    root = Path(path).expanduser()
    if not root.exists():
        raise InputError(f"PATH {root} does not exist")
    out = Path(out_dir).expanduser().absolute()
    if out == root.absolute():
        raise InputError(f"--out {out} must not be the folder being indexed")
    in_process = workers == 1  # only when asked for: the default always reads in separate processes
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    if chunk_size < 0:
        raise InputError(f"chunk size must be >= 0, got {chunk_size}")
    if file_timeout is not None and file_timeout < 0:
        raise InputError(f"--file-timeout must be >= 0 seconds, got {file_timeout}")
    return root, out, workers, in_process


def _open_state(state: Path) -> tuple[list[Path], dict[str, tuple]]:
    """Create the state folder, drop temporary files a killed run left, and return the part files
    with ``{path: (size, mtime, error)}`` of every file they hold."""
    state.mkdir(parents=True, exist_ok=True)
    for stale in state.glob(".part-*.tmp-*"):
        stale.unlink(missing_ok=True)
    old_parts = _part_files(state)
    known_map: dict[str, tuple] = {}
    if old_parts:
        known = _read_parts(old_parts, ["path", "size", "mtime", "error"])
        known_map = {p: (s, m, e) for p, s, m, e in zip(known["path"], known["size"], known["mtime"], known["error"])}
    return old_parts, known_map


def _compact(state: Path, merged_table: pa.Table, *, rewrite: bool) -> None:
    """Replace the part files by one holding ``merged_table`` when files were read (``rewrite``) or
    several parts exist."""
    import pyarrow.parquet as pq

    parts = _part_files(state)
    if rewrite or len(parts) > 1:
        compact = state / f"part-{time.time_ns():020d}-compact.parquet"
        atomic_write(compact, functools.partial(pq.write_table, merged_table))
        for old in parts:
            if old != compact:
                old.unlink(missing_ok=True)


def _error_table(bad: pd.DataFrame, walk_errors: list, dicomdirs: list) -> pd.DataFrame:
    """``errors.parquet`` rows: unreadable files, walk errors, files a DICOMDIR names but lacks."""
    import pandas as pd

    columns = ["path", "reason", "detail"]
    missing = [
        {"path": m, "reason": "missing_referenced_file", "detail": f"referenced by {d}"}
        for d in dicomdirs
        for m in dicomdir_missing_files(d)
    ]
    return pd.concat(
        [
            pd.DataFrame({"path": bad["path"], "reason": bad["error"], "detail": bad["error_detail"]}),
            pd.DataFrame(walk_errors, columns=columns),
            pd.DataFrame(missing, columns=columns),
        ],
        ignore_index=True,
    )


def build_index(
    path: str | Path,
    out_dir: str | Path,
    *,
    vocabulary: Vocabulary | None = None,
    workers: int | None = None,
    salt_file: str | Path | None = None,
    chunk_size: int = 0,
    file_timeout: float | None = DEFAULT_FILE_TIMEOUT,
    progress: ProgressCallback | None = None,
) -> IndexReport:
    """Index every DICOM image under ``path`` into ``out_dir`` (see module doc for resuming).

    Args:
        path: export folder (DICOMDIR trees and loose files, any names, nested) or one file.
        out_dir: index folder; may not be ``path`` itself. Created if absent.
        vocabulary: label vocabulary (default: the shipped one).
        workers: header-reading processes (default: CPU count, at least one separate process);
            1 reads in this process (a file that crashes the process then ends the run).
        salt_file: PatientID-hash salt file, outside ``out_dir`` (default: see :mod:`modan_pacs.ingest.salt`).
        chunk_size: files per part file (0 = automatic).
        file_timeout: seconds one file's header may take; past that the file is a ``timeout`` error
            row and the run goes on (None or 0: no limit). See :mod:`modan_pacs.ingest.workers` for
            files that crash a reading process.
        progress: called as ``progress(files_done, files_to_read)`` while reading.

    Raises:
        InputError: ``path`` does not exist, holds no readable DICOM image, or the options are invalid.
    """
    start = time.perf_counter()
    root, out, workers, in_process = _check_options(path, out_dir, workers, chunk_size, file_timeout)
    vocab = vocabulary if vocabulary is not None else Vocabulary.load()
    salt = load_or_create_salt(salt_file, forbidden_dir=out)
    state = out / STATE_DIR
    old_parts, known_map = _open_state(state)

    read_start = time.perf_counter()
    walk = _Walk(iter_files(root, exclude=(out,)), known_map)
    # Walk ahead a little: a small export is walked to the end and chunked for balance; a large one
    # starts its workers now and the rest of the walk runs while they read.
    finished = not walk.advance(_WALK_AHEAD)
    todo = walk.todo
    # Reading processes even for a handful of files (starting them costs ~15 ms): a file that crashes
    # or hangs one costs only itself. workers=1 reads in this process (an alarm still stops a hang).
    serial = in_process or (finished and not todo)
    size = chunk_size or (_auto_chunk(len(todo), workers) if finished else _STREAM_CHUNK)
    stamp = time.time_ns()
    next_chunk = _chunker(walk, size, state, stamp)
    counted = [0]

    def wrote(table: pa.Table) -> None:
        counted[0] += table.num_rows
        if progress:
            progress(counted[0], len(todo))

    if progress:
        progress(0, len(todo))
    if serial:
        new_tables = _read_here(next_chunk, salt, file_timeout, wrote)
    else:
        n_workers = workers if not finished else min(workers, -(-len(todo) // size))
        new_tables = _read_in_pool(next_chunk, n_workers, salt, file_timeout, wrote)
    del known_map
    walked, walk_errors, dicomdirs = walk.walked, walk.errors, walk.dicomdirs
    n_unchanged = len(walked) - len(todo)

    from modan_pacs.ingest.store import write_index

    read_seconds = time.perf_counter() - read_start
    merged_table = _merge(old_parts, new_tables, walked)
    del new_tables
    _compact(state, merged_table, rewrite=bool(todo))
    merged = merged_table.to_pandas()
    del merged_table

    ok = merged["error"].isna()
    good = merged.loc[ok, list(RAW_COLUMNS)].reset_index(drop=True)
    errors = _error_table(merged.loc[~ok], walk_errors, dicomdirs)
    if good.empty:
        reasons = errors["reason"].value_counts().to_dict()
        raise InputError(f"no DICOM image found under {root} ({len(walked)} files; not indexed: {reasons or 'none'})")
    tables = write_index(good, out, vocab, errors)
    return IndexReport(
        tables=tables,
        out_dir=out,
        n_files=len(walked),
        n_read=len(todo),
        n_unchanged=n_unchanged,
        seconds=time.perf_counter() - start,
        read_seconds=read_seconds,
    )
