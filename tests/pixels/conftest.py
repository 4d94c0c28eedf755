"""``index_folder``: index a folder of test files with the real indexer (helpers: pixel_files.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture()
def index_folder(tmp_path, monkeypatch):
    """``index_folder(folder) -> index dir``: the real indexer (one process, a salt outside)."""
    from modan_pacs.ingest import build_index

    monkeypatch.setenv("MODAN_PACS_SALT_FILE", str(tmp_path / "salt_outside" / "salt"))

    def make(folder: Path, name: str = "index") -> Path:
        out = tmp_path / name
        build_index(folder, out, workers=1)
        return out

    return make
