"""Shared fixtures and the tier policy.

Tiers (pytest markers): ``slow`` (short real trainings), ``pacs`` (real Orthanc / dcmtk),
``data`` (the real images in ../shared). The default run executes every tier that can run here.
A test that needs something absent skips with a reason, unless ``MODAN_PACS_REQUIRE_ALL=1``
(set by ``.ci/run``): then the absence is a failure, so CI really runs those tiers.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from modan_pacs.paths import reference_predictions_dir, shared_data_dir

REQUIRE_ALL = os.environ.get("MODAN_PACS_REQUIRE_ALL") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip the test with ``reason``; in CI (``MODAN_PACS_REQUIRE_ALL=1``) fail instead."""
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (MODAN_PACS_REQUIRE_ALL=1 demands it)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: real images with metadata.csv (data tier)."""
    path = shared_data_dir()
    if path is None:
        skip_or_fail("../shared/data is absent (set MODAN_PACS_SHARED to the shared folder)")
    return path


@pytest.fixture(scope="session")
def reference_predictions() -> Path:
    """``../shared/reference/paper_predictions``: the paper's per-fold predictions (data tier)."""
    path = reference_predictions_dir()
    if path is None:
        skip_or_fail("../shared/reference/paper_predictions is absent")
    return path


@pytest.fixture(scope="session")
def pydicom_data_dir() -> Path:
    """pydicom's own test files (``pydicom/data/test_files``), real DICOM shipped with pydicom."""
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("CT_small.dcm")).parent


@pytest.fixture(scope="session")
def pydicom_extra_data_dir() -> Path:
    """pydicom-data's files (import name ``data_store``): more real DICOM, several codecs."""
    import data_store

    return Path(data_store.__file__).parent / "data"


def require_binary(name: str) -> str:
    """Path of an executable, or skip/fail naming the Debian package that provides it."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if path is None:
        skip_or_fail(f"{name} not found (apt-get install orthanc orthanc-dicomweb dcmtk)")
    return path


@pytest.fixture()
def binary():
    """``binary(name)``: :func:`require_binary` as a fixture (path of a tool, or skip/fail naming its package)."""
    return require_binary


@pytest.fixture()
def run_cli():
    """``run_cli(*args) -> (exit code, stdout, stderr)``: the CLI's ``main`` in this process, its
    streams captured by typer's CliRunner (no subprocess needed for what the terminal shows)."""
    from modan_pacs.cli.main import main
    from typer.testing import CliRunner

    def run(*args: object) -> tuple[int, str, str]:
        with CliRunner().isolation() as (stdout, stderr, _):
            code = main([str(a) for a in args])
            return code, stdout.getvalue().decode(), stderr.getvalue().decode()

    return run
