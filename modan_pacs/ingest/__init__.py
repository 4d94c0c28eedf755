"""Stage 1: DICOM headers -> a labelled, PHI-free index folder.

Public API:
    build_index(path, out_dir, *, vocabulary, workers, salt_file, ...) -> IndexReport   (folder walk)
    write_index(frame, out_dir, vocabulary, errors=None) -> IndexTables   (any raw records, e.g. C-FIND)
    load_index(dir) -> IndexTables;  relabel(dir, vocab) -> IndexTables
    read_header(path, salt) -> dict;  patient_hash(patient_id, salt);  load_or_create_salt(path)
"""

from modan_pacs.ingest.build import IndexReport, build_index
from modan_pacs.ingest.headers import RAW_COLUMNS, patient_hash, read_header
from modan_pacs.ingest.salt import default_salt_path, load_or_create_salt
from modan_pacs.ingest.store import INDEX_COLUMNS, IndexTables, load_index, relabel, write_index

__all__ = [
    "INDEX_COLUMNS",
    "RAW_COLUMNS",
    "IndexReport",
    "IndexTables",
    "build_index",
    "default_salt_path",
    "load_index",
    "load_or_create_salt",
    "patient_hash",
    "read_header",
    "relabel",
    "write_index",
]
