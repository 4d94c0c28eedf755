"""A throw-away Orthanc PACS on loopback, for tests, benchmarks and trying the pull path.

Starts the Debian ``/usr/sbin/Orthanc`` binary (packages ``orthanc`` and ``orthanc-dicomweb``) with a
config written into a temporary folder, on free ports, with ``TCP_NODELAY=1`` so DCMTK inside
Orthanc disables Nagle's algorithm (without it every DIMSE round trip waits ~40-90 ms for a delayed
ACK). Readiness is polled on ``GET /system``; stopping sends SIGTERM, waits, then SIGKILL.

Example::

    with OrthancServer(modalities={"MODANPACS": ("127.0.0.1", 11113)}) as server:
        print(server.dicom_port, server.dicomweb_url)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from modan_pacs.errors import PacsError

ORTHANC_BINARY = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_orthanc() -> str | None:
    """Path of the Orthanc executable, or None when it is not installed."""
    found = shutil.which("Orthanc")
    if found:
        return found
    return ORTHANC_BINARY if Path(ORTHANC_BINARY).is_file() else None


class LocalServer:
    """A PACS server process of ours (its own process group) in ``workdir``: stop and context manager.

    Subclasses set ``process``, ``workdir``, ``_own_workdir`` and ``ready_timeout``, and define
    ``start()`` (which ``with`` calls).
    """

    process: subprocess.Popen | None = None
    workdir: Path | None = None
    _own_workdir: bool = False
    ready_timeout: float = 30.0
    stop_grace: float = 12.0
    """Seconds between SIGTERM and SIGKILL."""

    def _wait_until(self, answers: Callable[[], bool], *, name: str, port: int, log: str) -> None:
        """Poll ``answers()`` until it is true; the process exiting first, or ``ready_timeout``
        passing, stops the server and raises :class:`PacsError` naming ``log`` in ``workdir``."""
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise PacsError(f"{name} exited with code {self.process.returncode} at start; see {self.workdir}/{log}")
            if answers():
                return
            time.sleep(0.02)
        self.stop()
        raise PacsError(f"{name} on port {port} was not ready after {self.ready_timeout:.0f} s")

    def stop(self, *, remove: bool | None = None, grace: float | None = None) -> None:
        """SIGTERM the process group (the server and any forked children), wait up to ``grace``
        seconds (default ``stop_grace``), then SIGKILL; remove the temporary folder if we made it."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=self.stop_grace if grace is None else grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None
        if (self._own_workdir if remove is None else remove) and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):  # noqa: ANN204
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class OrthancServer(LocalServer):
    """One Orthanc process with its own storage in a temporary folder.

    Args:
        aet: the server's AE title (``DicomCheckCalledAet`` is on, so a wrong called AE is refused).
        modalities: AE title -> (host, port) of the peers allowed to query/retrieve and the C-MOVE
            destinations (Orthanc's ``DicomModalities``).
        user, password: HTTP Basic credentials for the REST and DICOMweb APIs.
        dicom_port, http_port: fixed ports (default: free ones picked at start).
        workdir: where storage, index and log go (default: a new temporary folder, removed on stop).
        binary: the Orthanc executable (default: found on PATH or ``/usr/sbin/Orthanc``).
        ready_timeout: seconds to wait for ``/system`` to answer.
        max_pdu: Orthanc's ``MaximumPduLength`` (bytes, 4096..131072; None: Orthanc's default,
            16384). It bounds the PDUs Orthanc sends to a peer that accepts any length, and the
            length Orthanc accepts.
    """

    def __init__(
        self,
        *,
        aet: str = "ORTHANC",
        modalities: dict[str, tuple[str, int]] | None = None,
        user: str = "modan",
        password: str = "modan-test",
        dicom_port: int | None = None,
        http_port: int | None = None,
        workdir: str | Path | None = None,
        binary: str | None = None,
        ready_timeout: float = 30.0,
        max_pdu: int | None = None,
    ) -> None:
        if max_pdu is not None and not 4096 <= max_pdu <= 131072:
            raise PacsError(f"Orthanc max_pdu {max_pdu} must be in 4096..131072 (its MaximumPduLength range)")
        self.max_pdu = max_pdu
        self.aet = aet
        self.modalities = dict(modalities or {})
        self.user = user
        self.password = password
        self.dicom_port = dicom_port
        self.http_port = http_port
        self.binary = binary or find_orthanc()
        self.ready_timeout = ready_timeout
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else None
        self.process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.http_url}/dicom-web"

    def config(self) -> dict:
        """The Orthanc configuration written to ``workdir/orthanc.json``."""
        workdir = Path(self.workdir)
        storage = workdir / "storage"
        config = {
            "Name": "modan-pacs-orthanc",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "TemporaryDirectory": str(workdir / "tmp"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "DicomCheckCalledAet": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            "DicomModalities": {
                name.lower(): {"AET": name, "Host": host, "Port": port}
                for name, (host, port) in self.modalities.items()
            },
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "OverwriteInstances": True,
            "SaveJobs": False,
            "SyncStorageArea": False,
            "StableAge": 1,
            "DicomScpTimeout": 10,
            "Plugins": [DICOMWEB_PLUGIN] if Path(DICOMWEB_PLUGIN).is_file() else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        if self.max_pdu is not None:
            config["MaximumPduLength"] = self.max_pdu
        return config

    def start(self) -> OrthancServer:
        """Write the config, start Orthanc and wait until its HTTP API answers.

        Raises:
            PacsError: the binary is missing, the process exited, or it was not ready in time.
        """
        if self.binary is None:
            raise PacsError("Orthanc not found (apt-get install orthanc orthanc-dicomweb)")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="modan-orthanc-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.dicom_port = self.dicom_port or free_port()
        self.http_port = self.http_port or free_port()
        config_file = self.workdir / "orthanc.json"
        config_file.write_text(json.dumps(self.config(), indent=2))
        env = dict(os.environ, TCP_NODELAY="1")
        log = self.workdir / "orthanc.log"
        self.process = subprocess.Popen(
            [self.binary, f"--logfile={log}", str(config_file)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import requests

        def answers() -> bool:
            try:
                return (
                    requests.get(f"{self.http_url}/system", auth=(self.user, self.password), timeout=1.0).status_code
                    == 200
                )
            except requests.RequestException:  # not listening yet: poll again
                return False

        self._wait_until(answers, name="Orthanc", port=self.http_port, log="orthanc.log")

    def statistics(self) -> dict:
        """Orthanc's ``/statistics`` (CountInstances, CountSeries, ...)."""
        import requests

        reply = requests.get(f"{self.http_url}/statistics", auth=(self.user, self.password), timeout=10)
        reply.raise_for_status()
        return reply.json()

    def kill(self) -> None:
        """SIGKILL the process at once (simulates a server crash); storage is kept."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
