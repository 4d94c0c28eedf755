"""Write and read an index folder (the contract in docs/ARCHITECTURE.md, "index").

``write_index`` is the one place that labels raw header records and writes every table; the folder
walker (:func:`modan_pacs.ingest.build_index`) and the live-PACS C-FIND path both call it.
Every file is written to a temporary name and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from modan_pacs.errors import InputError
from modan_pacs.fileio import atomic_write, is_missing
from modan_pacs.ingest.headers import RAW_COLUMNS
from modan_pacs.labels import Vocabulary, label_frame

LABEL_COLUMNS = ["modality_label", "anatomy_label", "anatomy_source"]
INDEX_COLUMNS = [*RAW_COLUMNS, *LABEL_COLUMNS]
ERROR_COLUMNS = ["path", "reason", "detail"]
INDEX_FILES = (
    "index.parquet",
    "labels.npy",
    "vocabulary.yaml",
    "errors.parquet",
    "series.parquet",
    "label_summary.csv",
    "unmapped.csv",
)
DROPPED_FILE = "dropped.parquet"  # rows left out by unknown_anatomy: drop (kept so relabel can restore them)
_INDEX_SCHEMA = pa.schema([*RAW_COLUMNS.items(), *[(c, pa.string()) for c in LABEL_COLUMNS]])


@dataclass
class IndexTables:
    """An index folder in memory: ``frame`` row i <-> ``labels`` row i; columns = ``vocabulary.label_names``."""

    frame: pd.DataFrame
    labels: np.ndarray
    vocabulary: Vocabulary
    errors: pd.DataFrame
    series: pd.DataFrame


def _write_parquet(frame: pd.DataFrame, path: Path, schema: pa.Schema | None = None) -> None:
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def _write_npy(array: np.ndarray, path: Path) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)

    atomic_write(path, write)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def _normalise_raw(frame: pd.DataFrame) -> pd.DataFrame:
    """The raw columns in contract order and types; refuses unknown columns (PHI guard)."""
    unknown = [c for c in frame.columns if c not in RAW_COLUMNS and c not in LABEL_COLUMNS]
    if unknown:
        raise InputError(f"write_index got columns {unknown} that are not index fields; allowed: {list(RAW_COLUMNS)}")
    if "sop_instance_uid" not in frame.columns:
        raise InputError("write_index needs a sop_instance_uid column")
    n = len(frame)
    columns = {}
    for column, dtype in RAW_COLUMNS.items():
        if column not in frame.columns:
            values = pd.Series([None] * n, dtype=object)
            columns[column] = (
                pd.array([None] * n, dtype="Int32" if dtype == pa.int32() else "Int64")
                if pa.types.is_integer(dtype)
                else pd.array([None] * n, dtype="Float64")
                if pa.types.is_floating(dtype)
                else values
            )
            continue
        series = frame[column]
        if pa.types.is_integer(dtype):
            columns[column] = _integer_column(series, "Int32" if dtype == pa.int32() else "Int64")
        elif pa.types.is_floating(dtype):
            columns[column] = _float_column(series)
        else:
            columns[column] = _text_column(series)
    out = pd.DataFrame(columns, index=range(n))
    missing_uid = out["sop_instance_uid"].isna()
    if missing_uid.any():
        raise InputError(
            f"write_index: {int(missing_uid.sum())} rows have no sop_instance_uid "
            f"(first row {int(missing_uid.idxmax())})"
        )
    return out


def _integer_column(series: pd.Series, dtype: str) -> pd.array:
    """Nullable integers; numeric columns (Parquet parts) in one conversion, anything else value by value."""
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        try:
            return pd.array(
                series.to_numpy(dtype="float64", na_value=np.nan) if series.dtype.kind == "f" else series, dtype=dtype
            )
        except (TypeError, ValueError):  # e.g. a non-whole float, which int() truncates below
            series = series.astype(object)
    return pd.array([None if is_missing(v) else int(v) for v in series.to_numpy(dtype=object)], dtype=dtype)


def _float_column(series: pd.Series) -> pd.array:
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        return pd.array(series.to_numpy(dtype="float64", na_value=np.nan), dtype="Float64")
    return pd.array([None if is_missing(v) else float(v) for v in series.to_numpy(dtype=object)], dtype="Float64")


def _text_column(series: pd.Series) -> pd.Series:
    """Stripped strings as an object column, ``None`` for missing or blank values.

    String-typed columns (what Parquet parts give with pandas' string dtype) are stripped in one
    vectorised call; object columns, which may hold numbers or other types, value by value.
    """
    if isinstance(series.dtype, pd.StringDtype):
        stripped = series.str.strip()
        stripped = stripped.where(stripped != "")
        return pd.Series(stripped.to_numpy(dtype=object, na_value=None), dtype=object)
    return pd.Series(_clean_text(series.to_numpy(dtype=object)), dtype=object)


def _clean_text(values) -> list:
    """Stripped strings; None for missing or blank values (one pass, the common ``str`` case first)."""
    out: list = []
    append = out.append
    for v in values:
        if type(v) is str:
            v = v.strip()
            append(v or None)
        elif is_missing(v):
            append(None)
        else:
            v = str(v).strip()
            append(v or None)
    return out


def _series_table(frame: pd.DataFrame) -> pd.DataFrame:
    columns = [
        "series_instance_uid",
        "study_instance_uid",
        "patient_hash",
        "modality",
        "body_part_examined",
        "series_description",
        "modality_label",
        "anatomy_label",
        "anatomy_source",
        "n_instances",
        "n_frames",
    ]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    work = frame.assign(
        series_instance_uid=frame["series_instance_uid"].fillna("(no series uid)"),
        _frames=frame["number_of_frames"].fillna(1).astype("int64"),
    )
    grouped = work.groupby("series_instance_uid", sort=True, dropna=False)
    first = grouped[columns[1:9]].first()
    out = first.assign(n_instances=grouped.size(), n_frames=grouped["_frames"].sum()).reset_index()
    return out[columns]


def _label_summary(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame(columns=["modality_label", "anatomy_label", "n_instances", "n_series"])
    work = frame.assign(
        modality_label=frame["modality_label"].fillna("unknown"),
        anatomy_label=frame["anatomy_label"].fillna("unknown"),
    )
    grouped = work.groupby(["modality_label", "anatomy_label"], sort=True)
    return pd.DataFrame(
        {"n_instances": grouped.size(), "n_series": grouped["series_instance_uid"].nunique()}
    ).reset_index()


def _unmapped(frame: pd.DataFrame) -> pd.DataFrame:
    """Raw values that did not map: modality codes, body parts, region codes, and the descriptions
    of rows whose anatomy stayed unknown (what a user would add to the vocabulary)."""
    parts = []
    no_mod = frame[frame["modality_label"].isna() & frame["modality"].notna()]
    parts.append(pd.DataFrame({"field": "modality", "raw_value": no_mod["modality"]}))
    not_body = ~frame["anatomy_source"].isin(["body_part", "refined", "conflict"])  # these read a mapped body part
    bp = frame[not_body & frame["body_part_examined"].notna()]
    parts.append(pd.DataFrame({"field": "body_part_examined", "raw_value": bp["body_part_examined"]}))
    undecided = frame["anatomy_source"].isin(["description", "unknown"])
    region = frame[undecided & (frame["anatomic_region_code"].notna() | frame["anatomic_region_meaning"].notna())]
    parts.append(
        pd.DataFrame(
            {
                "field": "anatomic_region",
                "raw_value": region["anatomic_region_code"].fillna("")
                + " "
                + region["anatomic_region_meaning"].fillna(""),
            }
        )
    )
    unknown = frame[frame["anatomy_source"] == "unknown"]
    for column in ("series_description", "protocol_name", "study_description"):
        vals = unknown[column].dropna()
        parts.append(pd.DataFrame({"field": column, "raw_value": vals}))
    allv = pd.concat(parts, ignore_index=True)
    if allv.empty:
        return pd.DataFrame(columns=["field", "raw_value", "count"])
    allv["raw_value"] = allv["raw_value"].astype(str).str.strip()
    counts = allv.groupby(["field", "raw_value"], sort=False).size().rename("count").reset_index()
    return counts.sort_values(
        ["count", "field", "raw_value"], ascending=[False, True, True], kind="stable"
    ).reset_index(drop=True)


def _errors_frame(errors: pd.DataFrame | None) -> pd.DataFrame:
    if errors is None or len(errors) == 0:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in ERROR_COLUMNS})
    missing = [c for c in ("path", "reason") if c not in errors.columns]
    if missing:
        raise InputError(f"errors frame lacks columns {missing} (has {list(errors.columns)})")
    out = pd.DataFrame(
        {
            "path": errors["path"].astype(object),
            "reason": errors["reason"].astype(object),
            "detail": errors["detail"].astype(object) if "detail" in errors.columns else None,
        }
    )
    return out.reset_index(drop=True)


def write_index(
    frame: pd.DataFrame,
    out_dir: str | Path,
    vocabulary: Vocabulary,
    errors: pd.DataFrame | None = None,
) -> IndexTables:
    """Label raw header records and write every table of an index folder.

    Args:
        frame: one row per image instance with raw header columns named as in
            :data:`modan_pacs.ingest.headers.RAW_COLUMNS` (``sop_instance_uid`` required; absent
            columns are null; existing label columns are recomputed). Identifying values must
            already be removed: PatientID only as ``patient_hash``. Any other column is refused.
            Rows are written in the given order. For a live PACS pass ``path=None`` and
            ``location="pacs://AET@host:port/study/series/sop"``.
        out_dir: index folder (created).
        vocabulary: labels and label order.
        errors: optional ``path, reason[, detail]`` rows (files or queries that failed).

    Returns:
        The written :class:`IndexTables`. Rows sharing a ``sop_instance_uid`` keep the first and
        add ``duplicate_sop_instance`` rows to the errors; with ``unknown_anatomy: drop`` rows
        without anatomy go to ``dropped.parquet`` instead of the index.

    Raises:
        InputError: unknown columns, or rows without ``sop_instance_uid``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw = _normalise_raw(frame)
    err = _errors_frame(errors)

    dup = raw["sop_instance_uid"].duplicated(keep="first")
    if dup.any():
        first_of = raw.loc[~dup].set_index("sop_instance_uid")
        first_where = first_of["path"].fillna(first_of["location"]).to_dict()
        dups = raw.loc[dup]
        err = pd.concat(
            [
                err,
                pd.DataFrame(
                    {
                        "path": dups["path"].fillna(dups["location"]).to_numpy(dtype=object),
                        "reason": "duplicate_sop_instance",
                        "detail": [f"same SOPInstanceUID as {first_where.get(u)}" for u in dups["sop_instance_uid"]],
                    }
                ),
            ],
            ignore_index=True,
        )
        raw = raw.loc[~dup].reset_index(drop=True)

    labelled = label_frame(raw, vocabulary)
    extra = [c for c in labelled.columns if c not in INDEX_COLUMNS]  # extra-group labels
    if vocabulary.unknown_anatomy == "drop":
        keep = labelled["anatomy_label"].notna()
        dropped = labelled.loc[~keep, list(RAW_COLUMNS)]
        labelled = labelled.loc[keep].reset_index(drop=True)
    else:
        dropped = labelled.iloc[0:0][list(RAW_COLUMNS)]
    labelled = labelled[INDEX_COLUMNS + extra]
    labels = vocabulary.encode_frame(labelled)

    schema = pa.schema([*_INDEX_SCHEMA, *[(c, pa.string()) for c in extra]])
    series = _series_table(labelled)
    _write_npy(labels, out / "labels.npy")
    _write_parquet(labelled, out / "index.parquet", schema)
    atomic_write(out / "vocabulary.yaml", lambda tmp: vocabulary.save(tmp))
    _write_parquet(err, out / "errors.parquet", pa.schema([(c, pa.string()) for c in ERROR_COLUMNS]))
    _write_parquet(series, out / "series.parquet")
    _write_csv(_label_summary(labelled), out / "label_summary.csv")
    _write_csv(_unmapped(labelled), out / "unmapped.csv")
    dropped_path = out / DROPPED_FILE
    if len(dropped):
        _write_parquet(dropped.reset_index(drop=True), dropped_path, pa.schema(list(RAW_COLUMNS.items())))
    elif dropped_path.exists():
        dropped_path.unlink()
    return IndexTables(frame=labelled, labels=labels, vocabulary=vocabulary, errors=err, series=series)


def load_index(index_dir: str | Path) -> IndexTables:
    """Read an index folder written by :func:`write_index` (plain pandas / numpy underneath).

    Raises:
        InputError: the folder or one of its files is missing, or labels and rows disagree.
    """
    d = Path(index_dir)
    if not d.is_dir():
        raise InputError(f"index folder {d} does not exist")
    for name in ("index.parquet", "labels.npy", "vocabulary.yaml", "errors.parquet", "series.parquet"):
        if not (d / name).is_file():
            raise InputError(f"{d} is not a modan-pacs index: {name} is missing (run modan-pacs index)")
    frame = pd.read_parquet(d / "index.parquet")
    labels = np.load(d / "labels.npy")
    vocabulary = Vocabulary.load(d / "vocabulary.yaml")
    if labels.shape != (len(frame), len(vocabulary.label_names)):
        raise InputError(
            f"{d / 'labels.npy'} has shape {labels.shape}, expected ({len(frame)}, {len(vocabulary.label_names)}) "
            "from index.parquet and vocabulary.yaml"
        )
    return IndexTables(
        frame=frame,
        labels=labels,
        vocabulary=vocabulary,
        errors=pd.read_parquet(d / "errors.parquet"),
        series=pd.read_parquet(d / "series.parquet"),
    )


def relabel(index_dir: str | Path, vocabulary: Vocabulary | str | Path | None) -> IndexTables:
    """Re-label an index with another vocabulary from its stored raw fields (no DICOM file is read).

    Rows an earlier ``unknown_anatomy: drop`` left out (``dropped.parquet``) are labelled again too.
    """
    d = Path(index_dir)
    old = load_index(d)
    vocab = vocabulary if isinstance(vocabulary, Vocabulary) else Vocabulary.load(vocabulary)
    raw = old.frame[list(RAW_COLUMNS)]
    if (d / DROPPED_FILE).is_file():
        raw = pd.concat([raw, pd.read_parquet(d / DROPPED_FILE)], ignore_index=True)
        order = raw["path"].fillna(raw["location"]).fillna("")
        raw = raw.assign(_o=order).sort_values(["_o", "sop_instance_uid"], kind="stable").drop(columns="_o")
    return write_index(raw.reset_index(drop=True), d, vocab, old.errors)
