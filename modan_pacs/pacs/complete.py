"""Complete a PACS index from the headers of the files a pull brought in.

A C-FIND answer holds what the archive chose to return: many archives return key attributes
only (dcmqrscp: no BodyPartExamined, SeriesDescription, ProtocolName, SOPClassUID), so labels
built from it can lack anatomy, or differ from a folder index of the same files. Once files are
in a STORE, their headers are the ground truth: :func:`complete_labels` reads each pulled file's
header with the folder index's reader and replaces the header attributes of its index row, then
relabels the whole index with its own vocabulary. Rows whose file is not in the STORE keep the
C-FIND values. UIDs, the PatientID hash (already salted from the C-FIND answer) and ``location``
are kept, so the index still points at the PACS.

After a complete pull, the labels of the completed rows equal those of a folder index of the
STORE (tested against Orthanc and dcmqrscp).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modan_pacs.errors import InputError
from modan_pacs.ingest.headers import RAW_COLUMNS

# header attributes taken from the file: every index column but identifiers and where it lives
FILE_COLUMNS = tuple(
    c
    for c in RAW_COLUMNS
    if c
    not in {
        "sop_instance_uid",
        "series_instance_uid",
        "study_instance_uid",
        "patient_hash",
        "path",
        "location",
        "size",
        "mtime",
    }
)


@dataclass
class LabelCompletion:
    """What :func:`complete_labels` did: rows completed from files, rows whose labels changed,
    unreadable files, and rows moved to the errors because their file holds no pixel data."""

    rows: int
    completed: int
    relabelled: int
    unreadable: int
    no_pixel_data: int


def complete_labels(index_dir: str | Path, store_dir: str | Path) -> LabelCompletion:
    """Replace the header attributes of index rows by those of their pulled files, then relabel.

    Args:
        index_dir: a PACS index folder (``modan-pacs index --pacs``); rewritten in place.
        store_dir: the STORE a pull wrote (its ``pull_log.jsonl`` maps SOP Instance UIDs to files).

    A pulled file without pixel data moves its row to ``errors.parquet`` as ``no_pixel_data``,
    as a folder index files it (the C-FIND answers could not show it).

    Raises:
        InputError: the index or the store is missing.
    """
    import pandas as pd

    from modan_pacs.ingest import load_index, read_header, write_index
    from modan_pacs.pacs.store import Store

    tables = load_index(index_dir)
    if not Path(store_dir).is_dir():
        raise InputError(f"--out {store_dir}: no STORE there (pull first)")
    files = Store.existing(store_dir).arrived_paths()
    frame = tables.frame.copy()
    before = frame.set_index("sop_instance_uid")[["modality_label", "anatomy_label"]].astype(object).fillna("-")
    completed = unreadable = 0
    no_pixels: list[int] = []
    for position, uid in enumerate(frame["sop_instance_uid"]):
        path = files.get(str(uid))
        if path is None:
            continue
        record = read_header(str(path), b"")  # salt unused: the row keeps its C-FIND PatientID hash
        if record.get("error") == "no_pixel_data":  # read, but an error record keeps no header values: the row goes
            no_pixels.append(position)
            completed += 1
            continue
        if record.get("error") or record.get("sop_instance_uid") != str(uid):  # header not read
            unreadable += 1
            continue
        for column in FILE_COLUMNS:
            frame.iat[position, frame.columns.get_loc(column)] = record.get(column)
        completed += 1
    dropped = frame.iloc[no_pixels]
    errors = (
        pd.concat(
            [
                tables.errors,
                pd.DataFrame(
                    {
                        "path": dropped["location"].astype(object),
                        "reason": "no_pixel_data",
                        "detail": "the pulled file holds no pixel data",
                    }
                ),
            ],
            ignore_index=True,
        )
        if no_pixels
        else tables.errors
    )
    frame = frame.drop(index=frame.index[no_pixels])
    written = write_index(frame, index_dir, tables.vocabulary, errors=errors)
    after = written.frame.set_index("sop_instance_uid")[["modality_label", "anatomy_label"]].astype(object).fillna("-")
    common = before.index.intersection(after.index)
    relabelled = int((before.loc[common] != after.loc[common]).any(axis=1).sum())
    return LabelCompletion(
        rows=len(written.frame),
        completed=completed,
        relabelled=relabelled,
        unreadable=unreadable,
        no_pixel_data=len(no_pixels),
    )
