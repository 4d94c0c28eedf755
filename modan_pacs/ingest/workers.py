"""Header-reading worker processes that no single file can stop.

Each worker is a process (forked on Linux after this process has imported pydicom, spawned
elsewhere) that receives a list of paths over a pipe, reads their headers with
:func:`~modan_pacs.ingest.headers.read_rows` and sends the rows back. Before each file it writes
the file's position in the list and the time it started into its own slot of a shared array, so
this process always knows which file a worker holds. Then:

- **a file that hangs** (a stalled network mount, a pathological header) is stopped after
  ``file_timeout`` seconds by the worker's own alarm and becomes a ``timeout`` row; the worker goes
  on. A worker stuck where the alarm cannot reach (inside C code) is killed by this process
  ``kill_grace`` seconds later and handled as below, with reason ``timeout``;
- **a worker that dies** (a C extension crashing, the kernel's OOM killer, SIGKILL) is replaced by
  a new process; the file it held becomes a ``worker_crashed`` row and the rest of its list is
  handed out again (the files before it are read again: rows travel back per list, so a dead
  worker's earlier rows died with it). Nothing else is lost and the other workers never stop.

A worker that dies three times on the same list before touching a file (it cannot even start)
raises :class:`RuntimeError`: that is the machine's problem, not a file's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field

from modan_pacs.ingest.headers import error_row, quiet_worker, read_rows

_MAX_UNATTRIBUTED_DEATHS = 3
_FAILED = 70  # exit code of a worker that failed outside any file's reader (EX_SOFTWARE)
KILL_GRACE = 5.0  # seconds past file_timeout before a worker whose own alarm did not fire is killed


@dataclass
class _Job:
    """A list of paths to read, the caller's ``tag`` for it, and rows already settled for files
    taken out of it (those that crashed or hung a worker)."""

    paths: list[str]
    tag: Hashable
    rows: list[tuple] = field(default_factory=list)
    unattributed_deaths: int = 0


def _serve(conn, salt: bytes, file_timeout: float | None, progress, slot: int) -> None:
    """A worker's loop: receive a list of paths, send back its rows; ``None`` or a closed pipe ends it."""
    quiet_worker()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    while True:
        try:
            paths = conn.recv()
        except (EOFError, OSError):
            return
        if paths is None:
            return
        try:
            conn.send(read_rows(paths, salt, file_timeout=file_timeout, progress=progress, slot=slot))
        except Exception:  # read_header never raises: this is the process failing (memory, a pipe)
            os._exit(_FAILED)  # silently; the parent names the file it held and replaces it


class _Worker:
    def __init__(self, ctx, slot: int, args: tuple) -> None:
        self.slot = slot
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, *args, slot), daemon=True)
        self.process.start()
        child.close()
        self.job: _Job | None = None


class ReaderPool:
    """``workers`` header-reading processes fed lists of paths; see the module doc for what happens
    to a file that crashes or hangs one.

    Use as a context manager: :meth:`submit` lists, then call :meth:`results` until :attr:`busy` is
    False. Results come back in completion order as ``(rows, tag)``; ``rows`` holds one row per
    submitted path, in no particular order.

    Args:
        workers: number of processes (at least 1).
        salt: PatientID-hash salt, passed to :func:`read_rows`.
        file_timeout: seconds one file may take (None: no limit).
        kill_grace: seconds after ``file_timeout`` before a worker whose alarm did not fire is killed
            (default :data:`KILL_GRACE`).
    """

    def __init__(
        self, workers: int, salt: bytes, *, file_timeout: float | None = 60.0, kill_grace: float | None = None
    ) -> None:
        import multiprocessing

        import pydicom.filereader  # noqa: F401 - once here, inherited by forked workers

        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        self._file_timeout = file_timeout if file_timeout and file_timeout > 0 else None
        grace = KILL_GRACE if kill_grace is None else kill_grace
        self._kill_after = None if self._file_timeout is None else self._file_timeout + grace
        self._progress = self._ctx.RawArray("d", 2 * workers)  # per slot: position in the list (-1 idle), start time
        self._args = (salt, self._file_timeout, self._progress)
        self._queue: deque[_Job] = deque()
        self._done: list[tuple[list[tuple], Hashable]] = []
        self.replaced = 0  # workers that died or were killed and were replaced
        self._workers: list[_Worker] = []
        for slot in range(workers):
            self._workers.append(self._start(slot))

    def _start(self, slot: int) -> _Worker:
        self._progress[2 * slot] = -1
        return _Worker(self._ctx, slot, self._args)

    def __enter__(self) -> ReaderPool:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(kill=exc_type is not None)

    @property
    def waiting(self) -> int:
        """Lists submitted and not yet handed to a worker."""
        return len(self._queue)

    @property
    def busy(self) -> bool:
        """Some list is queued, being read, or finished and not yet returned by :meth:`results`."""
        return bool(self._queue or self._done or any(w.job is not None for w in self._workers))

    def submit(self, paths: list[str], tag: Hashable) -> None:
        """Queue ``paths`` to be read; its rows come back from :meth:`results` with ``tag``."""
        self._queue.append(_Job(list(paths), tag))
        self._dispatch()

    def results(self) -> list[tuple[list[tuple], Hashable]]:
        """Wait until at least one list is finished (or nothing is left) and return the finished ones."""
        from multiprocessing.connection import wait

        tick = None if self._kill_after is None else min(1.0, self._kill_after / 4)
        while not self._done and self.busy:
            busy = [w for w in self._workers if w.job is not None]
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=tick))
            for worker in busy:
                if worker.conn in ready or worker.process.sentinel in ready:
                    self._collect(worker)
            self._stop_stuck()
            self._dispatch()
        done, self._done = self._done, []
        return done

    def close(self, *, kill: bool = False) -> None:
        """Stop the workers: ask idle ones to exit, kill busy ones (or all with ``kill``)."""
        for worker in self._workers:
            if kill or worker.job is not None:
                worker.process.kill()
            else:
                try:
                    worker.conn.send(None)
                except OSError:
                    worker.process.kill()
        for worker in self._workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._workers = []

    def _dispatch(self) -> None:
        for worker in self._workers:
            if worker.job is None and self._queue:
                worker.job = self._queue.popleft()
                # died while idle: noticed (and the list handed out again) by results()
                with contextlib.suppress(OSError):
                    worker.conn.send(worker.job.paths)

    def _collect(self, worker: _Worker) -> None:
        try:
            rows = worker.conn.recv()
        except (EOFError, OSError):
            worker.process.join()
            self._lost(worker, "worker_crashed", _death(worker.process.exitcode))
            return
        except Exception as exc:  # a worker died mid-message and left a half pickle
            worker.process.kill()
            worker.process.join()
            self._lost(worker, "worker_crashed", f"its reading process sent a broken answer ({type(exc).__name__})")
            return
        job, worker.job = worker.job, None
        self._done.append((job.rows + rows, job.tag))

    def _stop_stuck(self) -> None:
        """Kill a worker whose current file has run past ``file_timeout + kill_grace``."""
        if self._kill_after is None:
            return
        now = time.monotonic()
        for worker in self._workers:
            position, started = self._progress[2 * worker.slot], self._progress[2 * worker.slot + 1]
            if worker.job is None or position < 0 or now - started <= self._kill_after or worker.conn.poll():
                continue
            worker.process.kill()
            worker.process.join()
            still = self._progress[2 * worker.slot + 1] == started  # not moved on just before the kill
            self._lost(
                worker,
                "timeout",
                f"no header after {self._kill_after:g} s; its reading process was stopped",
                blame=still,
            )

    def _lost(self, worker: _Worker, reason: str, detail: str, *, blame: bool = True) -> None:
        """``worker`` is dead: settle the file it held, hand the rest of its list out again, replace it."""
        job, worker.job = worker.job, None
        position = int(self._progress[2 * worker.slot])
        worker.conn.close()
        if blame and 0 <= position < len(job.paths):
            job.rows.append(error_row(job.paths[position], reason, detail))
            job.paths = job.paths[:position] + job.paths[position + 1 :]
        else:
            job.unattributed_deaths += 1
            if job.unattributed_deaths >= _MAX_UNATTRIBUTED_DEATHS:
                raise RuntimeError(
                    f"header-reading processes died {job.unattributed_deaths} times before reading "
                    f"a file ({detail}); is the machine out of memory or processes?"
                )
        if job.paths:
            self._queue.appendleft(job)
        else:
            self._done.append((job.rows, job.tag))
        self.replaced += 1
        self._workers[self._workers.index(worker)] = self._start(worker.slot)


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            how = f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"killed by signal {-exitcode}"
    else:
        how = f"exit code {exitcode}"
    return f"its header-reading process died ({how}) while reading this file; the process was replaced"
