"""Retrieve instances from a PACS into a local STORE: C-GET, C-MOVE or DICOMweb WADO-RS.

The work is a list of :class:`RetrievalUnit` (one series, or a chunk of its instances). Units run
on ``workers`` threads, each with its own association (parallel associations), and every instance
is written atomically into the :class:`~modan_pacs.pacs.store.Store`. Instances already in the
store are skipped, so an interrupted pull resumes where it stopped.

- **C-GET**: one Study Root GET context plus, for every SOP class needed, a context offering the
  uncompressed syntaxes (the PACS transcodes to them) and one offering the compressed syntaxes
  pydicom can decode (so stored compressed data need not be transcoded), with SCP role selection
  for each storage class; at most 128 contexts per association (units are grouped so that each
  group's SOP classes fit).
- **C-MOVE**: our own storage SCP (AE title = the calling AE) is started on ``move_port``; it
  accepts associations only from the PACS's AE title and only storage SOP classes.
- **DICOMweb**: see :mod:`modan_pacs.pacs.dicomweb`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from modan_pacs.errors import InputError, PacsError
from modan_pacs.pacs.association import PacsSettings, open_association, set_tcp_nodelay
from modan_pacs.pacs.store import Store

LOGGER = logging.getLogger(__name__)

STUDY_GET = "1.2.840.10008.5.1.4.1.2.2.3"
STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
COMPRESSED = (
    "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.840.10008.1.2.1.99",  # deflated explicit LE
)
METHODS = ("get", "move", "dicomweb")
_SUCCESS = 0x0000
_PENDING = (0xFF00, 0xFF01)


@dataclass
class RetrievalUnit:
    """Instances of one series to fetch. ``sop_uids`` empty means the whole series."""

    study_uid: str
    series_uid: str
    sop_uids: list[str] = field(default_factory=list)
    sop_classes: set[str] = field(default_factory=set)

    @property
    def label(self) -> str:
        return f"series {self.series_uid}" + (f" ({len(self.sop_uids)} instances)" if self.sop_uids else "")


@dataclass
class PullSummary:
    """What a pull did. ``interrupted`` holds one-line reasons for units that did not complete."""

    requested: int = 0
    skipped: int = 0
    arrived: int = 0
    failed: int = 0
    bytes: int = 0
    seconds: float = 0.0
    workers: int = 1
    method: str = "get"
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
    """Thread-safe running totals feeding the progress bar and the summary."""

    def __init__(self, on_change: Callable[[int, int], None] | None = None) -> None:
        self.lock = threading.Lock()
        self.arrived = 0
        self.bytes = 0
        self.on_change = on_change

    def add(self, nbytes: int) -> None:
        with self.lock:
            self.arrived += 1
            self.bytes += nbytes
        if self.on_change is not None:
            self.on_change(1, nbytes)


def storage_contexts(sop_classes: Iterable[str]) -> list[tuple[str, Sequence[str]]]:
    """Two contexts per storage SOP class: uncompressed syntaxes, and compressed ones."""
    contexts: list[tuple[str, Sequence[str]]] = []
    for sop in sorted(sop_classes):
        contexts.append((sop, UNCOMPRESSED))
        contexts.append((sop, COMPRESSED))
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
                    f"{unit.label} holds {len(unit.sop_classes)} SOP classes; at most {per_association} fit in one association"
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
    ds.StudyInstanceUID = unit.study_uid
    ds.SeriesInstanceUID = unit.series_uid
    if unit.sop_uids:
        ds.QueryRetrieveLevel = "IMAGE"
        ds.SOPInstanceUID = list(unit.sop_uids) if len(unit.sop_uids) > 1 else unit.sop_uids[0]
    else:
        ds.QueryRetrieveLevel = "SERIES"
    return ds


def make_store_handler(store: Store, counter: _Counter, unit: RetrievalUnit | None = None):
    """An ``EVT_C_STORE`` handler writing the received instance atomically into ``store``."""

    def handle_store(event: Any) -> int:
        sop_uid = str(event.request.AffectedSOPInstanceUID)
        try:
            data = event.encoded_dataset(include_meta=True)
            ds = event.dataset
            study_uid = ds.get("StudyInstanceUID") or (unit.study_uid if unit else None)
            series_uid = ds.get("SeriesInstanceUID") or (unit.series_uid if unit else None)
            _, new = store.write(study_uid, series_uid, sop_uid, data)
        except PacsError as exc:
            store.record(status="failed", sop_instance_uid=sop_uid, reason=str(exc))
            return 0xA700
        except OSError as exc:
            store.record(status="failed", sop_instance_uid=sop_uid, reason=f"write failed: {exc.strerror}")
            return 0xA700
        if new:
            counter.add(len(data))
        return _SUCCESS

    return handle_store


def _final_status_problem(op: str, unit: RetrievalUnit, settings: PacsSettings, final: Any) -> str | None:
    code = getattr(final, "Status", None)
    if code is None:
        return (
            f"{op} of {unit.label} from {settings.label}: the association was aborted or timed out "
            f"(DIMSE timeout {settings.dimse_timeout:g} s); re-run to resume"
        )
    if code in (_SUCCESS, 0xB000):
        return None
    return f"{op} of {unit.label} from {settings.label}: status 0x{code:04X}"


def _failed_uids(final: Any) -> list[str]:
    value = final.get("FailedSOPInstanceUIDList") if final is not None else None
    if not value:
        return []
    values = [value] if isinstance(value, str) else list(value)  # one UID, or a MultiValue of them
    return [str(v) for v in values]


def _retrieve_units(
    op: str, units: queue.SimpleQueue, store: Store, settings: PacsSettings, stop: threading.Event, open_assoc, send
) -> list[str]:
    """Send one retrieve request per unit over one (re-opened when lost) association.

    Shared by C-GET and C-MOVE: ``open_assoc()`` opens the association, ``send(assoc, unit)``
    yields ``(status, identifier)`` pairs. Failed sub-operations are recorded in ``store``; an
    aborted association stops the whole pull (``stop``). Returns the problems, one line each.
    """
    problems: list[str] = []
    assoc = None
    try:
        for unit in _drain(units):
            if stop.is_set():
                problems.append(f"{op} of {unit.label}: not started (an earlier failure stopped the pull)")
                continue
            if assoc is None or not assoc.is_established:
                assoc = open_assoc()
            final = None
            for status, _ in send(assoc, unit):
                if getattr(status, "Status", None) in _PENDING:
                    continue
                final = status
            for uid in _failed_uids(final):
                store.record(status="failed", sop_instance_uid=uid, series_instance_uid=unit.series_uid, reason=f"{op} sub-operation failed")
            problem = _final_status_problem(op, unit, settings, final)
            if problem is not None:
                problems.append(problem)
                if getattr(final, "Status", None) is None:
                    stop.set()
                    if assoc.is_established:
                        assoc.abort()
                    assoc = None
    except PacsError as exc:
        problems.append(str(exc))
        stop.set()
    finally:
        if assoc is not None and assoc.is_established:
            assoc.release()
    return problems


def _c_get_worker(
    settings: PacsSettings, units: queue.SimpleQueue, store: Store, counter: _Counter, sop_classes: set[str], stop: threading.Event
) -> list[str]:
    """Fetch ``units`` over one association by C-GET; returns problems (one line each)."""
    from pynetdicom import evt
    from pynetdicom.presentation import build_role

    on_store = make_store_handler(store, counter)
    contexts = [(STUDY_GET, UNCOMPRESSED), *storage_contexts(sop_classes)]
    roles = [build_role(sop, scp_role=True) for sop in sorted(sop_classes)]
    return _retrieve_units(
        "C-GET", units, store, settings, stop,
        open_assoc=lambda: open_association(settings, contexts, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)], purpose="C-GET"),
        send=lambda assoc, unit: assoc.send_c_get(_identifier(unit), STUDY_GET),
    )  # fmt: skip


class MoveDestination:
    """Our storage SCP for C-MOVE: accepts only ``peer_aet`` and only storage SOP classes.

    Use as a context manager; incoming instances are written into ``store``.
    """

    def __init__(self, *, aet: str, port: int, peer_aet: str, store: Store, counter: _Counter, bind: str = "0.0.0.0") -> None:
        self.aet, self.port, self.peer_aet, self.bind = aet, port, peer_aet, bind
        self.store, self.counter = store, counter
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
        syntaxes = [*UNCOMPRESSED, ExplicitVRBigEndian, *COMPRESSED]
        ae.supported_contexts = [build_context(cx.abstract_syntax, syntaxes) for cx in AllStoragePresentationContexts]
        ae.maximum_pdu_size = 0
        try:
            # like ae.start_server(block=False), but polling for shutdown every 50 ms instead of 500 ms
            self.server = ae.make_server(
                (self.bind, self.port),
                evt_handlers=[
                    (evt.EVT_CONN_OPEN, set_tcp_nodelay),
                    (evt.EVT_C_STORE, make_store_handler(self.store, self.counter)),
                ],
                server_class=ThreadedAssociationServer,
            )
        except OSError as exc:
            raise PacsError(f"C-MOVE destination {self.aet} cannot listen on port {self.port}: {exc.strerror}") from None
        ae._servers.append(self.server)  # AssociationServer.shutdown() removes itself from this list
        thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.shutdown()  # stops serving and closes the listening socket
            self.server = None


def _c_move_worker(
    settings: PacsSettings, units: queue.SimpleQueue, store: Store, counter: _Counter, destination: str, stop: threading.Event
) -> list[str]:
    """Ask the PACS to C-MOVE ``units`` to ``destination`` (our SCP); returns problems."""
    return _retrieve_units(
        "C-MOVE", units, store, settings, stop,
        open_assoc=lambda: open_association(settings, [(STUDY_MOVE, UNCOMPRESSED)], purpose="C-MOVE"),
        send=lambda assoc, unit: assoc.send_c_move(_identifier(unit), destination, STUDY_MOVE),
    )  # fmt: skip


def split_units(units: Sequence[RetrievalUnit], chunk: int) -> list[RetrievalUnit]:
    """Split units with explicit instance lists into chunks of at most ``chunk`` instances."""
    out: list[RetrievalUnit] = []
    for unit in units:
        if not unit.sop_uids or len(unit.sop_uids) <= chunk:
            out.append(unit)
            continue
        for start in range(0, len(unit.sop_uids), chunk):
            out.append(RetrievalUnit(unit.study_uid, unit.series_uid, unit.sop_uids[start : start + chunk], set(unit.sop_classes)))
    return out


def retrieve_dimse(
    settings: PacsSettings,
    units: Sequence[RetrievalUnit],
    store: Store,
    *,
    method: str = "get",
    workers: int = 1,
    move_port: int = 11113,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int, list[str]]:
    """Run C-GET or C-MOVE over ``workers`` parallel associations.

    Returns ``(instances arrived, bytes, problems)``; problems are one-line reasons.
    """
    if method not in ("get", "move"):
        raise InputError(f"method {method!r} must be get or move")
    if workers < 1:
        raise InputError(f"--workers {workers} must be >= 1")
    counter = _Counter(on_progress)
    stop = threading.Event()
    problems: list[str] = []
    units = list(units)
    if not units:
        return 0, 0, []
    if method == "get":
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for group in group_by_contexts(units):  # one group unless > 63 SOP classes are needed
                classes = set().union(*(u.sop_classes for u in group))
                shared = _queue(group)
                futures = [
                    pool.submit(_c_get_worker, settings, shared, store, counter, classes, stop)
                    for _ in range(min(workers, len(group)))
                ]
                for future in as_completed(futures):
                    problems.extend(future.result())
    else:
        with MoveDestination(aet=settings.calling_aet, port=move_port, peer_aet=settings.called_aet, store=store, counter=counter):
            shared = _queue(units)
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [
                    pool.submit(_c_move_worker, settings, shared, store, counter, settings.calling_aet, stop)
                    for _ in range(min(workers, len(units)))
                ]
                for future in as_completed(futures):
                    problems.extend(future.result())
    return counter.arrived, counter.bytes, problems
