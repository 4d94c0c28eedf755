"""Live PACS access: C-ECHO, C-FIND indexing, C-GET / C-MOVE / DICOMweb retrieval into a STORE.

pynetdicom and dicomweb-client are imported only inside this subpackage, and only when used.

Public API:
    make_settings(host=, port=, called_aet=, calling_aet=, ...) -> PacsSettings;  echo(settings)
    make_query(level=, modalities=, date_from=, date_to=, slice_days=, filters=) -> PacsQuery
    query_pacs(settings, query) -> raw index DataFrame
    build_pacs_index(settings, query, out_dir=, vocabulary=, salt_file=) -> IndexTables
    make_pull_settings(method=, workers=, select=, ...) -> PullSettings;  pacs_for_index(index_dir, ...) -> PacsSettings
    pull(index_dir, out, settings, pacs=) -> PullSummary
    complete_labels(index_dir, store_dir) -> LabelCompletion  (labels from the pulled files' headers)
    Store(root);  safe_uid_name(uid);  send_files(settings, paths);  OrthancServer(...);  DcmqrscpServer(...)
"""

from modan_pacs.pacs.association import PacsSettings, echo, make_settings, open_association, parse_address
from modan_pacs.pacs.complete import LabelCompletion, complete_labels
from modan_pacs.pacs.dcmqrscp import DcmqrscpServer
from modan_pacs.pacs.orthanc import OrthancServer
from modan_pacs.pacs.pull import PullSettings, make_pull_settings, pacs_for_index, pull
from modan_pacs.pacs.query import PacsQuery, build_pacs_index, make_query, query_pacs
from modan_pacs.pacs.retrieve import PullSummary, RetrievalUnit
from modan_pacs.pacs.send import send_files
from modan_pacs.pacs.store import Store, safe_uid_name

__all__ = [
    "DcmqrscpServer",
    "LabelCompletion",
    "OrthancServer",
    "PacsQuery",
    "PacsSettings",
    "PullSettings",
    "PullSummary",
    "RetrievalUnit",
    "Store",
    "build_pacs_index",
    "complete_labels",
    "echo",
    "make_pull_settings",
    "make_query",
    "make_settings",
    "open_association",
    "pacs_for_index",
    "parse_address",
    "pull",
    "query_pacs",
    "safe_uid_name",
    "send_files",
]
