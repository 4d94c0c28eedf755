"""A real Orthanc PACS for the ``pacs`` tier: one per test session, loaded with real DICOM files.

The fixture installs nothing: it starts the Debian ``/usr/sbin/Orthanc`` (packages ``orthanc``,
``orthanc-dicomweb``; ``.ci/run`` installs them) on free loopback ports in a temporary folder, loads
pydicom's ``dicomdirtests`` series, CT_small, MR_small and a few pydicom-data files by C-STORE, and
stops it in teardown (SIGTERM, wait, SIGKILL). Missing binaries skip, or fail under
``MODAN_PACS_REQUIRE_ALL=1``. Tests using it carry ``xdist_group("pacs")`` so that one xdist worker
runs them all against the same server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest


def _root_conftest(request):
    """``tests/conftest.py`` as loaded by pytest (for ``require_binary`` / ``skip_or_fail``)."""
    return request.config.pluginmanager.get_plugin(str(Path(__file__).resolve().parent.parent / "conftest.py"))


def require_orthanc(request) -> None:
    """Skip (or fail under MODAN_PACS_REQUIRE_ALL=1) when Orthanc or its DICOMweb plugin is missing."""
    from modan_pacs.pacs.orthanc import DICOMWEB_PLUGIN

    root = _root_conftest(request)
    root.require_binary("Orthanc")
    if not Path(DICOMWEB_PLUGIN).is_file():
        root.skip_or_fail(f"{DICOMWEB_PLUGIN} not found (apt-get install orthanc-dicomweb)")


@pytest.fixture
def orthanc_available(request) -> None:
    """For tests that start their own Orthanc: skip (or fail in CI) when it is not installed."""
    require_orthanc(request)


PYDICOM_FILES = ("CT_small.dcm", "MR_small.dcm")
PYDICOM_DATA_FILES = (
    "693_UNCR.dcm",
    "MR2_UNCR.dcm",
    "RG1_UNCR.dcm",
    "US1_UNCR.dcm",
    "emri_small.dcm",
    "JPEG-LL.dcm",
    "OBXXXX1A.dcm",
)
PACS_AET = "ORTHANC"
OUR_AET = "MODANPACS"


def source_files(pydicom_dir: Path, extra_dir: Path) -> list[Path]:
    """The real files loaded into the test PACS (DICOMDIRs and READMEs left out)."""
    tree = pydicom_dir / "dicomdirtests"
    files = sorted(p for p in tree.rglob("*") if p.is_file() and "DICOMDIR" not in p.name and "README" not in p.name)
    files += [pydicom_dir / name for name in PYDICOM_FILES]
    files += [extra_dir / name for name in PYDICOM_DATA_FILES]
    return files


@dataclass
class LoadedPacs:
    """The session's Orthanc, its DIMSE settings, and the files loaded into it (by SOP Instance UID)."""

    server: object
    settings: object
    move_port: int
    files: dict[str, Path]


@pytest.fixture(scope="session")
def loaded_pacs(request, pydicom_data_dir: Path, pydicom_extra_data_dir: Path):
    require_orthanc(request)
    from pydicom import dcmread

    from modan_pacs.pacs import OrthancServer, make_settings, send_files
    from modan_pacs.pacs.orthanc import free_port

    move_port = free_port()
    server = OrthancServer(aet=PACS_AET, modalities={OUR_AET: ("127.0.0.1", move_port)})
    server.start()
    try:
        settings = make_settings(
            host="127.0.0.1",
            port=server.dicom_port,
            called_aet=PACS_AET,
            calling_aet=OUR_AET,
            dimse_timeout=8,
            acse_timeout=5,
            connection_timeout=5,
            retries=0,
        )
        paths = source_files(pydicom_data_dir, pydicom_extra_data_dir)
        report = send_files(settings, paths)
        if report.failed:
            raise RuntimeError(f"loading the test PACS failed for {report.failed[:3]}")
        files = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in report.stored}
        yield LoadedPacs(server=server, settings=settings, move_port=move_port, files=files)
    finally:
        server.stop()


def require_dcmqrscp(request) -> None:
    """Skip (or fail under MODAN_PACS_REQUIRE_ALL=1) when dcmtk's dcmqrscp / dcmqridx are missing."""
    root = _root_conftest(request)
    root.require_binary("dcmqrscp")
    root.require_binary("dcmqridx")


@pytest.fixture(scope="session")
def loaded_dcmqrscp(request, pydicom_data_dir: Path, pydicom_extra_data_dir: Path):
    """dcmtk's dcmqrscp serving the same real files as the Orthanc fixture: a second, independent archive.

    The files are copied into its storage folder and indexed with ``dcmqridx`` (no C-STORE), the
    archive listens on a free port, knows our AE title as a C-MOVE destination, and is stopped
    (process group SIGTERM) in teardown.
    """
    require_dcmqrscp(request)
    from pydicom import dcmread

    from modan_pacs.pacs import make_settings
    from modan_pacs.pacs.dcmqrscp import DcmqrscpServer
    from modan_pacs.pacs.orthanc import free_port

    paths = source_files(pydicom_data_dir, pydicom_extra_data_dir)
    move_port = free_port()
    server = DcmqrscpServer(files=paths, peers={OUR_AET: ("127.0.0.1", move_port)})
    server.start()
    try:
        settings = make_settings(
            host="127.0.0.1",
            port=server.port,
            called_aet=server.aet,
            calling_aet=OUR_AET,
            dimse_timeout=8,
            acse_timeout=5,
            connection_timeout=5,
            retries=0,
        )
        files = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in paths}
        yield LoadedPacs(server=server, settings=settings, move_port=move_port, files=files)
    finally:
        server.stop()


@pytest.fixture(params=["orthanc", "dcmqrscp"])
def archive(request) -> LoadedPacs:
    """Each of the two archives in turn (Orthanc, dcmqrscp), loaded with the same real files."""
    return request.getfixturevalue("loaded_pacs" if request.param == "orthanc" else "loaded_dcmqrscp")
