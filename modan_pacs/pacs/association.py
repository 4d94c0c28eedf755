"""DICOM associations with a PACS: settings, TCP_NODELAY, timeouts, retries with backoff, C-ECHO.

pynetdicom is imported only inside :mod:`modan_pacs.pacs`. Every association we open disables
Nagle's algorithm on its socket (an ``EVT_CONN_OPEN`` handler): DIMSE is request/response, and on
loopback Nagle plus delayed ACK turn a 2 ms C-ECHO into ~90 ms (see the PACS notes).

Failures become one-line :class:`~modan_pacs.errors.PacsError` messages: connection refused (wrong
host or port), association rejected (unknown called AE title, unknown calling AE), aborted, or no
accepted presentation context, or a silent peer ("no answer from HOST:PORT within N s": it accepted
the TCP connection and then sent nothing within the timeout). Connection failures and aborts are
retried ``retries`` times with exponential backoff; rejections are not (they are permanent), nor is
a silent peer (a retry would only multiply the wait, so the whole failure stays within the timeout).
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import time
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modan_pacs.errors import InputError, PacsError

LOGGER = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable ASCII minus backslash, 1-16 chars


class PacsSettings(BaseModel):
    """Where the PACS is and how to talk to it.

    ``called_aet`` is the PACS's AE title, ``calling_aet`` ours (the PACS must know it for
    C-FIND/C-GET/C-MOVE). Timeouts are in seconds. A failed connection is retried ``retries`` times,
    waiting ``backoff * 2**attempt`` seconds between tries.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    called_aet: str = "ANY-SCP"
    calling_aet: str = "MODANPACS"
    connection_timeout: float = Field(default=10.0, gt=0)
    acse_timeout: float = Field(default=10.0, gt=0)
    dimse_timeout: float = Field(default=15.0, gt=0)
    network_timeout: float = Field(default=60.0, gt=0)
    retries: int = Field(default=2, ge=0)
    backoff: float = Field(default=0.5, ge=0)
    max_pdu: int = Field(default=0, ge=0)

    @field_validator("called_aet", "calling_aet")
    @classmethod
    def _check_ae_title(cls, value: str) -> str:
        if not _AE_TITLE.match(value) or not value.strip():
            raise ValueError(f"AE title {value!r} must be 1-16 printable ASCII characters without a backslash")
        return value

    @property
    def label(self) -> str:
        """``AET@host:port``, used in messages and in index ``location`` values."""
        return f"{self.called_aet}@{self.host}:{self.port}"


def parse_address(address: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (or ``"[v6]:PORT"``) -> ``(host, port)``.

    Raises:
        InputError: no port, or the port is not an integer in 1..65535.
    """
    host, sep, port_text = address.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise InputError(f"--pacs {address!r}: expected HOST:PORT with a port in 1..65535, e.g. 127.0.0.1:4242")
    return host, int(port_text)


def one_line(model: type[M], what: str, **kwargs: Any) -> M:
    """Build a settings ``model`` from keywords, turning validation errors into one-line
    :class:`InputError` (``"<what>: field: message; ..."``)."""
    from pydantic import ValidationError

    try:
        return model(**kwargs)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where, message = (
                ".".join(str(p) for p in error["loc"]) or "value",
                error["msg"].removeprefix("Value error, "),
            )
            problems.append(message if message.startswith(where) else f"{where}: {message}")
        problems = "; ".join(problems)
        raise InputError(f"{what}: {problems}") from None


def make_settings(**kwargs: Any) -> PacsSettings:
    """Build :class:`PacsSettings`, turning validation errors into one-line :class:`InputError`."""
    return one_line(PacsSettings, "PACS settings", **kwargs)


def set_tcp_nodelay(event: Any) -> None:
    """``EVT_CONN_OPEN`` handler: disable Nagle's algorithm on the association's socket."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):  # a socket already closed by the peer: nothing to tune
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


DUL_POLL_DELAY = 0.0001
#: pynetdicom versions whose private attributes :func:`shorten_idle_poll` and
#: :func:`guard_reactor_race` were checked against (pyproject pins this range)
PYNETDICOM_CHECKED = ">=3.0,<3.1"


def shorten_idle_poll(assoc: Any) -> None:
    """Make pynetdicom's DUL thread poll an idle socket every 0.1 ms instead of every 1 ms.

    The DUL reactor sleeps ``_run_loop_delay`` (1 ms in pynetdicom 3.0) whenever a loop found
    nothing to do, which adds up to 1 ms to each C-STORE response and each incoming PDU: about
    a fifth of the time per 0.5 MB instance of a C-GET on loopback. pynetdicom has no public
    setting for it; the attribute is read on every loop. Upstream: pydicom/pynetdicom#139 (an open
    pull request to shorten this sleep) and pydicom/pynetdicom#650 (storescu ~35x slower than
    dcmtk's). Checked with :data:`PYNETDICOM_CHECKED` (pyproject pins it; a test checks the attribute).
    """
    assoc.dul._run_loop_delay = DUL_POLL_DELAY


@contextlib.contextmanager
def quiet_event_logging():
    """Associations opened inside skip pynetdicom's standard logging handlers, unless its log is at DEBUG.

    Those handlers (bound to every association when ``pynetdicom._config.LOG_HANDLER_LEVEL`` is
    ``"standard"``) format every PDU and DIMSE message for the debug log even when nothing is
    logged, decoding each command set once more: on a loopback C-GET of 0.5 MB instances they cost
    about a sixth of the time per instance. ``"none"`` is pynetdicom's documented switch; it is
    process-wide, so it is set for the duration of a retrieval and restored after.
    """
    from pynetdicom import _config

    if logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
        yield
        return
    before = _config.LOG_HANDLER_LEVEL
    _config.LOG_HANDLER_LEVEL = "none"
    try:
        yield
    finally:
        _config.LOG_HANDLER_LEVEL = before


def guard_reactor_race(assoc: Any) -> None:
    """Keep pynetdicom's reactor thread from swallowing a response meant for a ``send_c_*`` call.

    pynetdicom 3.0 pauses its reactor before each request, but right after an operation ends the
    reactor can still report itself as paused (``_is_paused`` is reset only after its wait
    returns). A request sent in that window whose first response arrives at once (loopback with
    TCP_NODELAY: well under a millisecond) is taken off the queue by the reactor, logged as
    "Received unexpected C-FIND service message" and dropped, so a C-FIND silently loses one
    result. Here such a response is put back at the head of the DIMSE queue for the waiting
    ``send_c_*`` generator; real requests (e.g. C-STORE during C-GET) still go to pynetdicom.
    Upstream: pydicom/pynetdicom#875 (sporadic "Received unexpected C-FIND service message" with
    C-FINDs in a row; closed without a fix). Uses ``Association._serve_request`` and
    ``DIMSEServiceProvider.msg_queue``, checked with :data:`PYNETDICOM_CHECKED` (a test checks both).
    """
    serve = assoc._serve_request
    messages = assoc.dimse.msg_queue

    def serve_or_requeue(msg: Any, context_id: int) -> None:
        if msg is not None and not msg.is_valid_request and getattr(msg, "is_valid_response", False):
            with messages.mutex:
                messages.queue.appendleft((context_id, msg))
                messages.not_empty.notify()
            return
        serve(msg, context_id)

    assoc._serve_request = serve_or_requeue


def _probe_connect(host: str, port: int, timeout: float) -> str:
    """Why a plain TCP connect to host:port fails (for the error message), or '' if it succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return ""
    except OSError as exc:
        return exc.strerror or str(exc)


def open_association(
    settings: PacsSettings,
    contexts: Sequence[tuple[str, Sequence[str]]],
    *,
    ext_neg: Sequence[Any] | None = None,
    evt_handlers: Sequence[tuple] | None = None,
    purpose: str = "association",
):
    """Open an association proposing ``contexts`` (``[(abstract syntax, [transfer syntaxes]), ...]``).

    Returns an established ``pynetdicom.association.Association``; the caller releases it.

    Raises:
        PacsError: refused connection, rejection (e.g. unknown called AE title), abort, or no
            accepted presentation context, after ``settings.retries`` retries for transient failures.
        InputError: more than 128 presentation contexts.
    """
    from pynetdicom import AE

    if len(contexts) > 128:
        raise InputError(f"{purpose}: {len(contexts)} presentation contexts proposed; DICOM allows at most 128")
    ae = AE(ae_title=settings.calling_aet)
    ae.connection_timeout = settings.connection_timeout
    ae.acse_timeout = settings.acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.network_timeout
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, list(syntaxes))

    last_problem = ""
    attempt = 0
    # pynetdicom sometimes sees the peer close the socket before it reads an A-ASSOCIATE-RJ sent
    # just before (about 1 in 30 on loopback), so an abort during negotiation gets up to two quick
    # extra tries, not counted as retries, to recover the rejection reason.
    diagnostic_tries = 2
    while attempt <= settings.retries:
        if attempt:
            time.sleep(settings.backoff * 2 ** (attempt - 1))
        assoc, state = _associate_once(ae, settings, ext_neg, evt_handlers)
        if assoc.is_established:
            return assoc
        last_problem, aborted = _failure(settings, purpose, assoc, state)  # raises for permanent failures
        if aborted and diagnostic_tries:
            diagnostic_tries -= 1
            LOGGER.info("%s; trying again to learn why", last_problem)
            time.sleep(0.05)
            continue
        LOGGER.info("attempt %d: %s", attempt + 1, last_problem)
        attempt += 1
    raise PacsError(last_problem + (f" after {settings.retries + 1} attempts" if settings.retries else ""))


def _associate_once(ae: Any, settings: PacsSettings, ext_neg, evt_handlers) -> tuple[Any, dict[str, Any]]:
    """One association request; returns it (established or not) and what was seen on the way."""
    from pynetdicom import evt

    state: dict[str, Any] = {"opened": False, "reject": None, "heard": False}

    def on_open(event: Any) -> None:
        state["opened"] = True
        set_tcp_nodelay(event)

    def on_data(event: Any) -> None:
        state["heard"] = True

    def on_acse_recv(event: Any) -> None:
        primitive = event.primitive
        if getattr(primitive, "result", None) in (0x01, 0x02):
            state["reject"] = f"{primitive.reason_str} ({primitive.source_str})"

    handlers = [(evt.EVT_CONN_OPEN, on_open), (evt.EVT_DATA_RECV, on_data), (evt.EVT_ACSE_RECV, on_acse_recv)]
    assoc = ae.associate(
        settings.host,
        settings.port,
        ae_title=settings.called_aet,
        max_pdu=settings.max_pdu,
        ext_neg=list(ext_neg) if ext_neg else None,
        evt_handlers=[*handlers, *(evt_handlers or [])],
    )
    if assoc.is_established:
        assoc.unbind(evt.EVT_DATA_RECV, on_data)  # needed only until the peer first answers
        guard_reactor_race(assoc)
        shorten_idle_poll(assoc)
    return assoc, state


def _failure(settings: PacsSettings, purpose: str, assoc: Any, state: dict[str, Any]) -> tuple[str, bool]:
    """Why an association failed: ``(problem, aborted during negotiation)``.

    Raises:
        PacsError: for failures a retry cannot mend: a rejection, or a silent peer.
    """
    if assoc.is_rejected or state["reject"]:
        raise PacsError(
            f"{purpose} with {settings.label} (calling AE {settings.calling_aet}) rejected: {state['reject']}"
        )
    if state["opened"] and not state["heard"]:
        # accepted TCP, then sent nothing at all: waiting again would only multiply the delay
        raise PacsError(
            f"{purpose}: no answer from {settings.host}:{settings.port} within {settings.acse_timeout:g} s "
            "(it accepted the TCP connection but sent no association response; is this the PACS's DICOM port?)"
        )
    if not state["opened"]:
        reason = _probe_connect(settings.host, settings.port, min(settings.connection_timeout, 2.0)) or "no answer"
        return (
            f"cannot connect to {settings.host}:{settings.port}: {reason} (is the PACS running, is the port right?)",
            False,
        )
    if assoc.is_aborted and not assoc.accepted_contexts:
        return (
            f"{purpose} with {settings.label} aborted during negotiation "
            "(no accepted presentation context, or the peer dropped the connection)"
        ), True
    return f"{purpose} with {settings.label} failed (no A-ASSOCIATE-AC within {settings.acse_timeout:g} s)", False


def no_response_problem(settings: PacsSettings, operation: str, waited: float) -> str:
    """Why a DIMSE request got no final response: the peer's silence, or an abort.

    pynetdicom yields an empty status both when ``dimse_timeout`` expires (it then aborts) and when
    the peer aborts; ``waited`` (seconds since the last message from the peer) tells them apart.
    """
    if waited >= 0.9 * settings.dimse_timeout:
        return f"{operation}: no answer from {settings.host}:{settings.port} within {settings.dimse_timeout:g} s"
    return f"{operation} on {settings.label}: no final response, the association was aborted after {waited:.1f} s"


def echo(settings: PacsSettings) -> float:
    """C-ECHO the PACS; returns the round-trip time in seconds.

    Raises:
        PacsError: the association failed or the status was not Success.
    """
    from pydicom.uid import ImplicitVRLittleEndian
    from pynetdicom.sop_class import Verification
    from pynetdicom.status import Status

    assoc = open_association(settings, [(Verification, [ImplicitVRLittleEndian])], purpose="C-ECHO")
    try:
        start = time.perf_counter()
        status = assoc.send_c_echo()
        elapsed = time.perf_counter() - start
    finally:
        if assoc.is_established:
            assoc.release()
    code = getattr(status, "Status", None)
    if code is None:
        raise PacsError(no_response_problem(settings, "C-ECHO", elapsed))
    if code != Status.SUCCESS:
        raise PacsError(f"C-ECHO to {settings.label}: status 0x{code:04X}")
    return elapsed
