"""C-GET through dcmtk's ``getscu`` (``modan-pacs pull --engine dcmtk``).

pynetdicom's pure-Python PDU and DIMSE work costs about 2 ms of CPU per instance, four times
getscu's whole process (docs/benchmarks/pull.md); where dcmtk is installed, this engine lets
getscu do the network part and keeps everything else of a pull:

- the plan's requests (whole series at SERIES level, else lists of instances) become query files,
  one ``getscu`` process per batch of requests (one association, one C-GET per request), and
  ``workers`` processes run side by side (no shared interpreter lock between them);
- getscu runs in bit-preserving mode (``+B``): the data set is written to disk exactly as the
  archive sent it, into a hidden ``.incoming-*`` folder of the store, under its SOP Instance UID;
- when the process has ended, each file is renamed into ``STUDY/SERIES/SOP.dcm`` (the folders
  named by the index, as for pynetdicom) and logged in ``pull_log.jsonl``; an instance nobody
  asked for is deleted and counted. If getscu did not end cleanly, only files that parse to
  their declared lengths are kept (:func:`is_complete`); the rest count as not received;
- instances getscu did not bring are asked for again through pynetdicom, which also offers the
  compressed syntaxes (getscu offers uncompressed ones only, and an archive that does not
  transcode refuses what it holds compressed); that second pass is logged with its count. What is
  still missing is reported with getscu's error line and pynetdicom's, and a re-run fetches it.

Checked with dcmtk 3.6.7 (Debian 12, 3.6.7-9~deb12u4). That build's getscu can end by SIGSEGV
after the final response of its last C-GET, before its final report and the release (seen with
series- and image-level requests; dcmqrscp of the same build segfaults in ``DUL_DropAssociation``):
getscu also exits with 1 when a request ends in a failure status (an archive refusing to send an
instance in the offered syntaxes). Either exit counts as clean when getscu's log holds one final
C-GET response per request, as every sub-operation was then answered and its file closed.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from modan_pacs.errors import InputError
from modan_pacs.pacs.association import PacsSettings
from modan_pacs.pacs.retrieve import (
    DimseResult,
    RetrievalUnit,
    _Counter,
    _identifier,
    fill_sop_classes,
    missing_units,
    retrieve_dimse,
)
from modan_pacs.pacs.store import Store

LOGGER = logging.getLogger(__name__)

ENGINES = ("pynetdicom", "dcmtk")
BATCH_INSTANCES = 256  # instances per getscu process (a process start is ~10 ms, 256 instances ~0.3 s)
_PDU_RANGE = (4096, 131072)  # what getscu's --max-pdu accepts
_FINAL_RESPONSE = re.compile(r"^I: Received C-GET Response \((?!Pending\))", re.MULTILINE)
_ERROR_LINE = re.compile(r"^[EF]: (.+)$", re.MULTILINE)


def getscu_binary() -> str:
    """Path of ``getscu``; raises InputError naming the package when it is not installed."""
    found = shutil.which("getscu")
    if found is None:
        raise InputError(
            "--engine dcmtk needs dcmtk's getscu on PATH (apt-get install dcmtk), or use --engine pynetdicom"
        )
    return found


def getscu_arguments(settings: PacsSettings, out: Path, queries: Sequence[Path]) -> list[str]:
    """The getscu command line for one association: study root, our AE titles and timeouts, +B, 128 KB PDUs."""
    args = [
        getscu_binary(),
        "--study",
        "--aetitle",
        settings.calling_aet,
        "--call",
        settings.called_aet,
        "--timeout",
        str(math.ceil(settings.connection_timeout)),
        "--acse-timeout",
        str(math.ceil(settings.acse_timeout)),
        "--dimse-timeout",
        str(math.ceil(settings.dimse_timeout)),
        "--bit-preserving",
        "--verbose",
        "--output-directory",
        str(out),
    ]
    # 0 (pynetdicom's "unlimited") -> getscu's largest: with +B each received PDV is one write, and
    # 128 KB PDUs made getscu +B 1.24x faster than its default 16 KB (docs/benchmarks/pull.md)
    pdu = min(max(settings.max_pdu or _PDU_RANGE[1], _PDU_RANGE[0]), _PDU_RANGE[1])
    return [*args, "--max-pdu", str(pdu), settings.host, str(settings.port), *map(str, queries)]


def is_complete(path: Path) -> bool:
    """Whether a DICOM file holds every byte its elements declare (not cut off mid-write).

    Every top-level element of defined length must have its whole value; an element of undefined
    length must reach its delimiter (pydicom raises otherwise).
    """
    from pydicom import dcmread
    from pydicom.dataelem import RawDataElement

    try:
        ds = dcmread(path, force=False)
    except Exception:  # any parse failure means the file is not usable
        return False
    for tag in ds.keys():
        raw = ds.get_item(tag)
        if isinstance(raw, RawDataElement) and raw.length != 0xFFFFFFFF and raw.value is not None:
            if len(raw.value) != raw.length:
                return False
    return "SOPInstanceUID" in ds


def batches(units: Sequence[RetrievalUnit], workers: int, size: int | None = None) -> list[list[RetrievalUnit]]:
    """Requests in order, cut into batches of about ``size`` instances (default :data:`BATCH_INSTANCES`;
    smaller so that every worker gets one)."""
    total = sum(len(u.sop_uids) for u in units)
    size = max(1, min(size or BATCH_INSTANCES, math.ceil(total / max(workers, 1))))
    out: list[list[RetrievalUnit]] = [[]]
    count = 0
    for unit in units:
        if out[-1] and count + len(unit.sop_uids) > size:
            out.append([])
            count = 0
        out[-1].append(unit)
        count += len(unit.sop_uids)
    return [b for b in out if b]


@dataclass
class _Run:
    """One getscu process: its exit, whether it ended cleanly, its first error line."""

    returncode: int
    clean: bool
    error: str | None


class GetscuEngine:
    """Runs batches of C-GET requests through getscu processes and moves what they received into the store."""

    def __init__(
        self,
        settings: PacsSettings,
        store: Store,
        expected: dict[str, tuple[str, str]],
        counter: _Counter,
    ) -> None:
        self.settings, self.store, self.expected, self.counter = settings, store, expected, counter
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()

    def run_batch(self, units: list[RetrievalUnit]) -> list[str]:
        """One getscu association for ``units``; returns one-line problems (empty when getscu ended cleanly)."""
        if self.stop.is_set():
            return []
        folder = self.store.incoming_folder()
        try:
            queries = self._write_queries(folder, units)
            received = folder / "received"
            received.mkdir()
            args = getscu_arguments(self.settings, received, queries)
            run = self._getscu(args, folder / "getscu.log", len(queries))
            if not self.stop.is_set():
                self._adopt(received, trust=run.clean)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if run.clean or self.stop.is_set():
            return []
        what = f"{len(units)} request(s) from {units[0].label}"
        return [f"getscu exited with {run.returncode} on {what}: {run.error or 'no error line'}"]

    @staticmethod
    def _write_queries(folder: Path, units: list[RetrievalUnit]) -> list[Path]:
        paths = []
        for n, unit in enumerate(units):
            path = folder / f"q{n:05d}.dcm"
            _identifier(unit).save_as(path, implicit_vr=True, little_endian=True)
            paths.append(path)
        return paths

    def _getscu(self, args: list[str], log: Path, queries: int) -> _Run:
        with open(log, "wb") as handle:
            proc = subprocess.Popen(
                args, stdout=handle, stderr=subprocess.STDOUT, env=dict(os.environ, TCP_NODELAY="1")
            )
            with self._lock:
                self._running.add(proc)
            try:
                code = proc.wait()
            finally:
                with self._lock:
                    self._running.discard(proc)
        text = log.read_text(errors="replace")
        # every C-GET had its final response: every sub-operation was answered and its file closed,
        # whatever the exit (1 when a request ended in a failure status, SIGSEGV: see the module notes)
        finished = len(_FINAL_RESPONSE.findall(text)) == queries
        error = next(iter(_ERROR_LINE.findall(text)), None)
        return _Run(code, (code == 0 or finished) and not self.stop.is_set(), error)

    def _adopt(self, received: Path, *, trust: bool) -> None:
        """Rename each received file into the store (only complete ones unless getscu ended cleanly)."""
        for path in received.iterdir():
            where = self.expected.get(path.name)
            if where is None:
                self.counter.add_unrequested()
                LOGGER.info("dropped an instance that was not requested: %r", path.name[:80])
                continue
            if not trust and not is_complete(path):
                continue
            size = path.stat().st_size
            try:
                _, new = self.store.move_in(where[0], where[1], path.name, path)
            except OSError as exc:  # as the pynetdicom engine's writer: logged, not received, a re-run fetches it
                self.store.record(status="failed", sop_instance_uid=path.name, reason=f"move failed: {exc.strerror}")
                continue
            if new:
                self.counter.add(size)

    def kill(self) -> None:
        """Stop every running getscu (an interrupted pull); nothing they wrote is kept."""
        self.stop.set()
        with self._lock:
            for proc in self._running:
                proc.kill()


def retrieve_getscu(
    settings: PacsSettings,
    units: Sequence[RetrievalUnit],
    store: Store,
    *,
    expected: dict[str, tuple[str, str]],
    workers: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
) -> DimseResult:
    """C-GET ``units`` through ``workers`` parallel getscu processes; then pynetdicom for what they missed."""
    getscu_binary()
    counter = _Counter(on_progress)
    engine = GetscuEngine(settings, store, expected, counter)
    work = batches(units, workers)
    problems: list[str] = []
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modan-pacs-getscu")
    try:
        for future in as_completed([pool.submit(engine.run_batch, batch) for batch in work]):
            problems.extend(future.result())
    except BaseException:
        engine.kill()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    missing = missing_units(units, store, expected)
    if not missing:  # getscu's errors, if any, cost no instance
        return DimseResult(counter.arrived, counter.bytes, counter.unrequested, len(units), [])
    # a getscu that ended cleanly without them: it offers uncompressed syntaxes only, and an archive
    # that does not transcode refuses what it holds compressed; pynetdicom offers those syntaxes
    LOGGER.warning(
        "getscu did not bring %d instance(s); asking for them through pynetdicom (compressed syntaxes offered)",
        sum(len(u.sop_uids) for u in missing),
    )
    fill_sop_classes(settings, missing)
    again = retrieve_dimse(settings, missing, store, expected=expected, method="get", on_progress=on_progress)
    still = bool(missing_units(units, store, expected))
    return DimseResult(
        counter.arrived + again.arrived,
        counter.bytes + again.bytes,
        counter.unrequested + again.unrequested,
        len(units) + again.requests,
        (problems if still else []) + again.problems,
    )
