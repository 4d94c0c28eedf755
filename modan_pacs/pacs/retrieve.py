"""Retrieve instances from a PACS into a local STORE: C-GET, C-MOVE or DICOMweb WADO-RS.

The work is a list of :class:`RetrievalUnit` (a whole series at SERIES level, or a list of its
instances at IMAGE level). Units run on ``workers`` threads, each with its own association
(parallel associations). Instances already in the store are skipped, so an interrupted pull
resumes where it stopped.

- **Receiving** (C-GET and C-MOVE alike): the C-STORE handler decodes nothing. The data set is
  written as received after a preamble and the file meta pynetdicom would write
  (:class:`FileMetaEncoder`), into the folder the index names for the request's SOP Instance UID,
  by a :class:`StoreWriter` thread, atomically; an instance that was not requested is dropped and
  counted.
- **C-GET**: one Study Root GET context plus, for every SOP class needed, a context offering the
  uncompressed syntaxes (the PACS transcodes to them) and one offering the compressed syntaxes
  pydicom can decode, with SCP role selection for each storage class; at most 128 contexts per
  association (units are grouped so that each group's SOP classes fit). An archive that never
  transcodes may fail instances stored compressed: they are asked for again offering one
  compressed syntax at a time (:func:`_get_in_stored_syntaxes`).
- **C-MOVE**: our own storage SCP (AE title = the calling AE) is started on ``move_port``; it
  accepts associations only from the PACS's AE title and only storage SOP classes.
- **DICOMweb**: see :mod:`modan_pacs.pacs.dicomweb`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from modan_pacs.errors import InputError, PacsError
from modan_pacs.pacs.association import (
    PacsSettings,
    no_response_problem,
    open_association,
    quiet_event_logging,
    set_tcp_nodelay,
    shorten_idle_poll,
)
from modan_pacs.pacs.store import Store

LOGGER = logging.getLogger(__name__)

METHODS = ("get", "move", "dicomweb")
LEVELS = ("STUDY", "SERIES", "IMAGE")


def uncompressed_syntaxes() -> tuple[str, ...]:
    """Explicit then implicit VR little endian: what every archive can send (or transcode to)."""
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    return (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def compressed_syntaxes() -> tuple[str, ...]:
    """The compressed transfer syntaxes pydicom can decode, so stored data need not be transcoded."""
    from pydicom import uid

    return (
        uid.JPEGLosslessSV1,
        uid.JPEGLossless,
        uid.JPEGBaseline8Bit,
        uid.JPEGExtended12Bit,
        uid.JPEGLSLossless,
        uid.JPEGLSNearLossless,
        uid.JPEG2000Lossless,
        uid.JPEG2000,
        uid.RLELossless,
        uid.DeflatedExplicitVRLittleEndian,
    )


@dataclass
class RetrievalUnit:
    """One retrieve request: a whole study, a whole series, or a list of instances of one series.

    ``level`` is the Query/Retrieve level of the request (``STUDY``, ``SERIES`` or ``IMAGE``);
    ``sop_uids`` always lists the instances the request should bring (for accounting), and the
    IMAGE-level identifier carries them. ``series_uid`` is None for a study-level unit.
    """

    study_uid: str
    series_uid: str | None
    sop_uids: list[str] = field(default_factory=list)
    sop_classes: set[str] = field(default_factory=set)
    level: str = "IMAGE"
    more_series: list[str] = field(default_factory=list)  # further whole series of the study (SERIES level)

    @property
    def series_uids(self) -> list[str]:
        """Every series this request names (one, or a list at SERIES level)."""
        return [u for u in (self.series_uid, *self.more_series) if u is not None]

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise InputError(f"retrieval level {self.level!r} must be one of {', '.join(LEVELS)}")
        if self.series_uid is None and self.level != "STUDY":
            raise InputError(f"a {self.level}-level retrieval needs a series UID (study {self.study_uid})")

    @property
    def label(self) -> str:
        if self.level == "STUDY":
            what = f"study {self.study_uid}"
        elif self.more_series:
            what = f"{len(self.series_uids)} series of study {self.study_uid}"
        else:
            what = f"series {self.series_uid}"
        return f"{what} ({len(self.sop_uids)} instances)"


@dataclass
class PullSummary:
    """What a pull did. ``interrupted`` holds one-line reasons for units that did not complete.

    ``unrequested`` counts instances the PACS sent that were not asked for (dropped, not stored).
    """

    requested: int = 0
    skipped: int = 0
    arrived: int = 0
    failed: int = 0
    unrequested: int = 0
    bytes: int = 0
    seconds: float = 0.0
    workers: int = 1
    method: str = "get"
    requests: int = 0
    interrupted: list[str] = field(default_factory=list)

    @property
    def instances_per_second(self) -> float:
        return self.arrived / self.seconds if self.seconds > 0 else 0.0

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        return not self.interrupted and self.failed == 0


class _Counter:
    """Thread-safe running totals feeding the progress bar and the summary.

    ``heard`` is the monotonic time of the last instance received (a C-GET's C-STORE
    sub-operations are not seen by the code waiting on the C-GET responses).
    """

    def __init__(self, on_change: Callable[[int, int], None] | None = None) -> None:
        self.lock = threading.Lock()
        self.arrived = 0
        self.bytes = 0
        self.unrequested = 0
        self.heard = time.monotonic()
        self.on_change = on_change

    def add(self, nbytes: int) -> None:
        with self.lock:
            self.arrived += 1
            self.bytes += nbytes
        if self.on_change is not None:
            self.on_change(1, nbytes)

    def add_unrequested(self) -> None:
        with self.lock:
            self.unrequested += 1


def image_storage_classes() -> set[str]:
    """The image storage SOP classes of pynetdicom's default storage list (54 in pynetdicom 3.0).

    Proposed, as getscu proposes its fixed list, when neither the index nor the PACS's C-FIND
    answers name the SOP classes of a series (dcmqrscp returns no SOPClassUID).
    """
    from pydicom.uid import UID
    from pynetdicom.presentation import StoragePresentationContexts

    return {cx.abstract_syntax for cx in StoragePresentationContexts if "Image" in UID(cx.abstract_syntax).name}


def fill_sop_classes(settings: PacsSettings, units: Sequence[RetrievalUnit]) -> None:
    """Ask the PACS (IMAGE-level C-FIND) for the SOP classes of units whose index rows lack them.

    C-GET needs a storage context per SOP class; an index built elsewhere may not carry them, and
    some archives (dcmqrscp) do not return them either: those units get every image storage class
    of pynetdicom's default list, as getscu proposes its fixed list.
    """
    missing = [unit for unit in units if not unit.sop_classes]
    if not missing:
        return
    from modan_pacs.pacs.query import FindSession, iter_instances_of_series

    with FindSession(settings) as session:
        for unit in missing:
            wanted = set(unit.sop_uids)
            unit.sop_classes = {
                cls
                for series in unit.series_uids
                for uid, cls in iter_instances_of_series(settings, unit.study_uid, series, session)
                if cls and uid in wanted
            } or image_storage_classes()


def storage_contexts(sop_classes: Iterable[str]) -> list[tuple[str, Sequence[str]]]:
    """Two contexts per storage SOP class: uncompressed syntaxes, and compressed ones."""
    contexts: list[tuple[str, Sequence[str]]] = []
    for sop in sorted(sop_classes):
        contexts.append((sop, uncompressed_syntaxes()))
        contexts.append((sop, compressed_syntaxes()))
    return contexts


def group_by_contexts(units: Sequence[RetrievalUnit], per_association: int = 63) -> list[list[RetrievalUnit]]:
    """Split units into groups whose SOP classes fit in one association (2 contexts each + 1 GET)."""
    groups: list[tuple[set[str], list[RetrievalUnit]]] = []
    for unit in units:
        for classes, members in groups:
            if len(classes | unit.sop_classes) <= per_association:
                classes |= unit.sop_classes
                members.append(unit)
                break
        else:
            if len(unit.sop_classes) > per_association:
                raise InputError(
                    f"{unit.label} holds {len(unit.sop_classes)} SOP classes; "
                    f"at most {per_association} fit in one association"
                )
            groups.append((set(unit.sop_classes), [unit]))
    return [members for _, members in groups]


def _drain(units: queue.SimpleQueue) -> Iterable[RetrievalUnit]:
    """Units taken one by one from a queue shared by the worker threads, until it is empty."""
    while True:
        try:
            yield units.get_nowait()
        except queue.Empty:
            return


def _queue(units: Iterable[RetrievalUnit]) -> queue.SimpleQueue:
    shared: queue.SimpleQueue = queue.SimpleQueue()
    for unit in units:
        shared.put(unit)
    return shared


def _identifier(unit: RetrievalUnit):
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = unit.level
    ds.StudyInstanceUID = unit.study_uid
    if unit.level in ("SERIES", "IMAGE"):
        series = unit.series_uids
        ds.SeriesInstanceUID = series if len(series) > 1 else series[0]  # a list of UIDs: PS3.4 C.4.2.2.1
    if unit.level == "IMAGE":
        ds.SOPInstanceUID = list(unit.sop_uids) if len(unit.sop_uids) > 1 else unit.sop_uids[0]
    return ds


class FileMetaEncoder:
    """File meta information for a received instance, as pynetdicom's ``event.file_meta`` encodes it.

    Encoding a ``FileMetaDataset`` with pydicom costs about 0.3 ms, as much as receiving a 0.5 MB
    instance on loopback; so it is encoded once per (SOP class, transfer syntax, UID length) with a
    placeholder instance UID of the same length, and the placeholder bytes are then replaced.
    The result equals ``encode_file_meta(event.file_meta)`` byte for byte (tested).
    """

    def __init__(self) -> None:
        self._templates: dict[tuple[str, str, int], tuple[bytes, bytes]] = {}
        self._lock = threading.Lock()

    def __call__(self, sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
        key = (sop_class, transfer_syntax, len(sop_instance))
        template = self._templates.get(key)
        if template is None:
            placeholder = ("9" * len(sop_instance)).encode()
            with self._lock:
                template = self._templates[key] = (
                    self._encode(sop_class, placeholder.decode(), transfer_syntax),
                    placeholder,
                )
        encoded, placeholder = template
        return encoded.replace(placeholder, sop_instance.encode(), 1)

    @staticmethod
    def _encode(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
        from pydicom.dataset import FileMetaDataset
        from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
        from pynetdicom.dsutils import encode_file_meta

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_instance
        meta.TransferSyntaxUID = transfer_syntax
        meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
        return encode_file_meta(meta)


class StoreWriter:
    """Writes received instances into the store on its own thread, so the C-STORE response goes out
    while the file is written (on loopback the write took a sixth of each instance's round trip).

    At most ``depth`` instances wait in memory. A failed write is recorded in the pull log as
    ``failed`` and the instance counts as not received (the pull reports it and a re-run fetches
    it); the atomic write (temporary name, then rename) is the store's. Use as a context manager:
    leaving it waits until every queued instance is on disk.
    """

    def __init__(self, store: Store, counter: _Counter, depth: int = 8) -> None:
        self.store, self.counter = store, counter
        self.pending: queue.Queue = queue.Queue(maxsize=depth)
        self.thread = threading.Thread(target=self._run, name="modan-pacs-store-writer", daemon=True)

    def __enter__(self) -> StoreWriter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.pending.put(None)
        self.thread.join()

    def submit(self, where: tuple[str, str], sop_uid: str, parts: tuple[bytes, ...]) -> None:
        self.pending.put((where, sop_uid, parts))

    def _run(self) -> None:
        while (item := self.pending.get()) is not None:
            (study, series), sop_uid, parts = item
            try:
                _, new = self.store.write(study, series, sop_uid, parts)
            except PacsError as exc:
                self.store.record(status="failed", sop_instance_uid=sop_uid, reason=str(exc))
                continue
            except OSError as exc:
                self.store.record(status="failed", sop_instance_uid=sop_uid, reason=f"write failed: {exc.strerror}")
                continue
            except Exception as exc:  # anything else must not stop the thread the handlers wait on
                LOGGER.exception("writing %s failed", sop_uid)
                self.store.record(
                    status="failed", sop_instance_uid=sop_uid, reason=f"write failed: {type(exc).__name__}"
                )
                continue
            if new:
                self.counter.add(sum(len(p) for p in parts))


def make_store_handler(writer: StoreWriter, expected: dict[str, tuple[str, str]]):
    """An ``EVT_C_STORE`` handler passing the received bytes, undecoded, to ``writer``.

    ``expected`` maps each requested SOP Instance UID to its (study, series) UIDs from the index,
    which name the folder, so nothing of the data set needs decoding. An instance that was not
    requested is counted and dropped, not stored; it is answered with Success all the same,
    because some archives (Orthanc's C-MOVE) stop the whole retrieve at the first failed
    sub-operation. The file is the 128-byte preamble, ``DICM``, the file meta information and
    the data set exactly as the PACS sent it.
    """
    from pynetdicom.status import Status

    encode_meta = FileMetaEncoder()
    counter = writer.counter

    def handle_store(event: Any) -> int:
        counter.heard = time.monotonic()
        request = event.request
        sop_uid = str(request.AffectedSOPInstanceUID)
        where = expected.get(sop_uid)
        if where is None:
            counter.add_unrequested()
            LOGGER.info("dropped an instance that was not requested: %r", sop_uid[:80])
            return Status.SUCCESS
        meta = encode_meta(str(request.AffectedSOPClassUID), sop_uid, str(event.context.transfer_syntax))
        writer.submit(where, sop_uid, (b"\x00" * 128, b"DICM", meta, request.DataSet.getvalue()))
        return Status.SUCCESS

    return handle_store


def _final_status_problem(
    op: str, unit: RetrievalUnit, settings: PacsSettings, final: Any, waited: float
) -> str | None:
    from pynetdicom.status import STATUS_FAILURE, code_to_category

    code = getattr(final, "Status", None)
    if code is None:
        return f"{no_response_problem(settings, f'{op} of {unit.label}', waited)}; re-run to resume"
    if code_to_category(code) == STATUS_FAILURE:
        return f"{op} of {unit.label} from {settings.label}: status 0x{code:04X}"
    return None  # success, or a warning whose failed sub-operations are recorded one by one


def _failed_uids(final: Any) -> list[str]:
    value = final.get("FailedSOPInstanceUIDList") if final is not None else None
    if not value:
        return []
    values = [value] if isinstance(value, str) else list(value)  # one UID, or a MultiValue of them
    return [str(v) for v in values]


def _final_response(responses) -> tuple[Any, float]:
    """The final (non-pending) status of a C-GET/C-MOVE, and when the peer last answered.

    The final status is None when there was none (abort or DIMSE timeout).
    """
    from pynetdicom.status import STATUS_PENDING, code_to_category

    final = None
    heard = time.monotonic()
    for status, _ in responses:
        code = getattr(status, "Status", None)
        if code is not None:
            heard = time.monotonic()
        if code is not None and code_to_category(code) == STATUS_PENDING:
            continue
        final = status
    return final, heard


def _retrieve_units(
    op: str, units: queue.SimpleQueue, job: _Job, open_assoc, send
) -> list[tuple[RetrievalUnit | None, str]]:
    """Send one retrieve request per unit over one (re-opened when lost) association.

    Shared by C-GET and C-MOVE: ``open_assoc()`` opens the association, ``send(assoc, unit)``
    yields ``(status, identifier)`` pairs. Failed sub-operations are recorded in the store; an
    aborted association stops the whole pull (``job.stop``). Returns the problems, one line each,
    with the unit they concern (None when they concern the association).
    """
    problems: list[tuple[RetrievalUnit | None, str]] = []
    assoc = None
    try:
        for unit in _drain(units):
            if job.stop.is_set():
                problems.append((unit, f"{op} of {unit.label}: not started (an earlier failure stopped the pull)"))
                continue
            if assoc is None or not assoc.is_established:
                assoc = open_assoc()
            final, heard = _final_response(send(assoc, unit))
            with job.counter.lock:
                job.requests += 1
            for uid in _failed_uids(final):
                if uid in job.expected:  # only what was asked for counts as failed
                    job.store.record(
                        status="failed",
                        sop_instance_uid=uid,
                        series_instance_uid=job.expected[uid][1],
                        reason=f"{op} sub-operation failed",
                    )
            waited = time.monotonic() - max(heard, job.counter.heard)
            problem = _final_status_problem(op, unit, job.settings, final, waited)
            if problem is not None:
                problems.append((unit, problem))
                if getattr(final, "Status", None) is None:
                    job.stop.set()
                    if assoc.is_established:
                        assoc.abort()
                    assoc = None
    except PacsError as exc:
        problems.append((None, str(exc)))
        job.stop.set()
    finally:
        if assoc is not None and assoc.is_established:
            assoc.release()
    return problems


@dataclass
class _Job:
    """What every worker thread of one pull shares."""

    settings: PacsSettings
    store: Store
    counter: _Counter
    expected: dict[str, tuple[str, str]]
    writer: StoreWriter
    stop: threading.Event = field(default_factory=threading.Event)
    requests: int = 0


def _c_get_worker(
    job: _Job, units: queue.SimpleQueue, sop_classes: set[str], syntax: str | None = None
) -> list[tuple[RetrievalUnit | None, str]]:
    """Fetch ``units`` over one association by C-GET; returns problems (one line each).

    Storage contexts: :func:`storage_contexts`, or, with ``syntax``, one context per class
    offering only that transfer syntax.
    """
    from pynetdicom import evt
    from pynetdicom.presentation import build_role
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as study_get

    on_store = make_store_handler(job.writer, job.expected)
    storage = storage_contexts(sop_classes) if syntax is None else [(sop, (syntax,)) for sop in sorted(sop_classes)]
    contexts = [(study_get, uncompressed_syntaxes()), *storage]
    roles = [build_role(sop, scp_role=True) for sop in sorted(sop_classes)]
    return _retrieve_units(
        "C-GET",
        units,
        job,
        open_assoc=lambda: open_association(
            job.settings, contexts, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)], purpose="C-GET"
        ),
        send=lambda assoc, unit: assoc.send_c_get(_identifier(unit), study_get),
    )


class MoveDestination:
    """Our storage SCP for C-MOVE: accepts only ``peer_aet`` and only storage SOP classes.

    Use as a context manager; incoming instances listed in ``expected`` (SOP Instance UID ->
    (study, series) UIDs) go to ``writer``, others are refused and counted.
    """

    def __init__(
        self,
        *,
        aet: str,
        port: int,
        peer_aet: str,
        writer: StoreWriter,
        expected: dict[str, tuple[str, str]],
        bind: str = "0.0.0.0",
    ) -> None:
        self.aet, self.port, self.peer_aet, self.bind = aet, port, peer_aet, bind
        self.writer, self.expected = writer, expected
        self.server = None

    def __enter__(self) -> MoveDestination:
        from pydicom.uid import ExplicitVRBigEndian
        from pynetdicom import AE, evt
        from pynetdicom.presentation import AllStoragePresentationContexts, build_context
        from pynetdicom.transport import ThreadedAssociationServer

        ae = AE(ae_title=self.aet)
        ae.require_calling_aet = [self.peer_aet]
        # uncompressed (incl. big endian) and the compressed syntaxes pydicom decodes; contexts are
        # built directly because add_supported_context() is quadratic (1.5 s for 170 x 40 here)
        syntaxes = [*uncompressed_syntaxes(), ExplicitVRBigEndian, *compressed_syntaxes()]
        ae.supported_contexts = [build_context(cx.abstract_syntax, syntaxes) for cx in AllStoragePresentationContexts]
        ae.maximum_pdu_size = 0

        def on_open(event: Any) -> None:
            set_tcp_nodelay(event)
            shorten_idle_poll(event.assoc)

        try:
            # like ae.start_server(block=False), but polling for shutdown every 50 ms instead of 500 ms
            self.server = ae.make_server(
                (self.bind, self.port),
                evt_handlers=[
                    (evt.EVT_CONN_OPEN, on_open),
                    (evt.EVT_C_STORE, make_store_handler(self.writer, self.expected)),
                ],
                server_class=ThreadedAssociationServer,
            )
        except OSError as exc:
            raise PacsError(
                f"C-MOVE destination {self.aet} cannot listen on port {self.port}: {exc.strerror}"
            ) from None
        ae._servers.append(self.server)  # AssociationServer.shutdown() removes itself from this list
        thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.shutdown()  # stops serving and closes the listening socket
            self.server = None


def _c_move_worker(job: _Job, units: queue.SimpleQueue, destination: str) -> list[tuple[RetrievalUnit | None, str]]:
    """Ask the PACS to C-MOVE ``units`` to ``destination`` (our SCP); returns problems."""
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as study_move

    return _retrieve_units(
        "C-MOVE",
        units,
        job,
        open_assoc=lambda: open_association(job.settings, [(study_move, uncompressed_syntaxes())], purpose="C-MOVE"),
        send=lambda assoc, unit: assoc.send_c_move(_identifier(unit), destination, study_move),
    )


def merge_whole_series(units: Sequence[RetrievalUnit], min_units: int = 1) -> list[RetrievalUnit]:
    """One SERIES-level request per study for all its whole series (a list of Series Instance UIDs).

    An archive then sends exactly those series in one retrieve: fewer requests (Orthanc schedules
    each C-MOVE as a job), and never a series the index does not hold whole, as a STUDY-level
    request could. Units are left as they are when merging would leave fewer than ``min_units``
    (parallel associations need that many).
    """
    merged: dict[str, RetrievalUnit] = {}
    out: list[RetrievalUnit] = []
    for unit in units:
        if unit.level != "SERIES":
            out.append(unit)
            continue
        first = merged.get(unit.study_uid)
        if first is None:
            first = merged[unit.study_uid] = RetrievalUnit(
                unit.study_uid, unit.series_uid, list(unit.sop_uids), set(unit.sop_classes), "SERIES"
            )
            out.append(first)
        else:
            first.more_series.append(str(unit.series_uid))
            first.sop_uids.extend(unit.sop_uids)
            first.sop_classes |= unit.sop_classes
    return out if len(out) >= min_units else list(units)


def split_units(units: Sequence[RetrievalUnit], chunk: int) -> list[RetrievalUnit]:
    """Split IMAGE-level units into chunks of at most ``chunk`` instances (study/series units stay whole)."""
    out: list[RetrievalUnit] = []
    for unit in units:
        if unit.level != "IMAGE" or len(unit.sop_uids) <= chunk:
            out.append(unit)
            continue
        for start in range(0, len(unit.sop_uids), chunk):
            out.append(
                RetrievalUnit(
                    unit.study_uid, unit.series_uid, unit.sop_uids[start : start + chunk], set(unit.sop_classes)
                )
            )
    return out


@dataclass
class DimseResult:
    """What :func:`retrieve_dimse` did."""

    arrived: int
    bytes: int
    unrequested: int
    requests: int
    problems: list[str]


def retrieve_dimse(
    settings: PacsSettings,
    units: Sequence[RetrievalUnit],
    store: Store,
    *,
    expected: dict[str, tuple[str, str]],
    method: str = "get",
    workers: int = 1,
    move_port: int = 11113,
    on_progress: Callable[[int, int], None] | None = None,
) -> DimseResult:
    """Run C-GET or C-MOVE over ``workers`` parallel associations.

    ``expected`` maps every requested SOP Instance UID to its (study, series) UIDs; instances
    outside it are refused and counted as unrequested.
    """
    if method not in ("get", "move"):
        raise InputError(f"method {method!r} must be get or move")
    if workers < 1:
        raise InputError(f"--workers {workers} must be >= 1")
    counter = _Counter(on_progress)
    units = list(units)
    with quiet_event_logging(), StoreWriter(store, counter) as writer:
        job = _Job(settings=settings, store=store, counter=counter, expected=expected, writer=writer)
        problems = _run_workers(job, units, method, workers, move_port)
    if method == "get" and not job.stop.is_set() and _missing_units(job, units):
        with quiet_event_logging(), StoreWriter(store, counter) as writer:
            job.writer = writer
            _get_in_stored_syntaxes(job, _missing_units(job, units))
    arrived = store.arrived
    unsolved = [text for unit, text in problems if unit is None or any(u not in arrived for u in unit.sop_uids)]
    return DimseResult(counter.arrived, counter.bytes, counter.unrequested, job.requests, unsolved)


def _missing_units(job: _Job, units: Sequence[RetrievalUnit]) -> list[RetrievalUnit]:
    return missing_units(units, job.store, job.expected)


def missing_units(
    units: Sequence[RetrievalUnit], store: Store, expected: dict[str, tuple[str, str]]
) -> list[RetrievalUnit]:
    """IMAGE-level units (at most 50 instances each) for the instances of ``units`` not in ``store``, by series."""
    arrived = store.arrived
    by_series: dict[tuple[str, str], RetrievalUnit] = {}
    for unit in units:
        for uid in unit.sop_uids:
            if uid in arrived or uid not in expected:
                continue
            study, series = expected[uid]
            missing = by_series.setdefault((study, series), RetrievalUnit(study, series, [], set(unit.sop_classes)))
            missing.sop_uids.append(uid)
    return split_units(list(by_series.values()), 50)


def _get_in_stored_syntaxes(job: _Job, units: list[RetrievalUnit]) -> None:
    """Ask again for instances a C-GET did not deliver, offering one compressed syntax at a time.

    An archive that never transcodes (dcmqrscp) sends each instance on the first accepted context
    of its SOP class and fails it when that context's syntax is not the stored one. So the
    missing instances are asked for again over associations that offer, for every class, only
    one compressed syntax (JPEG lossless, then JPEG-LS, ...), until none is missing.
    """
    for syntax in compressed_syntaxes():
        if not units:
            return
        LOGGER.info(
            "%d instances not delivered; asking again offering only %s", sum(len(u.sop_uids) for u in units), syntax
        )
        for group in group_by_contexts(units, per_association=127):
            classes = set().union(*(u.sop_classes for u in group))
            _c_get_worker(job, _queue(group), classes, syntax)
        units = _missing_units(job, units)


def _run_workers(
    job: _Job, units: list[RetrievalUnit], method: str, workers: int, move_port: int
) -> list[tuple[RetrievalUnit | None, str]]:
    """C-GET or C-MOVE ``units`` on ``workers`` threads, one association each; returns the problems."""
    settings = job.settings
    problems: list[tuple[RetrievalUnit | None, str]] = []
    if units and method == "get":
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for group in group_by_contexts(units):  # one group unless > 63 SOP classes are needed
                classes = set().union(*(u.sop_classes for u in group))
                shared = _queue(group)
                futures = [pool.submit(_c_get_worker, job, shared, classes) for _ in range(min(workers, len(group)))]
                for future in as_completed(futures):
                    problems.extend(future.result())
    elif units:
        with MoveDestination(
            aet=settings.calling_aet,
            port=move_port,
            peer_aet=settings.called_aet,
            writer=job.writer,
            expected=job.expected,
        ):
            shared = _queue(units)
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [
                    pool.submit(_c_move_worker, job, shared, settings.calling_aet)
                    for _ in range(min(workers, len(units)))
                ]
                for future in as_completed(futures):
                    problems.extend(future.result())
    return problems
