"""Stage 1: DICOM headers -> a labelled, PHI-free index folder.

Public API:
    build_index(path, out_dir, *, vocabulary, workers, salt_file, ...) -> IndexReport   (folder walk)
    write_index(frame, out_dir, vocabulary, errors=None) -> IndexTables   (any raw records, e.g. C-FIND)
    load_index(dir) -> IndexTables;  relabel(dir, vocab) -> IndexTables
    read_header(path, salt) -> dict;  patient_hash(patient_id, salt);  load_or_create_salt(path)

The names are imported on first use (PEP 562), so a header-reading worker process that imports
``modan_pacs.ingest.headers`` does not pay for pandas and the labelling code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modan_pacs.lazy import lazy_names

_WHERE = {
    "IndexReport": "build",
    "build_index": "build",
    "RAW_COLUMNS": "headers",
    "patient_hash": "headers",
    "read_header": "headers",
    "bind_salt_to_index": "salt",
    "default_salt_path": "salt",
    "load_or_create_salt": "salt",
    "salt_fingerprint": "salt",
    "INDEX_COLUMNS": "store",
    "IndexTables": "store",
    "load_index": "store",
    "relabel": "store",
    "write_index": "store",
}

__all__ = sorted(_WHERE)

if TYPE_CHECKING:
    from modan_pacs.ingest.build import IndexReport, build_index
    from modan_pacs.ingest.headers import RAW_COLUMNS, patient_hash, read_header
    from modan_pacs.ingest.salt import bind_salt_to_index, default_salt_path, load_or_create_salt, salt_fingerprint
    from modan_pacs.ingest.store import INDEX_COLUMNS, IndexTables, load_index, relabel, write_index


__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
