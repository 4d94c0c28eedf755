"""A throw-away dcmtk ``dcmqrscp`` archive on loopback: a second, independent PACS for tests and benchmarks.

dcmqrscp (Debian package ``dcmtk``) answers C-ECHO, C-FIND, C-GET, C-MOVE and C-STORE from a
folder indexed by ``dcmqridx``. Files are loaded offline (copied into the storage folder, then
indexed), the server is started on a free port with ``TCP_NODELAY=1``, and stopped with a signal
to its process group.

Two things about Debian's dcmtk 3.6.7-9~deb12u4 shape this module (see the PACS notes):

- dcmqrscp crashes (SIGSEGV in ``DUL_DropAssociation``) at the end of every association, so it
  runs in its default fork mode, where only the finished child dies, never ``--single-process``;
- without an association profile it accepts uncompressed transfer syntaxes only and refuses
  every compressed file; the profile written here (``-xf``) accepts each storage SOP class with
  any syntax dcmqrscp knows, and lets the requestor take the SCP role for C-GET
  (``[[SCPSCURoleSelection]]``). dcmqrscp never transcodes: a C-GET requestor has to offer
  the stored transfer syntax.

Example::

    with DcmqrscpServer(files=paths, peers={"MODANPACS": ("127.0.0.1", 11113)}) as server:
        print(server.port)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from modan_pacs.errors import PacsError
from modan_pacs.pacs.orthanc import LocalServer, free_port

DCMQRSCP_AET = "DCMQRSCP"

_SYNTAXES = """\
[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LocalEndianExplicit
TransferSyntax2 = OppositeEndianExplicit
TransferSyntax3 = LittleEndianImplicit
[Any]
TransferSyntax1 = LocalEndianExplicit
TransferSyntax2 = OppositeEndianExplicit
TransferSyntax3 = LittleEndianImplicit
TransferSyntax4 = DeflatedLittleEndianExplicit
TransferSyntax5 = JPEGBaseline
TransferSyntax6 = JPEGExtended:Process2+4
TransferSyntax7 = JPEGLossless:Non-hierarchical-1stOrderPrediction
TransferSyntax8 = JPEGLossless:Non-hierarchical:Process14
TransferSyntax9 = JPEGLSLossless
TransferSyntax10 = JPEGLSLossy
TransferSyntax11 = JPEG2000LosslessOnly
TransferSyntax12 = JPEG2000
TransferSyntax13 = RLELossless
"""


def find_dcmqrscp() -> str | None:
    """Path of ``dcmqrscp`` when dcmtk is installed (``dcmqridx`` comes with it), else None."""
    binary = shutil.which("dcmqrscp")
    return binary if binary and shutil.which("dcmqridx") else None


def association_profile(stored: Iterable[tuple[str, str]]) -> str:
    """An ``-xf`` association config for the ``(SOP class, transfer syntax)`` pairs of the stored files.

    Profile ``Archive`` (incoming): the Q/R models uncompressed, each storage class with any syntax
    and the SCP/SCU role both ways (C-GET). Profile ``Outgoing`` (C-MOVE sub-associations): each
    storage class once per syntax stored for it, each in its own context, the most frequent first.
    dcmqrscp never transcodes and sends each instance on the first accepted context of its SOP
    class, so a class stored in two syntaxes can be moved only in the more frequent one (a limit
    of dcmqrscp's C-MOVE; its C-GET has the same limit, which ``pull`` works around).
    A profile holds at most 128 presentation contexts.
    """
    from pydicom.uid import UID
    from pynetdicom import sop_class

    qr = [
        sop_class.Verification,
        sop_class.PatientRootQueryRetrieveInformationModelFind,
        sop_class.StudyRootQueryRetrieveInformationModelFind,
        sop_class.PatientRootQueryRetrieveInformationModelGet,
        sop_class.StudyRootQueryRetrieveInformationModelGet,
        sop_class.PatientRootQueryRetrieveInformationModelMove,
        sop_class.StudyRootQueryRetrieveInformationModelMove,
    ]
    counts = Counter(stored)
    storage = sorted({sop for sop, _ in counts})
    compressed = sorted({ts for _, ts in counts if UID(ts).is_compressed})
    incoming = [f"{uid}\\Uncompressed" for uid in qr] + [f"{uid}\\Any" for uid in storage]
    outgoing = []
    for sop in storage:
        syntaxes = sorted({ts for s, ts in counts if s == sop}, key=lambda ts: -counts[(sop, ts)])
        names = dict.fromkeys(f"Only{compressed.index(ts)}" if ts in compressed else "Uncompressed" for ts in syntaxes)
        outgoing += [f"{sop}\\{name}" for name in names]
    if max(len(incoming), len(outgoing)) > 128:
        raise PacsError(
            f"{len(counts)} (SOP class, syntax) pairs: more than a dcmqrscp profile's 128 presentation contexts"
        )
    lines = [_SYNTAXES]
    for n, ts in enumerate(compressed):
        lines += [f"[Only{n}]", f"TransferSyntax1 = {ts}"]
    lines += ["[[PresentationContexts]]", "[Incoming]"]
    lines += [f"PresentationContext{n} = {text}" for n, text in enumerate(incoming, 1)]
    lines += ["[Outgoing]"]
    lines += [f"PresentationContext{n} = {text}" for n, text in enumerate(outgoing, 1)]
    lines += ["[[SCPSCURoleSelection]]", "[Roles]"]
    lines += [f"Role{n} = {uid}\\BOTH" for n, uid in enumerate(storage, 1)]
    lines += [
        "[[Profiles]]",
        "[Archive]",
        "PresentationContexts = Incoming",
        "SCPSCURoleSelection = Roles",
        "[Outgoing]",
        "PresentationContexts = Outgoing",
        "",
    ]
    return "\n".join(lines)


class DcmqrscpServer(LocalServer):
    """One dcmqrscp process serving ``files`` (copied and indexed) from a temporary folder.

    Args:
        files: DICOM files to serve (copied into the archive, indexed with ``dcmqridx``).
        aet: the archive's AE title. Any calling AE may query and retrieve (``ANY``).
        peers: C-MOVE destinations, AE title -> (host, port) (dcmqrscp's ``HostTable``).
        port: fixed port (default: a free one). workdir: default a new temporary folder.
        extra_args: more dcmqrscp options, e.g. ``["-xs"]`` to propose JPEG lossless on C-MOVE.
    """

    stop_grace = 5.0

    def __init__(
        self,
        *,
        files: Iterable[str | Path] = (),
        aet: str = DCMQRSCP_AET,
        peers: dict[str, tuple[str, int]] | None = None,
        port: int | None = None,
        workdir: str | Path | None = None,
        extra_args: Iterable[str] = (),
        ready_timeout: float = 10.0,
    ) -> None:
        self.files = [Path(f) for f in files]
        self.aet = aet
        self.peers = dict(peers or {})
        self.port = port
        self.ready_timeout = ready_timeout
        self.extra_args = list(extra_args)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else None
        self.process: subprocess.Popen | None = None
        self.binary = find_dcmqrscp()

    @property
    def storage(self) -> Path:
        return Path(self.workdir) / "db"

    def config(self) -> str:
        """dcmqrscp.cfg: port, PDU size, C-MOVE destinations, one read-write archive for any AE."""
        peers = "\n".join(f"{name.lower()} = ({name}, {host}, {port})" for name, (host, port) in self.peers.items())
        return (
            f"NetworkTCPPort = {self.port}\nMaxPDUSize = 131072\nMaxAssociations = 16\n"
            f"HostTable BEGIN\n{peers}\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
            f"AETable BEGIN\n{self.aet} {self.storage} RW (500, 1024mb) ANY\nAETable END\n"
        )

    def _load(self) -> list[tuple[str, str]]:
        """Copy the files into the archive and index them; returns their (SOP class, syntax) UIDs."""
        from pydicom import dcmread

        self.storage.mkdir(parents=True, exist_ok=True)
        copies, classes = [], []
        for n, path in enumerate(self.files):
            header = dcmread(path, stop_before_pixels=True)
            classes.append((str(header.SOPClassUID), str(header.file_meta.TransferSyntaxUID)))
            copy = self.storage / f"{n:05d}.dcm"
            shutil.copyfile(path, copy)
            copies.append(str(copy))
        if copies:
            done = subprocess.run(["dcmqridx", str(self.storage), *copies], capture_output=True, text=True)
            if done.returncode != 0:
                raise PacsError(f"dcmqridx failed ({done.returncode}): {done.stderr.strip()[-300:]}")
        return classes

    def start(self) -> DcmqrscpServer:
        """Load the files, write the configs, start dcmqrscp and wait until it accepts connections.

        Raises:
            PacsError: dcmtk is missing, indexing failed, or the server did not come up.
        """
        if self.binary is None:
            raise PacsError("dcmqrscp / dcmqridx not found (apt-get install dcmtk)")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="modan-dcmqrscp-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        classes = self._load()
        (self.workdir / "dcmqrscp.cfg").write_text(self.config())
        (self.workdir / "assoc.cfg").write_text(association_profile(classes))
        with open(self.workdir / "dcmqrscp.log", "wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "-c",
                    str(self.workdir / "dcmqrscp.cfg"),
                    "-xf",
                    str(self.workdir / "assoc.cfg"),
                    "Archive",
                    "Outgoing",
                    *self.extra_args,
                    str(self.port),
                ],
                env=dict(os.environ, TCP_NODELAY="1"),
                cwd=self.workdir,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:  # not listening yet: poll again
                return False

        self._wait_until(answers, name="dcmqrscp", port=self.port, log="dcmqrscp.log")
